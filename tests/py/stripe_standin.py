#!/usr/bin/env python3
"""A stand-in for the few Stripe API endpoints that localstripe lacks.

Standard library only. Written from Stripe's public API reference (request
parameters, object shapes, error format, idempotent requests), not from any
client code:

  POST /v1/customers                    create a customer (name, email, description,
                                        phone, metadata[...], invoice_settings[...])
  GET  /v1/customers/{id}               retrieve it (404 resource_missing if unknown)
  POST /v1/customers/{id}               update name/email/description/phone/metadata/
                                        invoice_settings
  GET  /v1/customers/{id}/payment_methods
  GET  /v1/payment_methods?customer=&type=
                                        always an empty list (this stand-in keeps no
                                        cards; use localstripe for card payments)
  POST /v1/checkout/sessions            create a checkout.session (hosted, no payment ever
                                        happens: it stays open/unpaid)
  GET  /v1/checkout/sessions/{id}
  POST /v1/billing_portal/sessions      create a billing_portal.session
  POST /v1/billing/meter_events         create a billing.meter_event; an identifier seen
                                        before is refused (see DUPLICATE_METER_EVENT_CODE)

Stripe behaviour that is reproduced:
  * authentication: `Authorization: Bearer sk_...` (or HTTP Basic with the key as
    the user name, as `curl -u sk_...:` sends); otherwise 401 with Stripe's error JSON;
  * bodies are application/x-www-form-urlencoded with bracket keys
    (`line_items[0][price_data][unit_amount]=500`, `metadata[k]=v`);
  * unknown parameters are refused (400, code `parameter_unknown`), missing required
    ones too (400, code `parameter_missing`), unknown customers (404 resource_missing);
  * errors are `{"error": {"type": ..., "code": ..., "message": ..., "param": ...}}`;
  * `Idempotency-Key` on POST: the same key with the same parameters replays the first
    answer (with header `Idempotent-Replayed: true`); the same key with other parameters
    or on another endpoint gives 400 `idempotency_error`; the same key while the first
    request is still running gives 409 `idempotency_error`. As on Stripe, an answer is
    only stored once the endpoint ran (not for 401/400 validation errors or outages).

Helpers for tests (no authentication):
  GET  /_standin/requests   every request received so far, oldest first:
                            {method, path, query, form (flat pairs as a dict),
                             form_pairs, params (nested), idempotency_key,
                             authorized, status, time}
  POST /_standin/outage     body {"seconds": N} (JSON or form): answer every /v1 request
                            with 503 api_error for N seconds (0 ends an outage)
  POST /_standin/reset      forget all objects, requests, idempotency keys and outages

Usage:  python3 stripe_standin.py --port P [--host 127.0.0.1] [--verbose]
With --port 0 a free port is picked. Once listening it prints `{"url": "http://host:port/"}`
on stdout (flushed).

Assumption: Stripe's reference documents that meter event identifiers are unique
within a rolling 24 h window but does not document the error answered for a
duplicate; the code `duplicate_meter_event` used here is an assumption.
"""

import argparse
import base64
import json
import re
import secrets
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

DUPLICATE_METER_EVENT_CODE = "duplicate_meter_event"  # assumed, see module doc
STRIPE_VERSION = "2025-01-27.acacia"
_ALNUM = string.ascii_letters + string.digits


def new_id(prefix, length=24):
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


class StripeError(Exception):
    """An error answer in Stripe's format."""

    def __init__(self, status, message, type_="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if code is not None and code != DUPLICATE_METER_EVENT_CODE:
            self.body["error"]["doc_url"] = "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
        if param is not None:
            self.body["error"]["param"] = param


def unknown_param(name):
    return StripeError(400, "Received unknown parameter: %s" % name, code="parameter_unknown", param=name)


def missing_param(name):
    return StripeError(400, "Missing required param: %s." % name, code="parameter_missing", param=name)


def no_such(kind, ident, param="id"):
    return StripeError(404, "No such %s: '%s'" % (kind, ident), code="resource_missing", param=param)


# ---------------------------------------------------------------- form decoding

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(pairs):
    """Turn Stripe's bracket-keyed pairs into nested dicts/lists.

    `a[b][0][c]=1` -> {"a": {"b": [{"c": "1"}]}}; `a[]=x` appends to a list.
    """
    root = {}
    for key, value in pairs:
        m = _KEY_RE.match(key)
        if not m:
            raise StripeError(400, "Invalid parameter name: %s" % key, code="parameter_invalid_string", param=key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # `a[]`
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(node):
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


# ---------------------------------------------------------------- value checks

def check_known(params, allowed):
    for name in params:
        if name not in allowed and name != "expand":
            raise unknown_param(name)


def as_int(value, param):
    try:
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
    except ValueError:
        pass
    raise StripeError(400, "Invalid integer: %s" % (value,), code="parameter_invalid_integer", param=param)


def as_str(value, param):
    if isinstance(value, str):
        return value
    raise StripeError(400, "Invalid string: %s" % (value,), code="parameter_invalid_string", param=param)


def as_metadata(value, param="metadata"):
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeError(400, "Invalid object", code="parameter_invalid_empty", param=param)
    out = {}
    for k, v in value.items():
        if not isinstance(v, str):
            raise StripeError(400, "Invalid metadata value for %s" % k, param="%s[%s]" % (param, k))
        if v != "":  # an empty value unsets the key
            out[k] = v
    return out


def as_bool(value, param):
    if value in ("true", "false"):
        return value == "true"
    raise StripeError(400, "Invalid boolean: %s" % (value,), code="parameter_invalid_boolean", param=param)


# ---------------------------------------------------------------- state

class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.customers = {}
        self.sessions = {}
        self.portal_sessions = {}
        self.meter_events = {}
        self.requests = []
        self.idempotency = {}  # key -> {"fingerprint", "status", "body"}
        self.in_flight = set()
        self.outage_until = 0.0


STATE = State()


# ---------------------------------------------------------------- endpoints

def create_customer(params):
    check_known(params, {"name", "email", "description", "phone", "metadata", "invoice_settings", "address"})
    now = int(time.time())
    cus = {
        "id": new_id("cus_", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    _apply_customer_params(cus, params)
    with STATE.lock:
        STATE.customers[cus["id"]] = cus
    return 200, cus


def _apply_customer_params(cus, params):
    for field in ("name", "email", "description", "phone"):
        if field in params:
            cus[field] = as_str(params[field], field) or None
    if "address" in params:
        cus["address"] = params["address"] if isinstance(params["address"], dict) else None
    if "metadata" in params:
        if params["metadata"] == "":
            cus["metadata"] = {}
        else:
            merged = dict(cus["metadata"])
            for k, v in (params["metadata"] or {}).items():
                if v == "":
                    merged.pop(k, None)
                else:
                    merged[k] = as_str(v, "metadata[%s]" % k)
            cus["metadata"] = merged
    if "invoice_settings" in params:
        settings = params["invoice_settings"]
        if not isinstance(settings, dict):
            raise StripeError(400, "Invalid object", param="invoice_settings")
        for k, v in settings.items():
            if k not in cus["invoice_settings"]:
                raise unknown_param("invoice_settings[%s]" % k)
            cus["invoice_settings"][k] = v or None


def get_customer(cus_id):
    with STATE.lock:
        cus = STATE.customers.get(cus_id)
    if cus is None:
        raise no_such("customer", cus_id)
    return 200, cus


def update_customer(cus_id, params):
    check_known(params, {"name", "email", "description", "phone", "metadata", "invoice_settings", "address"})
    with STATE.lock:
        cus = STATE.customers.get(cus_id)
        if cus is None:
            raise no_such("customer", cus_id)
        _apply_customer_params(cus, params)
        return 200, cus


def _require_customer(cus_id, param="customer"):
    with STATE.lock:
        if cus_id not in STATE.customers:
            raise no_such("customer", cus_id, param=param)


def list_payment_methods(path, query, customer=None):
    check_known(query, {"customer", "type", "limit", "starting_after", "ending_before", "allow_redisplay"})
    if customer is None:
        customer = query.get("customer")
    if customer is not None:
        _require_customer(customer, param="customer")
    return 200, {"object": "list", "data": [], "has_more": False, "url": path}


_SESSION_PARAMS = {
    "mode", "line_items", "customer", "customer_email", "client_reference_id",
    "success_url", "cancel_url", "return_url", "metadata", "payment_intent_data",
    "payment_method_types", "currency", "locale", "expires_at", "ui_mode",
    "allow_promotion_codes", "billing_address_collection", "customer_creation",
    "submit_type", "setup_intent_data", "subscription_data", "saved_payment_method_options",
}

_LINE_ITEM_PARAMS = {"price", "price_data", "quantity", "adjustable_quantity", "tax_rates", "dynamic_tax_rates", "metadata"}
_PRICE_DATA_PARAMS = {"currency", "product", "product_data", "unit_amount", "unit_amount_decimal", "recurring", "tax_behavior"}
_PRODUCT_DATA_PARAMS = {"name", "description", "images", "metadata", "tax_code", "unit_label"}
_PI_DATA_PARAMS = {
    "metadata", "description", "capture_method", "setup_future_usage", "receipt_email",
    "statement_descriptor", "statement_descriptor_suffix", "on_behalf_of",
    "application_fee_amount", "transfer_data", "transfer_group", "shipping",
}


def _check_nested(value, allowed, prefix):
    if not isinstance(value, dict):
        raise StripeError(400, "Invalid object", param=prefix)
    for k in value:
        if k not in allowed:
            raise unknown_param("%s[%s]" % (prefix, k))


def create_checkout_session(params):
    check_known(params, _SESSION_PARAMS)
    mode = params.get("mode")
    if mode is None:
        raise missing_param("mode")
    if mode not in ("payment", "setup", "subscription"):
        raise StripeError(400, "Invalid mode: must be one of payment, setup, or subscription",
                          code="parameter_invalid_string", param="mode")
    ui_mode = params.get("ui_mode", "hosted")
    customer = params.get("customer")
    if customer is not None:
        _require_customer(as_str(customer, "customer"))
    metadata = as_metadata(params.get("metadata"))
    if "payment_intent_data" in params:
        if mode != "payment":
            raise StripeError(400, "You can not pass `payment_intent_data` in `%s` mode." % mode,
                              param="payment_intent_data")
        _check_nested(params["payment_intent_data"], _PI_DATA_PARAMS, "payment_intent_data")
        as_metadata(params["payment_intent_data"].get("metadata"), "payment_intent_data[metadata]")

    line_items = params.get("line_items")
    if mode in ("payment", "subscription") and not line_items:
        raise missing_param("line_items")
    if line_items is not None and not isinstance(line_items, list):
        raise StripeError(400, "Invalid array", code="parameter_invalid_empty", param="line_items")
    currency = params.get("currency")
    subtotal = 0
    for i, item in enumerate(line_items or []):
        prefix = "line_items[%d]" % i
        _check_nested(item, _LINE_ITEM_PARAMS, prefix)
        quantity = as_int(item.get("quantity", "1"), prefix + "[quantity]")
        if quantity < 1:
            raise StripeError(400, "Quantity must be at least 1", param=prefix + "[quantity]")
        if "price" in item:
            raise StripeError(400, "No such price: '%s'" % item["price"], code="resource_missing",
                              param=prefix + "[price]")
        price_data = item.get("price_data")
        if price_data is None:
            raise StripeError(400, "You must specify either `price` or `price_data` in each line item.",
                              param=prefix)
        _check_nested(price_data, _PRICE_DATA_PARAMS, prefix + "[price_data]")
        if "currency" not in price_data:
            raise missing_param(prefix + "[price_data][currency]")
        item_currency = as_str(price_data["currency"], prefix + "[price_data][currency]").lower()
        if currency is None:
            currency = item_currency
        elif currency.lower() != item_currency:
            raise StripeError(400, "All line items must use the same currency.",
                              param=prefix + "[price_data][currency]")
        if "product" not in price_data:
            product_data = price_data.get("product_data")
            if product_data is None:
                raise missing_param(prefix + "[price_data][product_data]")
            _check_nested(product_data, _PRODUCT_DATA_PARAMS, prefix + "[price_data][product_data]")
            if not product_data.get("name"):
                raise missing_param(prefix + "[price_data][product_data][name]")
        if "unit_amount" in price_data:
            unit = as_int(price_data["unit_amount"], prefix + "[price_data][unit_amount]")
        elif "unit_amount_decimal" in price_data:
            unit = round(float(price_data["unit_amount_decimal"]))
        else:
            raise missing_param(prefix + "[price_data][unit_amount]")
        if unit < 0:
            raise StripeError(400, "This value must be greater than or equal to 0.",
                              code="parameter_invalid_integer", param=prefix + "[price_data][unit_amount]")
        subtotal += unit * quantity

    if ui_mode == "hosted" and mode != "setup" and "return_url" in params:
        raise StripeError(400, "You can only pass `return_url` when `ui_mode` is `embedded` or `custom`.",
                          param="return_url")

    now = int(time.time())
    sid = "cs_test_" + "".join(secrets.choice(_ALNUM) for _ in range(58))
    session = {
        "id": sid,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": subtotal if line_items else None,
        "amount_total": subtotal if line_items else None,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": params.get("billing_address_collection"),
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "created": now,
        "consent": None,
        "consent_collection": None,
        "currency": currency.lower() if currency else None,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": customer,
        "customer_creation": None if customer else "if_required",
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "expires_at": now + 24 * 3600,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": params.get("locale"),
        "metadata": metadata,
        "mode": mode,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required" if mode == "subscription" else None,
        "payment_method_options": {},
        "payment_method_types": params.get("payment_method_types") or ["card"],
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "return_url": params.get("return_url"),
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": params.get("submit_type"),
        "subscription": None,
        "success_url": params.get("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
        if line_items else None,
        "ui_mode": ui_mode,
        "url": "https://checkout.stripe.com/c/pay/" + sid if ui_mode == "hosted" else None,
    }
    with STATE.lock:
        STATE.sessions[sid] = session
    return 200, session


def get_checkout_session(sid):
    with STATE.lock:
        session = STATE.sessions.get(sid)
    if session is None:
        raise no_such("checkout.session", sid)
    return 200, session


def create_portal_session(params):
    check_known(params, {"customer", "return_url", "configuration", "locale", "on_behalf_of", "flow_data"})
    if "customer" not in params:
        raise missing_param("customer")
    customer = as_str(params["customer"], "customer")
    _require_customer(customer)
    return_url = params.get("return_url")
    session = {
        "id": new_id("bps_"),
        "object": "billing_portal.session",
        "configuration": params.get("configuration") or "bpc_" + "".join(secrets.choice(_ALNUM) for _ in range(24)),
        "created": int(time.time()),
        "customer": customer,
        "flow": None,
        "livemode": False,
        "locale": params.get("locale"),
        "on_behalf_of": params.get("on_behalf_of"),
        "return_url": return_url,
        "url": "https://billing.stripe.com/p/session/test_" + "".join(secrets.choice(_ALNUM) for _ in range(40)),
    }
    with STATE.lock:
        STATE.portal_sessions[session["id"]] = session
    return 200, session


def create_meter_event(params):
    check_known(params, {"event_name", "payload", "identifier", "timestamp"})
    if "event_name" not in params:
        raise missing_param("event_name")
    event_name = as_str(params["event_name"], "event_name")
    payload = params.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise missing_param("payload")
    for k, v in payload.items():
        as_str(v, "payload[%s]" % k)
    if "stripe_customer_id" not in payload:
        raise missing_param("payload[stripe_customer_id]")
    if "value" not in payload:
        raise missing_param("payload[value]")
    now = int(time.time())
    timestamp = as_int(params["timestamp"], "timestamp") if "timestamp" in params else now
    if timestamp < now - 35 * 24 * 3600 or timestamp > now + 5 * 60:
        raise StripeError(400, "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
                          param="timestamp")
    identifier = as_str(params["identifier"], "identifier") if "identifier" in params else new_id("", 24)
    event = {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": payload,
        "timestamp": timestamp,
    }
    with STATE.lock:
        if identifier in STATE.meter_events:
            raise StripeError(400, "An event already exists with identifier %s." % identifier,
                              code=DUPLICATE_METER_EVENT_CODE, param="identifier")
        STATE.meter_events[identifier] = event
    return 200, event


ROUTES = [
    ("POST", re.compile(r"^/v1/customers$"), lambda m, p, q, path: create_customer(p)),
    ("GET", re.compile(r"^/v1/customers/([^/]+)$"), lambda m, p, q, path: get_customer(m.group(1))),
    ("POST", re.compile(r"^/v1/customers/([^/]+)$"), lambda m, p, q, path: update_customer(m.group(1), p)),
    ("GET", re.compile(r"^/v1/customers/([^/]+)/payment_methods$"),
     lambda m, p, q, path: list_payment_methods(path, q, customer=m.group(1))),
    ("GET", re.compile(r"^/v1/payment_methods$"), lambda m, p, q, path: list_payment_methods(path, q)),
    ("POST", re.compile(r"^/v1/checkout/sessions$"), lambda m, p, q, path: create_checkout_session(p)),
    ("GET", re.compile(r"^/v1/checkout/sessions/([^/]+)$"), lambda m, p, q, path: get_checkout_session(m.group(1))),
    ("POST", re.compile(r"^/v1/billing_portal/sessions$"), lambda m, p, q, path: create_portal_session(p)),
    ("POST", re.compile(r"^/v1/billing/meter_events$"), lambda m, p, q, path: create_meter_event(p)),
]


# ---------------------------------------------------------------- HTTP

def api_key_of(headers):
    """The API key sent, or None."""
    auth = headers.get("Authorization") or ""
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):].strip()
    if auth.startswith("Basic "):
        try:
            user = base64.b64decode(auth[len("Basic "):].strip()).decode()
        except Exception:
            return None
        return user.split(":", 1)[0]
    return None


def masked(key):
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)


class Handler(BaseHTTPRequestHandler):
    server_version = "stripe-standin/1.0"
    verbose = False

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if self.verbose:
            sys.stderr.write("stripe-standin: " + (format % args) + "\n")

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _send(self, status, body, extra_headers=None):
        data = json.dumps(body, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", new_id("req_", 14))
        self.send_header("Stripe-Version", self.headers.get("Stripe-Version") or STRIPE_VERSION)
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        url = urlsplit(self.path)
        path = url.path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""

        if path.startswith("/_standin/"):
            return self._standin(path, raw)

        query_pairs = parse_qsl(url.query, keep_blank_values=True)
        form_pairs = parse_qsl(raw, keep_blank_values=True) if self.command == "POST" else []
        idem_key = self.headers.get("Idempotency-Key")
        key = api_key_of(self.headers)
        authorized = bool(key) and (key.startswith("sk_") or key.startswith("rk_"))
        entry = {
            "method": self.command,
            "path": path,
            "query": dict(query_pairs),
            "form": dict(form_pairs),
            "form_pairs": form_pairs,
            "params": None,
            "idempotency_key": idem_key,
            "authorized": authorized,
            "status": None,
            "time": time.time(),
        }
        with STATE.lock:
            STATE.requests.append(entry)
            outage = time.time() < STATE.outage_until

        status, body, headers = self._dispatch(entry, query_pairs, form_pairs, idem_key, key, authorized, outage)
        entry["status"] = status
        self._send(status, body, headers)

    def _dispatch(self, entry, query_pairs, form_pairs, idem_key, key, authorized, outage):
        if outage:
            return 503, StripeError(503, "Stripe is temporarily unavailable (stand-in outage). Please retry.",
                                    type_="api_error").body, {"Stripe-Should-Retry": "true"}
        if not key:
            return 401, StripeError(401, "You did not provide an API key. You need to provide your API key in "
                                         "the Authorization header, using Bearer auth "
                                         "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').").body, None
        if not authorized:
            return 401, StripeError(401, "Invalid API Key provided: %s" % masked(key)).body, None
        try:
            query = parse_form(query_pairs)
            params = parse_form(form_pairs)
        except StripeError as e:
            return e.status, e.body, None
        entry["params"] = params if self.command == "POST" else query

        route = None
        for method, pattern, fn in ROUTES:
            m = pattern.match(entry["path"])
            if m and method == self.command:
                route = (m, fn)
                break
        if route is None:
            return 404, StripeError(404, "Unrecognized request URL (%s: %s). Please see https://stripe.com/docs "
                                         "or we can help at https://support.stripe.com/."
                                    % (self.command, entry["path"])).body, None

        use_idem = idem_key is not None and self.command == "POST"
        if use_idem:
            if idem_key == "" or len(idem_key) > 255:
                return 400, StripeError(400, "Idempotency keys must be 1 to 255 characters long.",
                                        type_="idempotency_error").body, None
            fingerprint = json.dumps([self.command, entry["path"], sorted(form_pairs)])
            with STATE.lock:
                stored = STATE.idempotency.get(idem_key)
                if stored is None and idem_key in STATE.in_flight:
                    return 409, StripeError(409, "There is currently another in-progress request using this "
                                                 "Idempotent Key (that probably means you submitted twice, and "
                                                 "the other request is still going through): %s. Please try "
                                                 "again later." % idem_key, type_="idempotency_error").body, None
                if stored is not None:
                    if stored["fingerprint"] != fingerprint:
                        if stored["endpoint"] != (self.command, entry["path"]):
                            msg = ("Keys for idempotent requests can only be used for the same endpoint they were "
                                   "first used for ('%s %s' vs '%s %s'). Try using a key other than '%s' if you "
                                   "meant to execute a different request."
                                   % (stored["endpoint"] + (self.command, entry["path"], idem_key)))
                        else:
                            msg = ("Keys for idempotent requests can only be used with the same parameters they "
                                   "were first used with. Try using a key other than '%s' if you meant to execute "
                                   "a different request." % idem_key)
                        return 400, StripeError(400, msg, type_="idempotency_error").body, None
                    return stored["status"], stored["body"], {"Idempotent-Replayed": "true",
                                                              "Original-Request": stored["request_id"]}
                STATE.in_flight.add(idem_key)

        try:
            m, fn = route
            try:
                status, body = fn(m, params, query, entry["path"])
                ran = True
            except StripeError as e:
                status, body = e.status, e.body
                # Stripe stores no result when the parameters failed validation.
                ran = e.status not in (400, 404) or e.body["error"].get("code") == DUPLICATE_METER_EVENT_CODE
            except Exception as e:  # a bug here: answer like Stripe's 500
                status, body, ran = 500, StripeError(500, "stand-in error: %r" % (e,), type_="api_error").body, False
            if use_idem and ran:
                with STATE.lock:
                    STATE.idempotency[idem_key] = {
                        "fingerprint": fingerprint,
                        "endpoint": (self.command, entry["path"]),
                        "status": status,
                        "body": body,
                        "request_id": new_id("req_", 14),
                    }
            return status, body, {"Idempotency-Key": idem_key} if use_idem else None
        finally:
            if use_idem:
                with STATE.lock:
                    STATE.in_flight.discard(idem_key)

    def _standin(self, path, raw):
        if path == "/_standin/requests" and self.command == "GET":
            with STATE.lock:
                data = json.loads(json.dumps(STATE.requests))
            return self._send(200, data)
        if path == "/_standin/outage" and self.command == "POST":
            try:
                body = json.loads(raw) if raw.strip().startswith("{") else dict(parse_qsl(raw))
                seconds = float(body.get("seconds", 0))
            except (ValueError, TypeError, AttributeError):
                return self._send(400, {"error": {"type": "invalid_request_error",
                                                  "message": 'expected {"seconds": N}'}})
            with STATE.lock:
                STATE.outage_until = time.time() + seconds if seconds > 0 else 0.0
                until = STATE.outage_until
            return self._send(200, {"outage_until": until})
        if path == "/_standin/reset" and self.command == "POST":
            with STATE.lock:
                STATE.reset()
            return self._send(200, {"reset": True})
        return self._send(404, {"error": {"type": "invalid_request_error", "message": "no such stand-in helper"}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=12112, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = parser.parse_args(argv)
    Handler.verbose = args.verbose
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"url": "http://%s:%d/" % (args.host, server.server_address[1])}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

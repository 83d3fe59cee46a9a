#!/usr/bin/env python3
"""A stand-in for BTCPay Server's Greenfield API (the part a merchant integration uses), written
from BTCPay's public API reference: standard library only.

  POST /api/v1/stores/{storeId}/invoices   create an invoice: `Authorization: token <api key>`,
                                           JSON {"amount": "<decimal string>", "currency",
                                           "metadata": {...}, "checkout": {"redirectURL"}};
                                           answers the invoice (`id`, `checkoutLink`, `status`
                                           "New", `amount`, `currency`, `metadata`, times)
  GET  /api/v1/stores/{storeId}/invoices/{invoiceId}
  GET  /_standin/requests                  every request received (method, path, body, auth)

Errors are Greenfield's shape: 401 {"code": "unauthenticated", "message"}, 404
{"code": "store-not-found" | "invoice-not-found", "message"}, 422 [{"path", "message"}].

    python3 btcpay_standin.py --port 0 --api-key KEY --store STORE
prints {"url": "http://127.0.0.1:<port>/"} once listening.
"""
import argparse
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
INVOICES = {}
REQUESTS = []
DECIMAL = re.compile(r"^\d{1,18}(\.\d{1,8})?$")


class Handler(BaseHTTPRequestHandler):
    api_key = ""
    store = ""
    base = ""

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self, body):
        with LOCK:
            REQUESTS.append({"method": self.command, "path": self.path, "body": body,
                             "authorization": self.headers.get("Authorization", "")})

    def authorized(self):
        if self.headers.get("Authorization", "") != "token " + self.api_key:
            self.answer(401, {"code": "unauthenticated", "message": "Authentication is required for accessing this endpoint"})
            return False
        return True

    def do_GET(self):
        if self.path == "/_standin/requests":
            with LOCK:
                return self.answer(200, list(REQUESTS))
        self.record(None)
        m = re.fullmatch(r"/api/v1/stores/([^/]+)/invoices/([^/]+)", self.path)
        if not m:
            return self.answer(404, {"code": "not-found", "message": "not found"})
        if not self.authorized():
            return
        with LOCK:
            invoice = INVOICES.get(m.group(2))
        if invoice is None or m.group(1) != self.store:
            return self.answer(404, {"code": "invoice-not-found", "message": "The invoice was not found"})
        self.answer(200, invoice)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.record(raw.decode("utf-8", "replace"))
            return self.answer(400, {"code": "invalid-json", "message": "invalid JSON"})
        self.record(body)
        m = re.fullmatch(r"/api/v1/stores/([^/]+)/invoices", self.path)
        if not m:
            return self.answer(404, {"code": "not-found", "message": "not found"})
        if not self.authorized():
            return
        if m.group(1) != self.store:
            return self.answer(404, {"code": "store-not-found", "message": "The store was not found"})
        errors = []
        amount = body.get("amount")
        if not isinstance(amount, str) or not DECIMAL.match(amount):
            errors.append({"path": "amount", "message": "amount should be a decimal string"})
        if not isinstance(body.get("currency"), str) or len(body["currency"]) < 3:
            errors.append({"path": "currency", "message": "currency is required"})
        if errors:
            return self.answer(422, errors)
        invoice_id = secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")
        now = int(time.time())
        invoice = {
            "id": invoice_id,
            "storeId": self.store,
            "amount": amount,
            "currency": body["currency"],
            "type": "Standard",
            "checkoutLink": "%si/%s" % (self.base, invoice_id),
            "status": "New",
            "additionalStatus": "None",
            "createdTime": now,
            "expirationTime": now + 900,
            "monitoringExpiration": now + 3600,
            "metadata": body.get("metadata") or {},
            "checkout": body.get("checkout") or {},
        }
        with LOCK:
            INVOICES[invoice_id] = invoice
        self.answer(200, invoice)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    Handler.api_key, Handler.store = args.api_key, args.store
    Handler.base = "http://127.0.0.1:%d/" % server.server_address[1]
    print(json.dumps({"url": Handler.base}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

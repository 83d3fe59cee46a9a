#!/usr/bin/env python3
"""A stand-in for the two Coinbase APIs a merchant integration calls, written from Coinbase's
public documentation, independently of taogate:

  POST /api/v1/checkouts   Coinbase Business: create a checkout. `Authorization: Bearer <JWT>`,
                           where the JWT is a CDP API key token — header {alg: EdDSA, kid, typ,
                           nonce}, claims {sub = kid, iss: "cdp", nbf, exp (at most 120 s after
                           nbf), uris: ["POST <host>/api/v1/checkouts"]} — verified here with the
                           key's Ed25519 public half (`cryptography`); `X-Idempotency-Key` replays
                           the first answer. Body {amount: "<decimal, max 2 places>", currency:
                           "USDC", network, description, successRedirectUrl, failRedirectUrl,
                           metadata}; answers 201 {id (24 hex), url, amount, currency, network,
                           status: "ACTIVE", metadata, …}. 401 {"errorType": "unauthorized"} else.
  POST /charges            legacy Coinbase Commerce: `X-CC-Api-Key`; body {name, description,
                           pricing_type: "fixed_price", local_price: {amount, currency}, metadata,
                           redirect_url, cancel_url}; answers 201 {"data": {id, code, hosted_url,
                           pricing, metadata, …}}.
  GET  /_standin/requests  every request received (method, path, body, headers of interest,
                           and the verified JWT claims)

    python3 coinbase_standin.py --port 0 --key-id KID --public-key <hex> --commerce-key KEY
prints {"url": "http://127.0.0.1:<port>/"} once listening.
"""
import argparse
import base64
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LOCK = threading.Lock()
REQUESTS = []
IDEMPOTENT = {}
DECIMAL = re.compile(r"^\d+(\.\d{1,2})?$")


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Handler(BaseHTTPRequestHandler):
    key_id = ""
    public_key = None
    commerce_key = ""
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

    def jwt_claims(self):
        """The verified claims of the bearer token, or None."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        try:
            head, claims, sig = auth[7:].split(".")
            header = json.loads(b64url(head))
            body = json.loads(b64url(claims))
            if header.get("alg") != "EdDSA" or header.get("kid") != self.key_id or not header.get("nonce"):
                return None
            self.public_key.verify(b64url(sig), (head + "." + claims).encode())
        except Exception:
            return None
        now = int(time.time())
        host = self.headers.get("Host", "")
        if body.get("iss") != "cdp" or body.get("sub") != self.key_id:
            return None
        if not (body["nbf"] - 5 <= now <= body["exp"]) or body["exp"] - body["nbf"] > 120:
            return None
        if "POST " + host + self.path not in body.get("uris", []):
            return None
        return body

    def do_GET(self):
        if self.path == "/_standin/requests":
            with LOCK:
                return self.answer(200, list(REQUESTS))
        self.answer(404, {"errorType": "not_found", "errorMessage": "not found"})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.answer(400, {"errorType": "invalid_request", "errorMessage": "invalid JSON"})
        if self.path == "/api/v1/checkouts":
            claims = self.jwt_claims()
            with LOCK:
                REQUESTS.append({"method": "POST", "path": self.path, "body": body, "claims": claims,
                                 "idempotency_key": self.headers.get("X-Idempotency-Key")})
            if claims is None:
                return self.answer(401, {"errorType": "unauthorized", "errorMessage": "invalid token"})
            if not DECIMAL.match(str(body.get("amount", ""))) or body.get("currency") != "USDC":
                return self.answer(400, {"errorType": "invalid_request", "errorMessage": "amount / currency"})
            key = self.headers.get("X-Idempotency-Key")
            with LOCK:
                if key and key in IDEMPOTENT:
                    return self.answer(201, IDEMPOTENT[key])
                cid = secrets.token_hex(12)
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                checkout = {"id": cid, "url": "https://payments.coinbase.com/payment-links/pl_" + cid,
                            "amount": body["amount"], "currency": "USDC", "network": body.get("network", "base"),
                            "address": "0x742d35Cc6634C0532925a3b844Bc454e4438f44e", "status": "ACTIVE",
                            "description": body.get("description", ""), "metadata": body.get("metadata", {}),
                            "successRedirectUrl": body.get("successRedirectUrl"),
                            "failRedirectUrl": body.get("failRedirectUrl"), "createdAt": now, "updatedAt": now}
                if key:
                    IDEMPOTENT[key] = checkout
            return self.answer(201, checkout)
        if self.path == "/charges":
            with LOCK:
                REQUESTS.append({"method": "POST", "path": self.path, "body": body,
                                 "api_key": self.headers.get("X-CC-Api-Key"),
                                 "version": self.headers.get("X-CC-Version")})
            if self.headers.get("X-CC-Api-Key") != self.commerce_key:
                return self.answer(401, {"error": {"type": "authorization_error", "message": "No such API key."}})
            price = body.get("local_price") or {}
            if body.get("pricing_type") != "fixed_price" or not DECIMAL.match(str(price.get("amount", ""))):
                return self.answer(400, {"error": {"type": "invalid_request", "message": "local_price"}})
            charge_id = "{}-{}-{}-{}-{}".format(secrets.token_hex(4), secrets.token_hex(2), secrets.token_hex(2),
                                                secrets.token_hex(2), secrets.token_hex(6))
            code = secrets.token_hex(4).upper()
            return self.answer(201, {"data": {"id": charge_id, "code": code,
                                              "hosted_url": "https://commerce.coinbase.com/pay/" + charge_id,
                                              "pricing": {"local": price}, "metadata": body.get("metadata", {}),
                                              "timeline": [{"status": "NEW"}]}})
        self.answer(404, {"errorType": "not_found", "errorMessage": "not found"})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key-id", required=True)
    p.add_argument("--public-key", required=True, help="the CDP key's Ed25519 public half, hex")
    p.add_argument("--commerce-key", required=True)
    a = p.parse_args()
    Handler.key_id = a.key_id
    Handler.public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(a.public_key))
    Handler.commerce_key = a.commerce_key
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(json.dumps({"url": "http://127.0.0.1:%d/" % server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

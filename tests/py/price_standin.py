#!/usr/bin/env python3
"""A stand-in for an operator's price endpoint (standard library only): GET /price answers the JSON
last set, or the status last set.

  GET  /price            the body set (200), or {"error": …} with the status set
  POST /_standin/set     {"status": 200, "body": {...}}
  GET  /_standin/calls   how many times /price was asked

    python3 price_standin.py --port 0 --body '{"bittensor": {"usd": 250.5}}'
prints {"url": "http://127.0.0.1:<port>/"} once listening.
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"status": 200, "body": {}, "calls": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            if self.path == "/_standin/calls":
                return self.answer(200, {"calls": STATE["calls"]})
            if self.path != "/price":
                return self.answer(404, {"error": "not found"})
            STATE["calls"] += 1
            status, body = STATE["status"], STATE["body"]
        if status != 200:
            return self.answer(status, {"error": "unavailable"})
        self.answer(200, body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/_standin/set":
            return self.answer(404, {"error": "not found"})
        update = json.loads(raw)
        with LOCK:
            STATE["status"] = update.get("status", 200)
            if "body" in update:
                STATE["body"] = update["body"]
        self.answer(200, {"ok": True})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--body", default="{}")
    a = p.parse_args()
    STATE["body"] = json.loads(a.body)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(json.dumps({"url": "http://127.0.0.1:%d/" % server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""A miner endpoint authenticated with bittensor 11.3.0's own `bittensor.http_auth` verifier.

Usage: btauth_miner.py <own hotkey ss58>. Serves OpenAI-style POST /v1/chat/completions (SSE) on
127.0.0.1 (a free port), printing {"url": ...} once listening. Every request goes through
`http_auth.verify` (receiver required, default freshness window and replay store); a refused
request gets 401 with the AuthError's class name.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bittensor import http_auth

OWN = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            caller = http_auth.verify(dict(self.headers), body, method="POST", path=self.path, self_hotkey_ss58=OWN)
        except http_auth.AuthError as e:
            out = json.dumps({"detail": type(e).__name__, "message": str(e)}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        req = json.loads(body)
        asked = next((m["content"] for m in reversed(req["messages"]) if m["role"] == "user"), "")
        words = f"Hello from a btauth miner. You said: {asked}".split(" ")
        words = [w + " " for w in words[:-1]] + [words[-1]]
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        chunks += [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
        chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        if (req.get("stream_options") or {}).get("include_usage"):
            chunks.append({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)}})
        for c in chunks:
            c.update({"id": "chatcmpl-btauth", "object": "chat.completion.chunk", "created": 0, "model": req["model"],
                      "signed_by": caller.hotkey_ss58})
        payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        out = payload.encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}", "hotkey": OWN}), flush=True)
server.serve_forever()

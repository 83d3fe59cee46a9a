"""The official OpenAI Python SDK against a running `taogate dev`.

Usage: openai_sdk.py <demo.json>. Exits non-zero (with an assertion message) on any mismatch.
"""
import json
import sys
import urllib.request

import openai
from openai import OpenAI

demo = json.load(open(sys.argv[1]))
base = demo["base_url"]
client = OpenAI(base_url=f"{base}/v1", api_key=demo["api_key"], max_retries=0)

models = [m.id for m in client.models.list()]
assert "taogate-demo" in models, models

done = client.chat.completions.create(
    model="taogate-demo", messages=[{"role": "user", "content": "hello sdk"}]
)
text = done.choices[0].message.content
assert text.startswith("Hello from ") and text.endswith("You said: hello sdk"), text
assert done.usage.completion_tokens > 0 and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

streamed, usage = [], None
for chunk in client.chat.completions.create(
    model="taogate-demo",
    messages=[{"role": "user", "content": "stream sdk"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage:
        usage = chunk.usage
        assert chunk.choices == [], "the usage chunk has no choices"
    for c in chunk.choices:
        streamed.append(c.delta.content or "")
assert "".join(streamed).endswith("You said: stream sdk"), streamed
assert usage is not None and usage.completion_tokens == len([s for s in streamed if s]), (usage, streamed)

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

try:
    client.chat.completions.create(model="taogate-demo", messages=[])
    raise AssertionError("empty messages accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "messages", e.body


def call(method, path, body=None, token=None):
    req = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as res:
        return json.load(res)


login = call("POST", "/api/v1/auth/login", {"email": demo["email"], "password": demo["password"], "tenant": demo["tenant"]})
token = login["access_token"]
keys = call("GET", "/api/v1/keys", token=token)["data"]
key = next(k for k in keys if demo["api_key"].endswith(k["last4"]))
call("DELETE", f"/api/v1/keys/{key['id']}", token=token)

try:
    client.models.list()
    raise AssertionError("revoked key accepted")
except openai.AuthenticationError as e:
    assert e.body["code"] == "api_key_revoked", e.body

print("ok")

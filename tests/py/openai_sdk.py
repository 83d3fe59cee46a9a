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

# Tools: the call comes back whole without streaming, in pieces with streaming, and the result
# goes back in the conversation.
tools = [{"type": "function", "function": {"name": "lookup", "description": "Look something up",
          "parameters": {"type": "object", "properties": {"said": {"type": "string"}}, "required": ["said"]}}}]
asked = [{"role": "user", "content": "call a tool"}]
done = client.chat.completions.create(model="taogate-demo", messages=asked, tools=tools)
choice = done.choices[0]
assert choice.finish_reason == "tool_calls", choice
assert choice.message.content is None, choice.message
call = choice.message.tool_calls[0]
assert call.type == "function" and call.function.name == "lookup" and call.id, call
assert json.loads(call.function.arguments) == {"said": "call a tool"}, call.function.arguments
assert done.usage.completion_tokens > 0, done.usage

name, pieces, finish = None, [], None
for chunk in client.chat.completions.create(model="taogate-demo", messages=[{"role": "user", "content": "stream a tool"}],
                                            tools=tools, stream=True):
    for c in chunk.choices:
        for tc in c.delta.tool_calls or []:
            assert tc.index == 0, tc
            name = tc.function.name or name
            pieces.append(tc.function.arguments or "")
        finish = c.finish_reason or finish
assert name == "lookup" and finish == "tool_calls", (name, finish)
assert len([p for p in pieces if p]) > 1 and json.loads("".join(pieces)) == {"said": "stream a tool"}, pieces

answered = client.chat.completions.create(model="taogate-demo", messages=asked + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "found it"},
])
assert answered.choices[0].finish_reason == "stop", answered
assert answered.choices[0].message.content.endswith("You said: call a tool"), answered

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

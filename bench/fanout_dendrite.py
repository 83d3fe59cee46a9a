"""Fan-out of one chat request to n bt.Axon miners: the Rust worker (best_of over all n, and a
single-axon route as the miners' own time) against Python's bt.Dendrite querying the same axons,
same run. Prints a markdown table of per-request latency (sequential requests).

Usage: fanout_dendrite.py <worker_url> <worker_secret> <metagraph.json> [requests]
"""
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import List, Optional

import bittensor.utils.networking as networking

networking.get_external_ip = lambda: "127.0.0.1"

import bittensor as bt  # noqa: E402
import pydantic  # noqa: E402
from bittensor.core.chain_data import AxonInfo  # noqa: E402
from bittensor_wallet import Wallet  # noqa: E402


class StreamPromptingSynapse(bt.StreamingSynapse):
    task_name: str = pydantic.Field(...)
    roles: List[str] = pydantic.Field(...)
    messages: List[str] = pydantic.Field(...)
    required_hash_fields: List[str] = pydantic.Field(["messages"])
    completion: str = ""
    target_model: Optional[str] = None
    seed: Optional[int] = None

    async def process_streaming_response(self, response):
        async for chunk in response.content.iter_any():
            text = chunk.decode("utf-8")
            self.completion += text
            yield text

    def extract_response_json(self, response) -> dict:
        return {"task_name": self.task_name, "roles": self.roles, "messages": self.messages, "completion": self.completion}

    def deserialize(self) -> str:
        return self.completion


url, secret, graph = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
n_requests = int(sys.argv[4]) if len(sys.argv) > 4 else 100


def worker_call(model):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "fan out"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, method="POST")
    req.add_header("authorization", f"Bearer {secret}")
    req.add_header("content-type", "application/json")
    started = time.perf_counter()
    with urllib.request.urlopen(req) as res:
        out = json.load(res)
    assert "You said: fan out" in out["choices"][0]["message"]["content"], out
    return time.perf_counter() - started


wallet = Wallet(name="bench", hotkey="dendrite", path=tempfile.mkdtemp())
wallet.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
dendrite = bt.Dendrite(wallet=wallet)
axons = [AxonInfo(version=10005000, ip=n["ip"], port=n["port"], ip_type=4, hotkey=n["hotkey"], coldkey=n["hotkey"])
         for n in graph["neurons"]]


async def dendrite_call():
    syn = StreamPromptingSynapse(task_name="InferenceTask", roles=["user"], messages=["fan out"])
    started = time.perf_counter()
    streams = await dendrite.forward(axons=axons, synapse=syn, timeout=12, streaming=True, deserialize=False)

    async def drain(gen):
        text = ""
        async for part in gen:
            if isinstance(part, str):
                text += part
            elif not text:
                text = f"<{part.dendrite.status_code} {part.dendrite.status_message}>"
        return text

    texts = await asyncio.gather(*(drain(s) for s in streams))
    assert all("You said: fan out" in t for t in texts), texts
    return time.perf_counter() - started


def summary(name, xs):
    xs = sorted(xs)
    p50, p99 = xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    print(f"| {name} | {len(xs)} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {statistics.mean(xs) * 1000:.2f} |")


loop = asyncio.new_event_loop()  # one loop: the dendrite's HTTP session is bound to it
for _ in range(5):  # warm-up: connections, nonce windows
    worker_call("one")
    worker_call("all")
    loop.run_until_complete(dendrite_call())
one = [worker_call("one") for _ in range(n_requests)]
rust = [worker_call("all") for _ in range(n_requests)]
python = [loop.run_until_complete(dendrite_call()) for _ in range(n_requests)]
print(f"| path ({len(axons)} axons) | requests | p50 ms | p99 ms | mean ms |")
print("|---|---|---|---|---|")
summary("taogate worker → 1 axon (the miners' own time)", one)
summary(f"taogate worker best_of → {len(axons)} axons", rust)
summary(f"Python bt.Dendrite → {len(axons)} axons", python)

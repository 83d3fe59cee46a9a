"""A real bt.Axon (bittensor 10.5.0) serving two synapses on 127.0.0.1, for the worker's legacy
transport tests. No chain: the wallet is created offline, the axon is started without serve().

  StreamPromptingSynapse  SN1 v2.12.1's schema (task_name/roles/messages required,
                          required_hash_fields = ["messages"] as a field); streams raw UTF-8 text.
  PromptingSynapse        the same fields as a plain synapse; answers JSON with `completion`.

Usage: bt_axon_miner.py [--allow-hotkey SS58 ...]. Prints {"url","hotkey"} once accepting.
Hotkeys outside --allow-hotkey (when given) are blacklisted (403).
"""
import argparse
import asyncio
import json
import socket
import tempfile
import time
from typing import List, Optional, Tuple

import bittensor.utils.networking as networking

networking.get_external_ip = lambda: "127.0.0.1"  # offline: no external IP lookup

import bittensor as bt  # noqa: E402
import pydantic  # noqa: E402
from bittensor_wallet import Wallet  # noqa: E402
from starlette.types import Send  # noqa: E402


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
            yield chunk.decode("utf-8")

    def extract_response_json(self, response) -> dict:
        return {"completion": self.completion}

    def deserialize(self) -> str:
        return self.completion


class PromptingSynapse(bt.Synapse):
    roles: List[str] = pydantic.Field(...)
    messages: List[str] = pydantic.Field(...)
    required_hash_fields: List[str] = pydantic.Field(["messages"])
    completion: str = ""

    def deserialize(self) -> str:
        return self.completion


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--allow-hotkey", action="append")
    args = p.parse_args()
    allowed = set(args.allow_hotkey) if args.allow_hotkey else None

    wallet = Wallet(name="miner", hotkey="axon", path=tempfile.mkdtemp(prefix="btaxon-"))
    wallet.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
    wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    axon = bt.Axon(wallet=wallet, ip="127.0.0.1", port=port, external_ip="127.0.0.1", external_port=port)
    axon.fast_config.host = "127.0.0.1"

    def stream_forward(synapse: StreamPromptingSynapse) -> StreamPromptingSynapse:
        async def token_streamer(send: Send):
            for piece in ["You said: ", synapse.messages[-1] if synapse.messages else "", " [done]"]:
                await send({"type": "http.response.body", "body": piece.encode(), "more_body": True})
                await asyncio.sleep(0.01)

        return synapse.create_streaming_response(token_streamer)

    def plain_forward(synapse: PromptingSynapse) -> PromptingSynapse:
        synapse.completion = "echo: " + " | ".join(f"{r}:{m}" for r, m in zip(synapse.roles, synapse.messages))
        return synapse

    def stream_blacklist(synapse: StreamPromptingSynapse) -> Tuple[bool, str]:
        if allowed is not None and synapse.dendrite.hotkey not in allowed:
            return True, "hotkey not allowed"
        return False, "ok"

    def plain_blacklist(synapse: PromptingSynapse) -> Tuple[bool, str]:
        if allowed is not None and synapse.dendrite.hotkey not in allowed:
            return True, "hotkey not allowed"
        return False, "ok"

    axon.attach(forward_fn=stream_forward, blacklist_fn=stream_blacklist)
    axon.attach(forward_fn=plain_forward, blacklist_fn=plain_blacklist)
    axon.start()
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "hotkey": wallet.hotkey.ss58_address}), flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        axon.stop()


if __name__ == "__main__":
    main()

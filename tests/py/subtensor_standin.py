#!/usr/bin/env python3
"""A stand-in for a subtensor node's JSON-RPC (HTTP POST), for the methods a deposit watcher uses,
following Substrate's documented RPC and storage formats — written independently of taogate:

  chain_getBlockHash([n])            the hash of block n (null past the best block)
  chain_getFinalizedHead([])         the finalized head's hash
  chain_getHeader([hash])            {"number": "0x…", "parentHash": …}
  state_queryStorageAt([keys, hash]) [{"block": hash, "changes": [[key, value | null], …]}]; a null
                                     hash means the best block

Storage: System.Account of each ss58 address, key twox128("System") ++ twox128("Account") ++
blake2_128(pk) ++ pk (xxhash / hashlib here), value a SCALE AccountInfo packed by hand to the
documented layout: nonce, consumers, providers, sufficients (u32 LE) then free, reserved, frozen,
flags (u128 LE); an empty account has no value.

Control (for tests): POST /_standin/block {"set": {"<ss58>": free_rao, …}} appends a block whose
state is the previous one with those balances; POST /_standin/finalize {"number": n};
POST /_standin/fail {"count": k} makes the next k RPC calls answer a JSON-RPC error;
GET /_standin/calls counts the RPC calls by method.

    python subtensor_standin.py --port 0    (needs `xxhash` and `scalecodec`: bittensor's venv)
prints {"url": "http://127.0.0.1:<port>/"} once listening.
"""
import argparse
import hashlib
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import xxhash
from scalecodec.utils.ss58 import ss58_decode

LOCK = threading.Lock()
BLOCKS = []  # [{"hash", "state": {key: bytes}}]
FINALIZED = [0]
FAIL = [0]
CALLS = {}


def twox128(data):
    return xxhash.xxh64(data, seed=0).intdigest().to_bytes(8, "little") + \
        xxhash.xxh64(data, seed=1).intdigest().to_bytes(8, "little")


def account_key(ss58):
    pk = bytes.fromhex(ss58_decode(ss58, valid_ss58_format=42))
    return "0x" + (twox128(b"System") + twox128(b"Account") +
                   hashlib.blake2b(pk, digest_size=16).digest() + pk).hex()


def account_info(free):
    return struct.pack("<IIII", 0, 0, 1, 0) + free.to_bytes(16, "little") + bytes(48)


def block_hash(n):
    return "0x" + hashlib.sha256(b"standin block %d" % n).hexdigest()


def new_block(changes):
    with LOCK:
        state = dict(BLOCKS[-1]["state"]) if BLOCKS else {}
        for ss58, free in changes.items():
            key = account_key(ss58)
            if free:
                state[key] = account_info(int(free))
            else:
                state.pop(key, None)
        BLOCKS.append({"hash": block_hash(len(BLOCKS)), "state": state})
        return len(BLOCKS) - 1


def by_hash(h):
    for n, b in enumerate(BLOCKS):
        if b["hash"] == h:
            return n, b
    return None, None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            self.answer(dict(CALLS))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path == "/_standin/block":
            return self.answer({"number": new_block(body.get("set", {}))})
        if self.path == "/_standin/finalize":
            with LOCK:
                FINALIZED[0] = min(int(body["number"]), len(BLOCKS) - 1)
            return self.answer({"finalized": FINALIZED[0]})
        if self.path == "/_standin/fail":
            with LOCK:
                FAIL[0] = int(body["count"])
            return self.answer({"fail": FAIL[0]})
        method, params, rid = body.get("method"), body.get("params", []), body.get("id")
        with LOCK:
            CALLS[method] = CALLS.get(method, 0) + 1
            if FAIL[0] > 0:
                FAIL[0] -= 1
                return self.answer({"jsonrpc": "2.0", "id": rid,
                                    "error": {"code": -32000, "message": "node unavailable"}})
            result = self.rpc(method, params)
        if isinstance(result, dict) and "__error" in result:
            return self.answer({"jsonrpc": "2.0", "id": rid, "error": result["__error"]})
        self.answer({"jsonrpc": "2.0", "id": rid, "result": result})

    def rpc(self, method, params):
        if method == "chain_getBlockHash":
            n = params[0] if params else len(BLOCKS) - 1
            return BLOCKS[n]["hash"] if 0 <= n < len(BLOCKS) else None
        if method == "chain_getFinalizedHead":
            return BLOCKS[FINALIZED[0]]["hash"]
        if method == "chain_getHeader":
            n, _ = by_hash(params[0]) if params and params[0] else (len(BLOCKS) - 1, None)
            if n is None:
                return None
            return {"number": hex(n), "parentHash": BLOCKS[n - 1]["hash"] if n else "0x" + "00" * 32,
                    "stateRoot": "0x" + "11" * 32, "extrinsicsRoot": "0x" + "22" * 32, "digest": {"logs": []}}
        if method == "state_queryStorageAt":
            keys, at = params[0], params[1] if len(params) > 1 else None
            n, block = by_hash(at) if at else (len(BLOCKS) - 1, BLOCKS[-1])
            if block is None:
                return {"__error": {"code": 4003, "message": "Client error: UnknownBlock"}}
            changes = [[k, "0x" + block["state"][k].hex() if k in block["state"] else None] for k in keys]
            return [{"block": block["hash"], "changes": changes}]
        return {"__error": {"code": -32601, "message": "Method not found"}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    new_block({})  # genesis
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"url": "http://127.0.0.1:%d/" % server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Checks Verathos-style validator signatures with bittensor_wallet's own Keypair.verify, as the
SN96 miner does (neurons/request_signing.py verify_request): message
f"{METHOD}:{path}:{sha256(body) hex}:{timestamp}", timestamp within ±60 s.

Reads JSON lines {"method","path","body_hex","headers":{...}} on stdin; prints one line per input:
"ok" or the reason for refusal.
"""
import hashlib
import json
import sys
import time

from bittensor_wallet import Keypair

MAX_SKEW = 60

for line in sys.stdin:
    req = json.loads(line)
    h = {k.lower(): v for k, v in req["headers"].items()}
    hotkey, sig, ts = h.get("x-validator-hotkey"), h.get("x-validator-signature"), h.get("x-validator-timestamp")
    if not (hotkey and sig and ts):
        print("missing headers", flush=True)
        continue
    if abs(time.time() - int(ts)) > MAX_SKEW:
        print("stale timestamp", flush=True)
        continue
    body = bytes.fromhex(req["body_hex"])
    message = f"{req['method']}:{req['path']}:{hashlib.sha256(body).hexdigest()}:{ts}"
    signature = bytes.fromhex(sig[2:] if sig.startswith("0x") else sig)
    ok = len(signature) == 64 and Keypair(ss58_address=hotkey).verify(message.encode(), signature)
    print("ok" if ok else "bad signature", flush=True)

"""Static-key auth for the LiteLLM benchmark leg (general_settings.custom_auth).

Accepts only the keys listed in LITELLM_BENCH_KEYS (comma separated) and rejects
everything else with 401. Each accepted key gets rpm_limit=LITELLM_BENCH_RPM, which
LiteLLM's parallel-request limiter (v3, the default proxy hook) enforces through the
coordination Redis, so the limit is shared by every proxy instance on that Redis.

The key handed to LiteLLM is an id derived from a SHA-256 of the real key, so
neither Redis key names nor logs ever carry a real key.
"""

import hashlib
import os

from fastapi import HTTPException, Request
from litellm.proxy._types import UserAPIKeyAuth


def _load_keys() -> dict[str, str]:
    raw = os.environ.get("LITELLM_BENCH_KEYS", "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise RuntimeError("LITELLM_BENCH_KEYS is empty: set at least one static API key")
    # "bench-" prefix: not "sk-", so LiteLLM keeps the id as is instead of re-hashing it.
    return {k: "bench-" + hashlib.sha256(k.encode()).hexdigest()[:24] for k in keys}


_KEY_IDS = _load_keys()
_RPM = int(os.environ.get("LITELLM_BENCH_RPM", "100000000"))


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    key = api_key or ""
    if key[:7].lower() == "bearer ":
        key = key[7:]
    key_id = _KEY_IDS.get(key.strip())
    if key_id is None:
        raise HTTPException(status_code=401, detail="invalid API key")
    return UserAPIKeyAuth(api_key=key_id, key_alias=key_id, rpm_limit=_RPM)

#!/usr/bin/env python3
"""Makes the `taogate dev` demo plan free and unlimited, for benchmarks.

The demo tenant's default plan is priced, rate-limited and its account starts with a small credit
(README: the quick start shows 402 when it is spent). The benchmarks measure the unpriced,
unlimited path (and add their own limits and prices where a row says so), so they clear the plan
through the API as its owner: `bench/free_demo.py <base_url> <demo.json>`.
"""
import json
import sys
import urllib.request


def call(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as res:
        return json.load(res)


base, demo_path = sys.argv[1], sys.argv[2]
demo = json.load(open(demo_path))
if "owner_email" not in demo:
    sys.exit(0)  # a build from before the priced demo: its plan is already free
login = call("POST", f"{base}/api/v1/auth/login",
             {"email": demo["owner_email"], "password": demo["owner_password"], "tenant": demo["tenant"]})
token = login["access_token"]
for plan in call("GET", f"{base}/api/v1/plans", token=token)["data"]:
    call("PATCH", f"{base}/api/v1/plans/{plan['id']}",
         {"prices": {}, "key_limits": {}, "account_limits": {}, "hold_cap_nano": None}, token)

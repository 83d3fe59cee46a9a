"""Redis' own time per call of the limiter script (src/limits/limits.lua), side by side for
several versions of it: replays what the gateway sends for a metered request (an admission with
four limits and a balance hold, its settle, a ledger sync every 300 requests) at 50 requests per
simulated second, once the 61 one-second cells of each window are full, and reads the server's
`INFO commandstats` (microseconds inside EVALSHA, and inside the commands the script calls, and
how many commands it calls).

    pip install redis
    git show <rev>:src/limits/limits.lua > /tmp/before.lua
    python bench/limits_script.py /tmp/before.lua src/limits/limits.lua [requests]

Uses keys under `tg-bench-script:` on redis://127.0.0.1:6379 (REDIS_URL), deleted at the end.
"""
import os
import sys
import uuid

import redis

r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
P = "tg-bench-script:{t:x}:"
KEYS = [P + k for k in ("k:rpm", "k:tpm", "t:rpm", "t:conc", "a:bal", "a:holds", "a:retired", "a:pend")]
LIMITS = ["rpm", "1000000000", "tpm", "1000000000000", "rpm", "1000000000", "conc", "100000"]


def clear():
    for k in r.scan_iter(P + "*"):
        r.delete(k)


def replay(sha, state, n):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        state["now"] += 20
        now, rid, event = state["now"], str(uuid.uuid4()), str(uuid.uuid4())
        pipe.evalsha(sha, len(KEYS), *KEYS, "admit", now, rid, "5", "600000", "4", *LIMITS,
                     "134000", "-1000000000000000000")
        pipe.evalsha(sha, len(KEYS) + 1, *KEYS, P + "settled:" + rid, "settle", now + 3, rid, "9", now, "4",
                     *LIMITS, event, "24000", "134000")
        state["pending"].append(event)
        if len(state["pending"]) >= 300:
            state["ver"] += 1
            pipe.evalsha(sha, 4, *KEYS[4:], "sync", now + 5, "", str(-24000 * state["ver"]),
                         str(state["ver"]), "0", *state["pending"])
            state["pending"] = []
        if i % 500 == 499:
            for reply in pipe.execute():
                assert reply and reply[0] == 1, reply
            pipe = r.pipeline(transaction=False)
    pipe.execute()


def measure(path, n):
    clear()
    sha = r.script_load(open(path).read())
    state = {"now": 1795689074000, "ver": 1, "pending": []}
    r.evalsha(sha, 4, *KEYS[4:], "sync", state["now"], "", "0", "1", "0")
    replay(sha, state, 3100)  # 62 simulated seconds: every window full
    r.config_resetstat()
    replay(sha, state, n)
    stats = r.info("commandstats")
    script = stats["cmdstat_evalsha"]
    inner = [v for k, v in stats.items() if k.startswith("cmdstat_") and k != "cmdstat_evalsha"]
    usec = sum(v["usec"] for v in inner)
    commands = sum(v["calls"] for v in inner)
    clear()
    return script["usec"] / script["calls"], usec / script["calls"], commands / script["calls"], script["calls"]


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.isdigit()]
    n = next((int(a) for a in sys.argv[1:] if a.isdigit()), 10000)
    print("| script | EVALSHA calls | µs per call | of which in called commands | commands per call |")
    print("|---|---|---|---|---|")
    for path in paths:
        per_call, inner, commands, calls = measure(path, n)
        print(f"| {path} | {calls} | {per_call:.1f} | {inner:.1f} | {commands:.2f} |")

#!/usr/bin/env python3
"""The benchmark suite: every target side by side in one run on this machine (run it through
`bench/suite.sh`, which builds release and the virtualenvs first).

Targets, each answering the same chat completion (`bench/chat.lua`, keep-alive, wrk):
  direct           the OpenAI-compatible stand-in of `taogate dev` (the owner gateway), no token delay
  nginx            nginx reverse proxy in front of the same stand-in
  taogate embedded `taogate dev`: SQLite, limits in process, worker in process (its demo plan made
                   free and unlimited: key auth, the limiter's lookup, metering, no prices)
  taogate metered  `taogate dev` on PostgreSQL + Redis with 4 limits (key rpm + tpm, tenant rpm +
                   concurrency), a priced plan and a postpaid account: holds, captures, ledger
  litellm          LiteLLM proxy (bench/litellm, pinned): static keys through its custom-auth hook,
                   rpm limits shared through Redis, to the same stand-in
JSON and SSE at c = 1, 50, 200. Per run: rps, latency, and per request the CPU of each process
(taogate's minus its in-process stand-in's share, measured on the direct row), Redis commands,
system calls and context switches of the target's processes. Memory: RSS idle, peak at c=200,
and with 4,000 idle open streams (then after they close; 10,000 extrapolated per stream).

Writes bench/results/suite.md (machine, table, targets), suite.json and suite.png.
Usage: bench/suite.py [seconds per run, default 8]; BENCH_BIN, BENCH_PG, BENCH_REDIS,
BENCH_CONCS ("1 50 200"), BENCH_IDLE_STREAMS (4000; 0 skips), BENCH_TARGETS (all), BENCH_OUT.
"""

import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
BIN = os.environ.get("BENCH_BIN", str(ROOT / "target/release/taogate"))
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
CONCS = [int(c) for c in os.environ.get("BENCH_CONCS", "1 50 200").split()]
# Each idle stream holds four descriptors in `taogate dev` (the client's socket and its watch, the
# worker's socket to the stand-in, the stand-in's side): the default stays inside a 20,000
# open-files hard limit (this sandbox's); the per-stream figure scales to 10,000.
IDLE_STREAMS = int(os.environ.get("BENCH_IDLE_STREAMS", "4000"))
TARGETS = os.environ.get("BENCH_TARGETS", "direct nginx embedded metered litellm").split()
HZ = os.sysconf("SC_CLK_TCK")
LITELLM_VENV = ROOT / ".venv-litellm"
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "bench/results"))

work = Path(tempfile.mkdtemp(prefix="tg-suite-"))
procs = []  # (Popen) stopped at exit, by PID
db_name = f"taogate_suite_{random.randrange(1 << 30)}"
prefix = f"tg-suite-{random.randrange(1 << 30)}:"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start(args, name, env=None, **kw):
    out = open(work / f"{name}.log", "w")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                         start_new_session=True, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    subprocess.run(["psql", "-q", f"{PG}/postgres", "-c", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"],
                   capture_output=True)
    keys = subprocess.run(["redis-cli", "-u", REDIS, "--scan", "--pattern", prefix + "*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "-u", REDIS, "DEL", *keys[i:i + 500]], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def wait_http(url, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up; logs in {work}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------- per-process readings from /proc ----------

def children(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return sorted(set(out))


def proc_sum(pids, one):
    """one(pid) summed over the processes still there."""
    total = 0
    for p in pids:
        try:
            total += one(p)
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return total


def ticks(pids):
    """CPU clock ticks (user + system) of the processes, all their threads."""
    def one(p):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    return proc_sum(pids, one)


def switches(pids):
    """Voluntary and involuntary context switches of every thread of the processes."""
    def one(p):
        n = 0
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/status") as f:
                n += sum(int(line.split()[1]) for line in f
                         if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        return n
    return proc_sum(pids, one)


def rss_mb(pids):
    def one(p):
        with open(f"/proc/{p}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return proc_sum(pids, one) / 1024


def redis_info(section):
    out = subprocess.run(["redis-cli", "-u", REDIS, "INFO", section], capture_output=True, text=True).stdout
    return dict(line.split(":", 1) for line in out.replace("\r", "").splitlines() if ":" in line)


def redis_counts():
    """Commands run (scripts' own commands included), scripts called, and client reads — Redis reads
    a socket once per round trip, however many pipelined commands arrive in it."""
    stats, cmds = redis_info("stats"), redis_info("commandstats")
    scripts = sum(int(v.split("calls=")[1].split(",")[0]) for k, v in cmds.items()
                  if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return int(stats["total_commands_processed"]), scripts, int(stats["total_reads_processed"])


def pg_pids():
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# ---------- the targets ----------

def json_file(path):
    with open(path) as f:
        return json.load(f)


def start_dev(name, env=None, delay_ms=0):
    port = free_port()
    p = start([BIN, "dev", "--listen", f"127.0.0.1:{port}", "--data-dir", str(work / name),
               "--token-delay-ms", str(delay_ms)], name, env={"RUST_LOG": "warn", **(env or {})})
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    demo = json_file(work / name / "demo.json")
    subprocess.run([sys.executable, str(ROOT / "bench/free_demo.py"), base, str(work / name / "demo.json")], check=True)
    return p, base, demo


def psql(sql):
    return subprocess.run(["psql", "-qtA", f"{PG}/{db_name}", "-c", sql], capture_output=True, text=True,
                          check=True).stdout.strip()


def make_metered(base, key):
    """Limits, prices and a postpaid account on the metered instance (as bench/limits.sh)."""
    tenant = psql("SELECT tenant_id FROM api_keys LIMIT 1")
    psql("UPDATE api_keys SET limits = '{\"rpm\": 1000000000, \"tpm\": 1000000000000}'")
    psql("UPDATE tenants SET limits = '{\"rpm\": 1000000000, \"concurrency\": 100000}'")
    psql("UPDATE plans SET is_default = false")
    psql(f"""INSERT INTO plans (id, tenant_id, name, key_limits, account_limits, is_default, created_at,
             updated_at, prices) VALUES ('bench-plan', '{tenant}', 'bench', '{{}}', '{{}}', true, now(), now(),
             '{{"*": {{"prompt_nano_per_mtok": 1000000000, "completion_nano_per_mtok": 2000000000,
             "request_nano": 1000}}}}')""")
    psql("UPDATE accounts SET billing_mode = 'postpaid', credit_limit_nano = 1000000000000000000")
    subprocess.run(["redis-cli", "-u", REDIS, "PUBLISH", f"{prefix}{{registry}}:invalidate", f"tenant:{tenant}"],
                   capture_output=True)
    subprocess.run(["redis-cli", "-u", REDIS, "PUBLISH", f"{prefix}invalidate", f"tenant:{tenant}"],
                   capture_output=True)
    time.sleep(0.5)
    req = urllib.request.Request(base + "/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "taogate-owner", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    with urllib.request.urlopen(req) as res:
        if res.headers.get("x-ratelimit-limit-requests") != "1000000000":
            raise SystemExit(f"metered limits not in force: {dict(res.headers)}")


def start_nginx(upstream):
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx" / d).mkdir(parents=True, exist_ok=True)
    conf = (ROOT / "bench/nginx.conf").read_text()
    conf = conf.replace("__PORT__", str(port)).replace("__UPSTREAM__", upstream.split("//", 1)[1]) \
        .replace("__DIR__", str(work / "nginx"))
    (work / "nginx.conf").write_text(conf)
    p = start(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work / "nginx")], "nginx")
    time.sleep(0.5)
    return p, f"http://127.0.0.1:{port}"


def start_litellm(upstream, upstream_key, key):
    port = free_port()
    redis_host, redis_port = REDIS.split("//", 1)[1].rsplit(":", 1)
    p = start([str(ROOT / "bench/litellm/start.sh"), str(port), upstream + "/v1", upstream_key, redis_host,
               redis_port.strip("/")], "litellm",
              env={"LITELLM_BENCH_KEYS": key, "PATH": f"{LITELLM_VENV}/bin:{os.environ['PATH']}"})
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180)
    return p, f"http://127.0.0.1:{port}"


def count_events(url, key):
    """Server-sent events in one streamed answer to the benchmark's request."""
    body = json.dumps({"model": "taogate-owner", "stream": True, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "benchmark prompt"}]}).encode()
    req = urllib.request.Request(url, method="POST", data=body,
                                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    with urllib.request.urlopen(req) as res:
        return sum(1 for line in res.read().decode().splitlines() if line.startswith("data:"))


# ---------- one measured run ----------

def wrk(url, key, c, stream, secs):
    threads = 1 if c < 2 else 2
    # A 30 s timeout: LiteLLM queues requests for seconds at c >= 50 (wrk's default 2 s would count
    # them as errors).
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{c}", f"-d{secs}s", "--timeout", "30s", "-s",
                          str(ROOT / "bench/chat.lua"), url],
                         env={**os.environ, "KEY": key, "MODEL": "taogate-owner", "STREAM": str(stream).lower()},
                         capture_output=True, text=True, timeout=secs + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def count_syscalls(url, key, c, stream, pids):
    """System calls per request of `pids`, in a short run of its own: perf's tracepoint slows every
    system call, so it never runs during the measured run."""
    time.sleep(1)
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", ",".join(map(str, pids))],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    res = wrk(url, key, c, stream, 3)
    perf.send_signal(signal.SIGINT)
    err = perf.communicate(timeout=10)[1]
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter" and parts[0].isdigit():
            return int(parts[0]) / max(res["requests"], 1)
    return None


def measure(name, url, key, c, stream, groups, target_group):
    """One wrk run; CPU of every process group, syscalls and switches of the target's processes."""
    pids = {g: children(p) if p else [] for g, p in groups.items()}
    pg = pg_pids()
    tpids = pids.get(target_group) or []
    t0 = {g: ticks(p) for g, p in pids.items()}
    pg0, r0, s0 = ticks(pg), redis_counts(), switches(tpids)
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_mb(tpids))

    sampler = threading.Thread(target=sample)
    sampler.start()
    res = wrk(url, key, c, stream, SECS)
    stop.set()
    sampler.join()
    t1 = {g: ticks(p) for g, p in pids.items()}
    pg1, r1, s1 = ticks(pg), redis_counts(), switches(tpids)
    syscalls = count_syscalls(url, key, c, stream, tpids) if tpids and shutil.which("perf") else None
    n = max(res["requests"], 1)
    us = lambda d: d * 1e6 / HZ / n
    row = {
        "target": name, "stream": stream, "c": c, "rps": res["rps"], "requests": res["requests"],
        "p50_ms": res["p50_us"] / 1000, "p90_ms": res["p90_us"] / 1000, "p99_ms": res["p99_us"] / 1000,
        "errors": res["errors"] + res["non2xx"],
        "cpu_us": {g: us(t1[g] - t0[g]) for g in pids},
        "pg_cpu_us": us(pg1 - pg0),
        "redis_cmds": (r1[0] - r0[0]) / n,
        "redis_scripts": (r1[1] - r0[1]) / n,
        "redis_reads": (r1[2] - r0[2]) / n,
        "syscalls": syscalls,
        "switches": (s1 - s0) / n if tpids else None,
        "peak_rss_mb": peak[0] if tpids else None,
    }
    log(f"{name:9} {'sse ' if stream else 'json'} c={c:<3} {res['rps']:>9.0f} rps  p50 {row['p50_ms']:.3f} ms  "
        f"errors {row['errors']}")
    return row


# ---------- memory with idle streams ----------

def idle_streams(n):
    delay_ms = 20_000
    env = {"TAOGATE_POOL__MAX_IN_FLIGHT": str(n * 2), "TAOGATE_POOL__FIRST_BYTE_TIMEOUT_MS": str(4 * delay_ms)}
    p, base, demo = start_dev("idle", env, delay_ms=delay_ms)
    # One stream opened and left first: what the first request loads once and keeps (the
    # tokenizer, ~33 MB) is in `before`, so the figures are what the open streams themselves cost.
    subprocess.run([sys.executable, str(ROOT / "bench/idle_streams.py"), base + "/v1/chat/completions",
                    demo["api_key"], "1", "0", str(work / "warm.ready")], check=True, capture_output=True)
    time.sleep(3)
    before = rss_mb([p.pid])
    ready = work / "idle.ready"
    client = start([sys.executable, str(ROOT / "bench/idle_streams.py"), base + "/v1/chat/completions",
                    demo["api_key"], str(n), "600", str(ready)], "idle-client")
    deadline = time.time() + 300
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.5)
    opened = json.loads(ready.read_text()) if ready.exists() else {"open": 0, "failed": n}
    time.sleep(2)
    held = rss_mb([p.pid])
    threads = len(os.listdir(f"/proc/{p.pid}/task"))
    fds_open = len(os.listdir(f"/proc/{p.pid}/fd"))
    client.send_signal(signal.SIGTERM)
    client.wait(30)
    # A stream whose client left is ended at its next write (within one stand-in delay); the
    # upstream connections then sit in the client pool until its 60 s idle timeout.
    time.sleep(delay_ms / 1000 + 10)
    after = rss_mb([p.pid])
    fds_after = len(os.listdir(f"/proc/{p.pid}/fd"))
    time.sleep(60)
    after_pool = rss_mb([p.pid])
    fds_after_pool = len(os.listdir(f"/proc/{p.pid}/fd"))
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(30)
    log(f"idle streams: {opened} rss {before:.0f} -> {held:.0f} -> {after:.0f} MB")
    return {"streams": n, "opened": opened, "rss_before_mb": before, "rss_open_mb": held, "fds_open": fds_open,
            "rss_after_close_mb": after, "fds_after_close": fds_after, "rss_after_pool_mb": after_pool,
            "fds_after_pool": fds_after_pool, "threads_open": threads}


# ---------- report ----------

def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 1024 / 1024
    ver = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0] \
        if shutil.which(cmd[0]) else "absent"
    litellm = subprocess.run([str(LITELLM_VENV / "bin/python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True).stdout.strip() if LITELLM_VENV.exists() else "absent"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "kernel": platform.release(),
        "taogate": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip(),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "redis": ver("redis-server", "--version"), "postgres": ver("psql", "--version"), "litellm": litellm,
        "wrk": "wrk, keep-alive, threads = min(c, 2)", "seconds_per_run": SECS,
    }


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    groups, urls = {}, {}
    rss_idle = {}
    emb, emb_base, emb_demo = start_dev("embedded")
    owner = json_file(work / "embedded/devnet/subnet.json")
    groups["embedded"] = emb.pid
    urls["direct"] = (owner["owner_url"] + "/v1/chat/completions", owner["owner_api_key"], "embedded")
    urls["embedded"] = (emb_base + "/v1/chat/completions", emb_demo["api_key"], "embedded")
    if "nginx" in TARGETS and shutil.which("nginx"):
        ng, ng_base = start_nginx(owner["owner_url"])
        groups["nginx"] = ng.pid
        urls["nginx"] = (ng_base + "/v1/chat/completions", owner["owner_api_key"], "nginx")
    if "metered" in TARGETS:
        subprocess.run(["psql", "-q", f"{PG}/postgres", "-c", f"CREATE DATABASE {db_name}"], check=True,
                       capture_output=True)
        met, met_base, met_demo = start_dev("metered", {"DATABASE_URL": f"{PG}/{db_name}", "REDIS_URL": REDIS,
                                                        "TAOGATE_REDIS_PREFIX": prefix})
        time.sleep(3)  # the in-process worker joins through Redis at the next registry sync
        make_metered(met_base, met_demo["api_key"])
        groups["metered"] = met.pid
        urls["metered"] = (met_base + "/v1/chat/completions", met_demo["api_key"], "metered")
    if "litellm" in TARGETS and (ROOT / "bench/litellm/start.sh").exists() and LITELLM_VENV.exists():
        lkey = "sk-bench-" + os.urandom(8).hex()
        ll, ll_base = start_litellm(owner["owner_url"], owner["owner_api_key"], lkey)
        groups["litellm"] = ll.pid
        urls["litellm"] = (ll_base + "/v1/chat/completions", lkey, "litellm")
    events = count_events(*urls["embedded"][:2])
    redis_pid = int(redis_info("server")["process_id"])
    groups["redis"] = redis_pid
    time.sleep(2)
    for g in ("embedded", "metered", "litellm", "nginx"):
        if g in groups:
            rss_idle[g] = rss_mb(children(groups[g]))
    rows = []
    for stream in (False, True):
        for c in CONCS:
            for name in ("direct", "nginx", "embedded", "metered", "litellm"):
                if name in urls and name in TARGETS:
                    url, key, grp = urls[name]
                    rows.append(measure(name, url, key, c, stream, groups, grp if name != "direct" else None))
                    # LiteLLM goes on working through what wrk abandoned at its end.
                    time.sleep(5 if name == "litellm" else 1)
    for g in ("embedded", "metered", "litellm"):
        if g in groups:
            rss_idle[g + "_after_load"] = rss_mb(children(groups[g]))
    idle = idle_streams(IDLE_STREAMS) if IDLE_STREAMS else None
    result = {"machine": machine(), "events_per_stream": events, "rows": rows, "rss_idle_mb": rss_idle, "idle_streams": idle}
    OUT.mkdir(exist_ok=True)
    (OUT / "suite.json").write_text(json.dumps(result, indent=1) + "\n")
    subprocess.run([sys.executable, str(ROOT / "bench/report.py"), str(OUT / "suite.json")], check=True)


def idle_only(path):
    """Runs only the idle-streams measurement and puts it into an existing suite.json."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = json.loads(Path(path).read_text())
    result["idle_streams"] = idle_streams(IDLE_STREAMS)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    subprocess.run([sys.executable, str(ROOT / "bench/report.py"), path], check=True)


if __name__ == "__main__":
    try:
        if os.environ.get("BENCH_IDLE_ONLY"):
            idle_only(os.environ["BENCH_IDLE_ONLY"])
        else:
            main()
    finally:
        stop_all()

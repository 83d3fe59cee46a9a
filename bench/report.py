#!/usr/bin/env python3
"""Turns bench/suite.py's suite.json into suite.md (machine, table, targets) and suite.png (a plot).

Usage: bench/report.py bench/results/suite.json. The plot needs matplotlib (bench/requirements.txt);
without it only the Markdown is written.
"""

import json
import sys
from pathlib import Path

TARGETS = ["direct", "nginx", "embedded", "metered", "litellm"]
OWN = {"embedded", "metered"}  # processes that also run the stand-in: its share is subtracted


def fmt(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def main(path):
    path = Path(path)
    data = json.loads(path.read_text())
    rows = data["rows"]
    by = {(r["target"], r["stream"], r["c"]): r for r in rows}
    standin = {(s, c): by[("direct", s, c)]["cpu_us"].get("embedded", 0.0) for (t, s, c) in by if t == "direct"}
    events = data.get("events_per_stream") or 1

    def own_cpu(r):
        """CPU per request of the target's own processes (taogate without its stand-in)."""
        t = r["target"]
        if t == "direct":
            return r["cpu_us"].get("embedded")
        cpu = r["cpu_us"].get(t)
        if cpu is not None and t in OWN:
            cpu -= standin.get((r["stream"], r["c"]), 0.0)
        return cpu

    m = data["machine"]
    out = [f"# Benchmark suite — {m['taogate']}", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}. "
           f"{m['nginx']}; {m['redis']}; {m['postgres']}; LiteLLM {m['litellm']}. Load: {m['wrk']}, "
           f"{m['seconds_per_run']} s per run, every target in the same run. Each SSE answer carries "
           f"{events} events.", "",
           "CPU columns are µs of CPU per request (user + system, from /proc): *own* is the target's own "
           "processes — for taogate the `taogate dev` process minus its in-process stand-in's share (the "
           "direct row's); Redis and PostgreSQL are the servers' processes; syscalls and context switches "
           "are the target's own processes (perf `raw_syscalls:sys_enter`, in a 3 s run of their own after the measured "
           "one: the tracepoint slows every system call; context switches from /proc status during the measured run). Redis round trips are "
           "the server's socket reads (`total_reads_processed`: one per round trip, however many pipelined "
           "commands it carries); scripts are `EVALSHA` calls; commands include those the scripts run.", "",
           "| target | stream | c | rps | × nginx | p50 ms | p99 ms | added p50 ms | errors | own CPU µs/req | "
           "Redis CPU µs/req | PostgreSQL CPU µs/req | Redis round trips/req | Redis scripts/req | Redis cmds/req | "
           "syscalls/req | ctx switches/req | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for stream in (False, True):
        for c in sorted({r["c"] for r in rows}):
            nginx = by.get(("nginx", stream, c))
            direct = by.get(("direct", stream, c))
            for t in TARGETS:
                r = by.get((t, stream, c))
                if not r:
                    continue
                ratio = r["rps"] / nginx["rps"] if nginx else None
                added = r["p50_ms"] - direct["p50_ms"] if direct and t != "direct" else None
                out.append(
                    f"| {t} | {'SSE' if stream else 'JSON'} | {c} | {r['rps']:,.0f} | {fmt(ratio, 3)} | "
                    f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {fmt(added, 3)} | {r['errors']} | {fmt(own_cpu(r))} | "
                    f"{fmt(r['cpu_us'].get('redis') if t in ('metered', 'litellm') else None)} | "
                    f"{fmt(r['pg_cpu_us'] if t == 'metered' else None)} | "
                    f"{fmt(r['redis_reads'] if t in ('metered', 'litellm') else None, 2)} | "
                    f"{fmt(r['redis_scripts'] if t in ('metered', 'litellm') else None, 2)} | "
                    f"{fmt(r['redis_cmds'] if t in ('metered', 'litellm') else None, 2)} | {fmt(r['syscalls'])} | "
                    f"{fmt(r['switches'] if (r['switches'] or 0) >= 0 else None)} | {fmt(r['peak_rss_mb'], 0)} |")
    rss = data.get("rss_idle_mb", {})
    out += ["", "Memory (RSS, MB): " + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in rss.items()) + "."]
    idle = data.get("idle_streams")
    if idle:
        out += ["", f"Idle streams (`taogate dev`, stand-in in the same process, 20 s between its words): "
                    f"{idle['opened']['open']:,} of {idle['streams']:,} open ({idle['opened']}), RSS "
                    f"{idle['rss_before_mb']:.0f} MB before → {idle['rss_open_mb']:.0f} MB while open → "
                    f"{idle['rss_after_close_mb']:.0f} MB 30 s after their clients left ({idle.get('fds_open', '?')} → "
                    f"{idle.get('fds_after_close', '?')} open descriptors) → {idle.get('rss_after_pool_mb', 0):.0f} MB "
                    f"60 s later ({idle.get('fds_after_pool', '?')} descriptors: the upstream pool's idle connections "
                    f"closed); {idle['threads_open']} threads; "
                    f"{(idle['rss_open_mb'] - idle['rss_before_mb']) * 1024 / max(idle['opened']['open'], 1):.0f} KB "
                    f"per open stream (gateway, worker and stand-in together)."]

    # The targets, read off this run.
    checks = []

    def check(what, value, ok, shown):
        checks.append(f"| {what} | {shown if value is not None else '–'} | "
                      f"{'met' if value is not None and ok else 'missed' if value is not None else 'not measured'} |")

    e50, n50, m50 = by.get(("embedded", False, 50)), by.get(("nginx", False, 50)), by.get(("metered", False, 50))
    if e50 and n50:
        ratio = e50["rps"] / n50["rps"]
        check("embedded JSON c=50 ≥ 0.5× nginx rps", ratio, ratio >= 0.5, f"{ratio:.3f}×")
        cpu = own_cpu(e50)
        check("embedded gateway + worker ≤ 40 µs CPU/request", cpu, cpu <= 40, f"{cpu:.1f} µs")
    e1, d1 = by.get(("embedded", False, 1)), by.get(("direct", False, 1))
    if e1 and d1:
        added = (e1["p50_ms"] - d1["p50_ms"]) * 1000
        check("embedded c=1 added p50 ≤ 50 µs", added, added <= 50, f"{added:.0f} µs")
    if m50 and n50:
        ratio = m50["rps"] / n50["rps"]
        check("metered JSON c=50 ≥ 0.3× nginx rps", ratio, ratio >= 0.3, f"{ratio:.3f}×")
        cpu = own_cpu(m50)
        check("metered taogate ≤ 60 µs CPU/request", cpu, cpu <= 60, f"{cpu:.1f} µs")
        r = m50["cpu_us"].get("redis")
        check("metered Redis ≤ 20 µs CPU/request", r, r <= 20, f"{r:.1f} µs")
        check("metered PostgreSQL ≤ 40 µs CPU/request", m50["pg_cpu_us"], m50["pg_cpu_us"] <= 40,
              f"{m50['pg_cpu_us']:.1f} µs")
        m1 = by.get(("metered", False, 1))
        shown = (f"{m50['redis_scripts']:.2f} scripts/request: the admission on the request path, the settle "
                 f"after the answer; Redis socket reads/request {m50['redis_reads']:.2f} at c=50"
                 + (f", {m1['redis_reads']:.2f} at c=1" if m1 else ""))
        check("metered: one Redis round trip on the request path (settles off it, batched)",
              m50["redis_scripts"], m50["redis_scripts"] <= 2.1, shown)
    s50, j50 = by.get(("embedded", True, 50)), by.get(("embedded", False, 50))
    if s50 and j50:
        per_event = own_cpu(s50) / events
        marginal = (own_cpu(s50) - own_cpu(j50)) / events
        check("streams ≤ 3 µs CPU per relayed SSE event (marginal: SSE − JSON, per event)", marginal, marginal <= 3,
              f"{marginal:.1f} µs marginal ({per_event:.1f} µs with the request's own cost spread over its events)")
    if "embedded" in rss:
        check("idle RSS ≤ 40 MB (`taogate dev`, after start)", rss["embedded"], rss["embedded"] <= 40,
              f"{rss['embedded']:.0f} MB")
    if idle and idle["opened"]["open"]:
        grown = idle["rss_open_mb"]
        per = (grown - idle["rss_before_mb"]) / max(idle["opened"]["open"], 1)
        at_10k = idle["rss_before_mb"] + per * 10_000
        check("10,000 idle streams ≤ 200 MB total", at_10k, at_10k <= 200,
              f"{at_10k:.0f} MB at 10,000 (measured: {grown:.0f} MB with {idle['opened']['open']:,} open)")
        back = idle.get("rss_after_pool_mb", idle["rss_after_close_mb"]) - idle["rss_before_mb"]
        check("memory returned when they close (within 10 MB of before)", back, back <= 10,
              f"+{back:.0f} MB once every connection closed (of +{grown - idle['rss_before_mb']:.0f} MB while open)")
    out += ["", "## Targets (issue 23)", "", "| target | this run | |", "|---|---|---|", *checks]
    md = path.with_suffix(".md")
    md.write_text("\n".join(out) + "\n")
    print("\n".join(out))
    plot(rows, own_cpu, path.with_suffix(".png"), m)


def plot(rows, own_cpu, png, m):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib absent: no plot", file=sys.stderr)
        return
    concs = sorted({r["c"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for col, stream in enumerate((False, True)):
        for row, (what, get, scale) in enumerate((("requests per second", lambda r: r["rps"], "log"),
                                                  ("own CPU µs per request", own_cpu, "log"))):
            ax = axes[row][col]
            width = 0.8 / len(TARGETS)
            for i, t in enumerate(TARGETS):
                vals = []
                for c in concs:
                    r = next((r for r in rows if r["target"] == t and r["stream"] == stream and r["c"] == c), None)
                    vals.append((get(r) or 0) if r else 0)
                ax.bar([x + i * width for x in range(len(concs))], vals, width, label=t)
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(concs))], [f"c={c}" for c in concs])
            ax.set_yscale(scale)
            ax.set_title(f"{'SSE' if stream else 'JSON'}: {what}")
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(TARGETS))
    fig.suptitle(f"taogate {m['taogate']} — {m['cpu']}, {m['cores']} cores (one run, wrk keep-alive)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Where PostgreSQL's time goes while a command runs: logs every statement's duration for the
length of the command (`log_min_duration_statement = 0`, reset afterwards) and sums the durations
per statement, largest first.

    bench/pg_statements.py -- target/release/examples/ingest postgres://postgres@127.0.0.1/postgres 100000 bulk

Needs psql and the server's log file (PG_LOG, default the Debian cluster's). Statements are grouped
by their first 70 characters; the times are the server's own, not the client's.
"""
import collections
import os
import re
import subprocess
import sys

PG = os.environ.get("PG_ADMIN", "postgres://postgres@127.0.0.1:5432/postgres")
LOG = os.environ.get("PG_LOG", "/var/log/postgresql/postgresql-15-main.log")
# The extended protocol logs parse, bind and execute apart: all three count in the time, only the
# execution (or a simple-protocol statement) as a call.
LINE = re.compile(r"duration: ([\d.]+) ms\s+(statement|execute|bind|parse)[^:]*:\s*(.*)")


def setting(value):
    sql = f"ALTER SYSTEM SET log_min_duration_statement = {value}" if value else \
        "ALTER SYSTEM RESET log_min_duration_statement"
    subprocess.run(["psql", "-q", PG, "-c", sql, "-c", "SELECT pg_reload_conf()"],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    if not command:
        sys.exit(__doc__)
    start = os.path.getsize(LOG)
    setting("0")
    try:
        subprocess.run(command, check=True)
    finally:
        setting(None)
    totals = collections.defaultdict(lambda: [0, 0.0])
    with open(LOG, errors="replace") as log:
        log.seek(start)
        for line in log:
            m = LINE.search(line)
            if m:
                total = totals[m.group(3)[:70]]
                total[0] += m.group(2) in ("statement", "execute")
                total[1] += float(m.group(1))
    whole = sum(t[1] for t in totals.values()) or 1.0
    print("| server ms | share | calls | statement |\n|---|---|---|---|")
    for text, (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"| {ms:.1f} | {ms / whole:.0%} | {calls} | `{text}` |")


if __name__ == "__main__":
    main()

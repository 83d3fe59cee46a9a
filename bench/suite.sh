#!/usr/bin/env bash
# The benchmark suite in one command: builds release, prepares the Python environments (the plot's
# matplotlib in .venv-bench, the pinned LiteLLM proxy in .venv-litellm, both from PyPI), then runs
# bench/suite.py: direct, nginx, taogate embedded, taogate metered (PostgreSQL + Redis) and LiteLLM,
# JSON and SSE at c = 1, 50, 200, CPU per request per process, syscalls, context switches, memory
# idle / at c=200 / with 4,000 idle streams (scaled to 10,000). Writes bench/results/suite.{md,json,png}.
# Needs: wrk and nginx (apt-get install -y wrk nginx-light), perf (optional: syscall counts), a
# local PostgreSQL and Redis (BENCH_PG, BENCH_REDIS). Usage: bench/suite.sh [seconds per run, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk nginx-light"; exit 1; }
[ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin taogate
[ -x .venv-bench/bin/python ] || { python3 -m venv .venv-bench && .venv-bench/bin/pip install -q -r bench/requirements.txt; }
[ -x .venv-litellm/bin/litellm ] || { python3 -m venv .venv-litellm && .venv-litellm/bin/pip install -q -r bench/litellm/requirements.txt; }
exec .venv-bench/bin/python bench/suite.py "$@"

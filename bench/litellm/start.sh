#!/usr/bin/env bash
# Start the pinned LiteLLM proxy for the benchmark suite, in the foreground.
#
#   bench/litellm/start.sh <port> <upstream_base_url> <upstream_key> <redis_host> <redis_port>
#
#   upstream_base_url  OpenAI-compatible base; "/v1" is appended unless it already ends in /v1
#                      (so taogate dev's owner_url works as is: chat goes to <base>/v1/chat/completions)
# Environment:
#   LITELLM_BENCH_KEYS   required, comma-separated static client keys (anything else gets 401)
#   LITELLM_BENCH_RPM    per-key rpm limit, enforced through Redis (default 100000000)
#   LITELLM_BENCH_VENV   virtualenv with requirements.txt installed (default <repo>/.venv-litellm)
#   LITELLM_LOG          proxy + uvicorn log level (default WARNING: no per-request lines)
#   LITELLM_BENCH_WORKERS uvicorn worker processes (default 1, see below)
#
# Processes: the script execs the proxy, so the PID of this script IS the proxy's PID.
#   workers=1 (default): ONE process (python running uvicorn + uvloop in-process);
#     `kill <pid>` (SIGTERM) stops everything; CPU = that PID.
#   workers=N>1: <pid> is uvicorn's supervisor plus N worker children (`pgrep -P <pid>`);
#     `kill <pid>` stops all of them; CPU = <pid> + its children.
# Prints nothing secret (no keys; the master key is random and never shown).
set -euo pipefail

if [ "$#" -ne 5 ]; then
  echo "usage: $0 <port> <upstream_base_url> <upstream_key> <redis_host> <redis_port>" >&2
  exit 2
fi
port=$1 upstream=$2 upstream_key=$3 redis_host=$4 redis_port=$5

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${LITELLM_BENCH_VENV:-$(cd "$here/../.." && pwd)/.venv-litellm}
if [ ! -x "$venv/bin/litellm" ]; then
  echo "litellm not installed in $venv; run: python3 -m venv $venv && $venv/bin/pip install -q -r $here/requirements.txt" >&2
  exit 1
fi
if [ -z "${LITELLM_BENCH_KEYS:-}" ]; then
  echo "LITELLM_BENCH_KEYS is not set (comma-separated static API keys)" >&2
  exit 2
fi

upstream=${upstream%/}
case "$upstream" in
  */v1) ;;
  *) upstream="$upstream/v1" ;;
esac

# Only our explicit settings: no DB, no REDIS_* fallback, no stray .env.
unset DATABASE_URL DIRECT_URL REDIS_URL REDIS_HOST REDIS_PORT REDIS_PASSWORD REDIS_USERNAME \
      REDIS_CLUSTER_NODES REDIS_SENTINEL_NODES LITELLM_MASTER_KEY
export LITELLM_BENCH_UPSTREAM_BASE=$upstream
export LITELLM_BENCH_UPSTREAM_KEY=$upstream_key
export LITELLM_BENCH_REDIS_HOST=$redis_host
export LITELLM_BENCH_REDIS_PORT=$redis_port
export LITELLM_BENCH_RPM=${LITELLM_BENCH_RPM:-100000000}
# The proxy refuses to boot without a master key. Clients never use it (custom_auth
# answers first), so make a random one per start and never print it.
LITELLM_MASTER_KEY="sk-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
export LITELLM_MASTER_KEY

# Nothing may be fetched at run time: use the bundled copies of every remote JSON,
# no .env loading, tokenizers offline, quiet logs.
export LITELLM_MODE=PRODUCTION
export LITELLM_LOCAL_MODEL_COST_MAP=True
export LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
export LITELLM_LOCAL_POLICY_TEMPLATES=True
export LITELLM_LOCAL_AUTOROUTER_PRESETS=True
export LITELLM_LOCAL_BLOG_POSTS=True
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1 ANONYMIZED_TELEMETRY=False
export LITELLM_LOG=${LITELLM_LOG:-WARNING}
export PYTHONUNBUFFERED=1

echo "litellm-bench: 127.0.0.1:$port -> $upstream (model taogate-owner), redis $redis_host:$redis_port, rpm ${LITELLM_BENCH_RPM}, workers ${LITELLM_BENCH_WORKERS:-1}" >&2
cd "$here"
exec "$venv/bin/litellm" --config "$here/config.yaml" --host 127.0.0.1 --port "$port" --num_workers "${LITELLM_BENCH_WORKERS:-1}"

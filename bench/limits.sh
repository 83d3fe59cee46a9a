#!/usr/bin/env bash
# The whole metered path on PostgreSQL + Redis, side by side in one run (wrk, keep-alive, c=50):
#   direct            — the OpenAI-compatible stub (`taogate dev`'s owner-gateway stand-in)
#   taogate unlimited — gateway + pool + worker to the same stub; the key has no limits (no Redis call)
#   taogate limited   — same key with 4 limits (key rpm + tpm, tenant rpm + concurrency): one
#                       EVALSHA to admit, one to settle
#   taogate metered   — limited, plus a priced default plan and a postpaid account: each request
#                       also holds money in the same EVALSHA, is journaled, charged and posted
# Also prints Redis round trips (EVALSHA calls) per request from Redis' own `INFO commandstats`.
# Needs: wrk (apt), psql, a local PostgreSQL and Redis. Usage: bench/limits.sh [seconds, default 10]
# BENCH_C sets the number of connections (default 50). BENCH_BIN runs another taogate binary (to
# compare two builds back to back) instead of building this tree's.
# BENCH_RATES="250 500 1000" adds open-loop rows (bench/openloop.rs): at each fixed rate, over
# BENCH_C connections, direct and metered side by side — latency below saturation, where wrk's
# closed loop only shows queueing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conc="${BENCH_C:-50}"
threads=$(( conc < 2 ? 1 : 2 ))
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk"; exit 1; }
cargo build --release --quiet --bin taogate --example openloop
bin=${BENCH_BIN:-target/release/taogate}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
redis=${BENCH_REDIS:-redis://127.0.0.1:6379}
db="taogate_bench_$RANDOM"
prefix="tg-bench-$RANDOM:"
dir=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  sleep 0.5
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
psql -q "$pg/postgres" -c "CREATE DATABASE $db" >/dev/null
[ -n "${BENCH_PG_ASYNC_COMMIT:-}" ] && psql -q "$pg/postgres" -c "ALTER DATABASE $db SET synchronous_commit = off" >/dev/null
port=$((20000 + RANDOM % 20000))
DATABASE_URL="$pg/$db" REDIS_URL="$redis" TAOGATE_REDIS_PREFIX="$prefix" RUST_LOG=warn \
  "$bin" dev --listen "127.0.0.1:$port" --data-dir "$dir/data" --token-delay-ms 0 >"$dir/dev.log" 2>&1 &
gateway=$!
pids+=($gateway)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
[ -f "$dir/data/demo.json" ] || { echo "taogate dev did not start:"; cat "$dir/dev.log"; exit 1; }
sleep 3 # the in-process worker joins through Redis at the next registry sync
json() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
key=$(json "$dir/data/demo.json" api_key)
python3 bench/free_demo.py "http://127.0.0.1:$port" "$dir/data/demo.json" # the demo plan is priced
owner=$(json "$dir/data/devnet/subnet.json" owner_url)
owner_key=$(json "$dir/data/devnet/subnet.json" owner_api_key)
evalsha() { redis-cli -u "$redis" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }
# Redis' own time running the script (its server CPU for the limiter), in µs, summed over calls.
script_usec() { redis-cli -u "$redis" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p'; }

# CPU time of the taogate process (user + system, clock ticks): the gateway, its worker and the
# in-process stand-in. Per request it is a cost that does not move with this VM's timing noise.
ticks() { awk '{print $14 + $15}' "/proc/$gateway/stat"; }
hz=$(getconf CLK_TCK)
summary() { # load generator's JSON line, ticks before -> "rps p50 p99 errors requests cpu_us_per_request"
  python3 -c "import json,sys;d=json.loads(sys.argv[1]);n=max(d['requests'],1)
print(d['rps'],d['p50_us'],d['p99_us'],d['errors']+d.get('non2xx',0),d['requests'],round((int(sys.argv[3])-int(sys.argv[2]))*1e6/int(sys.argv[4])/n))" "$1" "$2" "$(ticks)" "$hz"
}
run() { # name url key -> "rps p50 p99 errors requests cpu_us_per_request"
  local out before
  before=$(ticks)
  out=$(KEY="$3" MODEL=taogate-owner STREAM=false wrk -t"$threads" -c"$conc" -d"${secs}s" -s bench/chat.lua "$2" | tail -n 1)
  summary "$out" "$before"
}
row() { # name rps p50 p99 errors base50 base99 cpu
  printf '| %s | %s | %.0f | %.3f | %.3f | %s | %.3f | %.3f | %s |\n' "$1" "$conc" "$2" "$(echo "$3/1000" | bc -l)" \
    "$(echo "$4/1000" | bc -l)" "$5" "$(echo "($3-$6)/1000" | bc -l)" "$(echo "($4-$7)/1000" | bc -l)" "${8:-}"
}
echo "| target | c | rps | p50 ms | p99 ms | errors | added p50 ms | added p99 ms | taogate process CPU µs/request |"
echo "|---|---|---|---|---|---|---|---|---|"
read -r rps b50 b99 errs _ cpu < <(run direct "$owner/v1/chat/completions" "$owner_key")
row direct "$rps" "$b50" "$b99" "$errs" "$b50" "$b99" "$cpu (stand-in only)"
read -r rps p50 p99 errs _ cpu < <(run unlimited "http://127.0.0.1:$port/v1/chat/completions" "$key")
row "taogate unlimited" "$rps" "$p50" "$p99" "$errs" "$b50" "$b99" "$cpu"
# Limits through the database, then the same invalidation the API publishes.
tenant=$(psql -qtA "$pg/$db" -c "SELECT tenant_id FROM api_keys LIMIT 1")
psql -q "$pg/$db" -c "UPDATE api_keys SET limits = '{\"rpm\": 1000000000, \"tpm\": 1000000000000}'" >/dev/null
psql -q "$pg/$db" -c "UPDATE tenants SET limits = '{\"rpm\": 1000000000, \"concurrency\": 100000}'" >/dev/null
redis-cli -u "$redis" PUBLISH "${prefix}invalidate" "tenant:$tenant" >/dev/null
curl -s -o /dev/null -D "$dir/h" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"model":"taogate-owner","messages":[{"role":"user","content":"hi"}]}' "http://127.0.0.1:$port/v1/chat/completions"
grep -qi '^x-ratelimit-limit-requests: 1000000000' "$dir/h" || { echo "limits not in force"; cat "$dir/h"; exit 1; }
before=$(evalsha)
read -r rps p50 p99 errs limited_requests cpu < <(run limited "http://127.0.0.1:$port/v1/chat/completions" "$key")
sleep 1 # settles run just after the responses
after=$(evalsha)
row "taogate limited" "$rps" "$p50" "$p99" "$errs" "$b50" "$b99" "$cpu"
# Prices and a postpaid credit line: holds, captures and ledger postings on every request.
psql -q "$pg/$db" -c "UPDATE plans SET is_default = false" >/dev/null
psql -q "$pg/$db" -c "INSERT INTO plans (id, tenant_id, name, key_limits, account_limits, is_default, created_at, updated_at, prices)
  VALUES ('bench-plan', '$tenant', 'bench', '{}', '{}', true, now(), now(),
  '{\"*\": {\"prompt_nano_per_mtok\": 1000000000, \"completion_nano_per_mtok\": 2000000000, \"request_nano\": 1000}}')" >/dev/null
psql -q "$pg/$db" -c "UPDATE accounts SET billing_mode = 'postpaid', credit_limit_nano = 1000000000000000000" >/dev/null
redis-cli -u "$redis" PUBLISH "${prefix}invalidate" "tenant:$tenant" >/dev/null
sleep 0.5
usec_before=$(script_usec)
read -r rps p50 p99 errs requests cpu < <(run metered "http://127.0.0.1:$port/v1/chat/completions" "$key")
sleep 1
usec_after=$(script_usec)
row "taogate metered" "$rps" "$p50" "$p99" "$errs" "$b50" "$b99" "$cpu"
sleep 2
charged=$(psql -qtA "$pg/$db" -c "SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'usage'")
echo
echo "Metered run: $requests requests answered, $charged usage postings in the ledger"
echo
echo "Redis time in the limiter script (metered run): $(printf '%.1f' "$(echo "($usec_after-$usec_before)/$requests" | bc -l)") µs per request"
echo
echo "Redis round trips (limited run): $((after - before)) EVALSHA for $limited_requests requests = $(printf '%.3f' "$(echo "($after-$before)/$limited_requests" | bc -l)") per request (1 admission + 1 settle)"
[ -n "${BENCH_RATES:-}" ] && { echo; echo "Open loop (fixed rate, $conc connections, latency from when each request was due):"; echo; echo "| target | c | rps | p50 ms | p99 ms | errors | added p50 ms | added p99 ms | taogate process CPU µs/request |"; echo "|---|---|---|---|---|---|---|---|---|"; }
for rate in ${BENCH_RATES:-}; do
  open() { # url key -> "rps p50 p99 errors requests cpu_us_per_request"
    local out before
    before=$(ticks)
    out=$(target/release/examples/openloop "$1" "$2" "$rate" "$secs" "$conc")
    summary "$out" "$before"
  }
  read -r rps b50 b99 errs _ cpu < <(open "$owner/v1/chat/completions" "$owner_key")
  row "direct @ $rate/s" "$rps" "$b50" "$b99" "$errs" "$b50" "$b99" "$cpu (stand-in only)"
  read -r rps p50 p99 errs _ cpu < <(open "http://127.0.0.1:$port/v1/chat/completions" "$key")
  row "taogate metered @ $rate/s" "$rps" "$p50" "$p99" "$errs" "$b50" "$b99" "$cpu"
done

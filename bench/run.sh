#!/usr/bin/env bash
# Side-by-side latency of the data plane, same machine, same run (wrk, keep-alive):
#   direct  — the OpenAI-compatible stub (`taogate dev`'s owner gateway stand-in, no token delay)
#   nginx   — nginx reverse proxy in front of the same stub
#   taogate — API-key auth + gateway + worker pool + worker + openai transport, to the same stub
# at concurrency 1 and 50, non-stream and stream. Prints a markdown table with p50/p99 and the
# latency taogate adds over direct. Needs: wrk (apt), nginx (apt, optional), a release build.
# Usage: bench/run.sh [seconds-per-run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk"; exit 1; }
cargo build --release --quiet --bin taogate
dir=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null; rm -rf "$dir"; }
pids=()
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
RUST_LOG=warn target/release/taogate dev --listen "127.0.0.1:$port" --data-dir "$dir/data" --token-delay-ms 0 >"$dir/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
key=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['api_key'])" "$dir/data/demo.json")
python3 bench/free_demo.py "http://127.0.0.1:$port" "$dir/data/demo.json" # the demo plan is priced
owner=$(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(d['owner_url'])" "$dir/data/devnet/subnet.json")
owner_key=$(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(d['owner_api_key'])" "$dir/data/devnet/subnet.json")
targets=("direct|$owner/v1/chat/completions|$owner_key")
if command -v nginx >/dev/null; then
  nport=$((port + 1))
  mkdir -p "$dir"/{body,proxy,fastcgi,uwsgi,scgi}
  sed -e "s|__PORT__|$nport|; s|__UPSTREAM__|${owner#http://}|; s|__DIR__|$dir|g" bench/nginx.conf >"$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir" &
  pids+=($!)
  sleep 0.5
  targets+=("nginx|http://127.0.0.1:$nport/v1/chat/completions|$owner_key")
fi
targets+=("taogate|http://127.0.0.1:$port/v1/chat/completions|$key")

declare -A p50
echo "| target | stream | c | rps | p50 ms | p90 ms | p99 ms | errors | added p50 ms | added p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for stream in false true; do
  for c in 1 50; do
    for t in "${targets[@]}"; do
      IFS='|' read -r name url k <<<"$t"
      threads=$(( c < 2 ? 1 : 2 ))
      out=$(KEY="$k" MODEL=taogate-owner STREAM="$stream" wrk -t"$threads" -c"$c" -d"${secs}s" -s bench/chat.lua "$url" | tail -n 1)
      read -r rps q50 q90 q99 errs < <(python3 -c "import json,sys;d=json.loads(sys.argv[1]);print(d['rps'],d['p50_us'],d['p90_us'],d['p99_us'],d['errors']+d['non2xx'])" "$out")
      if [ "$name" = direct ]; then base50=$q50; base99=$q99; fi
      printf '| %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s |\n' "$name" "$stream" "$c" "$rps" \
        "$(echo "$q50/1000" | bc -l)" "$(echo "$q90/1000" | bc -l)" "$(echo "$q99/1000" | bc -l)" "$errs" \
        "$(printf '%.3f' "$(echo "($q50-$base50)/1000" | bc -l)")" "$(printf '%.3f' "$(echo "($q99-$base99)/1000" | bc -l)")"
    done
  done
done

#!/usr/bin/env bash
# Side-by-side latency of the data plane, same machine, same run (wrk, keep-alive):
#   direct  — the OpenAI-compatible stub (`taogate dev`'s owner gateway stand-in, no token delay)
#   nginx   — nginx reverse proxy in front of the same stub
#   taogate — API-key auth + gateway + worker pool + worker + openai transport, to the same stub
# at concurrency 1 and 50, non-stream and stream. Prints a markdown table with p50/p99, the
# latency taogate adds over direct, and CPU time per request: of the `taogate dev` process (which
# also runs the stand-in: its "direct" rows are the stand-in's own share) and of nginx; the
# gateway + worker share is the taogate row's minus the direct row's. Needs: wrk (apt), nginx
# (apt, optional), a release build. BENCH_BIN runs another taogate binary (to compare builds).
# Usage: bench/run.sh [seconds-per-run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk"; exit 1; }
bin=${BENCH_BIN:-target/release/taogate}
[ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin taogate
dir=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null; rm -rf "$dir"; }
pids=()
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
RUST_LOG=warn "$bin" dev --listen "127.0.0.1:$port" --data-dir "$dir/data" --token-delay-ms 0 >"$dir/dev.log" 2>&1 &
pids+=($!)
dev_pid=$!
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

# CPU ticks (user + system) of the given processes, all their threads.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
nginx_pids() { [ -f "$dir/nginx.pid" ] || return 0; local m; m=$(cat "$dir/nginx.pid"); echo "$m" $(pgrep -P "$m"); }
declare -A p50
echo "| target | stream | c | rps | p50 ms | p90 ms | p99 ms | errors | added p50 ms | added p99 ms | dev process CPU µs/req | nginx CPU µs/req | gateway+worker CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for stream in false true; do
  for c in 1 50; do
    for t in "${targets[@]}"; do
      IFS='|' read -r name url k <<<"$t"
      threads=$(( c < 2 ? 1 : 2 ))
      ng=($(nginx_pids))
      d0=$(ticks "$dev_pid"); n0=$(ticks "${ng[@]}")
      out=$(KEY="$k" MODEL=taogate-owner STREAM="$stream" wrk -t"$threads" -c"$c" -d"${secs}s" -s bench/chat.lua "$url" | tail -n 1)
      d1=$(ticks "$dev_pid"); n1=$(ticks "${ng[@]}")
      read -r rps q50 q90 q99 errs reqs < <(python3 -c "import json,sys;d=json.loads(sys.argv[1]);print(d['rps'],d['p50_us'],d['p90_us'],d['p99_us'],d['errors']+d['non2xx'],d.get('requests',0))" "$out")
      [ "$reqs" -gt 0 ] || reqs=$(printf '%.0f' "$(echo "$rps*$secs" | bc -l)")
      dev_us=$(echo "($d1-$d0)*1000000/$hz/$reqs" | bc -l)
      nginx_us=$(echo "($n1-$n0)*1000000/$hz/$reqs" | bc -l)
      if [ "$name" = direct ]; then base50=$q50; base99=$q99; base_us=$dev_us; fi
      own="-"; [ "$name" = taogate ] && own=$(printf '%.1f' "$(echo "$dev_us-$base_us" | bc -l)")
      ng_col="-"; [ "$name" = nginx ] && ng_col=$(printf '%.1f' "$nginx_us")
      printf '| %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s | %.1f | %s | %s |\n' "$name" "$stream" "$c" "$rps" \
        "$(echo "$q50/1000" | bc -l)" "$(echo "$q90/1000" | bc -l)" "$(echo "$q99/1000" | bc -l)" "$errs" \
        "$(printf '%.3f' "$(echo "($q50-$base50)/1000" | bc -l)")" "$(printf '%.3f' "$(echo "($q99-$base99)/1000" | bc -l)")" \
        "$dev_us" "$ng_col" "$own"
    done
  done
done

#!/usr/bin/env bash
# Fan-out cost of one request to n=5 real bt.Axon miners (bittensor 10.5.0, .venv-bt10 from
# scripts/test): the release `taogate worker` (best_of over all 5; and one axon alone as the miners'
# own time) beside Python's bt.Dendrite querying the same axons, in the same run.
# Usage: bench/fanout.sh [requests, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100}"
py=.venv-bt10/bin/python
[ -x "$py" ] || { echo "run scripts/test once first (creates .venv-bt10)"; exit 1; }
cargo build --release --quiet --bin taogate
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
neurons=()
for uid in 1 2 3 4 5; do
  "$py" -W ignore tests/py/bt_axon_miner.py >"$dir/axon$uid.json" 2>/dev/null &
  pids+=($!)
done
for uid in 1 2 3 4 5; do
  for _ in $(seq 1 100); do [ -s "$dir/axon$uid.json" ] && break; sleep 0.2; done
done
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
neurons = []
for uid in range(1, 6):
    a = json.loads(open(f"{d}/axon{uid}.json").readline())
    neurons.append({"uid": uid, "hotkey": a["hotkey"], "ip": "127.0.0.1", "port": int(a["url"].rsplit(":", 1)[1]), "incentive": 1.0})
json.dump({"netuid": 1, "neurons": neurons}, open(f"{d}/all.json", "w"))
json.dump({"netuid": 1, "neurons": neurons[:1]}, open(f"{d}/one.json", "w"))
PY
mkdir -p "$dir/wallets/bench/hotkeys"
"$py" -c "import sys; from bittensor_wallet import Wallet; Wallet(name='bench', hotkey='worker', path=sys.argv[1]).create_new_hotkey(use_password=False, overwrite=True, suppress=True)" "$dir/wallets"
cat >"$dir/worker.toml" <<TOML
[worker]
listen = "127.0.0.1:0"
secret = "bench-worker-secret-0123"
wallet_path = "$dir/wallets"
wallet_name = "bench"
hotkey_name = "worker"
first_byte_timeout_ms = 10000
[[worker.routes]]
model = "all"
[[worker.routes.upstreams]]
kind = "axon"
name = "five-axons"
metagraph_file = "$dir/all.json"
race = 5
strategy = "best_of"
[[worker.routes]]
model = "one"
[[worker.routes.upstreams]]
kind = "axon"
name = "one-axon"
metagraph_file = "$dir/one.json"
race = 1
TOML
RUST_LOG=warn target/release/taogate --config "$dir/worker.toml" worker >"$dir/worker.json" 2>"$dir/worker.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/worker.json" ] && break; sleep 0.1; done
url=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['url'])" "$dir/worker.json")
"$py" -W ignore bench/fanout_dendrite.py "$url" bench-worker-secret-0123 "$dir/all.json" "$n"

#!/bin/bash
# model_bench's bursty open loop against echo_server: calls are sent in bursts only (none between
# them without --burst-off-rate), at both rates with it, and the JSON report splits the latency by
# burst phase. Counts calls, not times: the rates are low enough for a loaded machine.
# Usage: bursty_test.sh ECHO_SERVER MODEL_BENCH
set -euo pipefail
echo_bin=$1 bench_bin=$2
here=$(dirname "$0")
source "$here/../lib.sh"
with_scratch_dir

"$echo_bin" --address 127.0.0.1:0 --cq-threads 1 >"$work/echo.log" 2>&1 &
server_pid=$!
port=$(wait_for_port "$work/echo.log" 'listening on port ([0-9]+)' "$server_pid")

# 0.4 s bursts at 500 req/s, then 1.6 s of nothing: 3 periods in 6 s (warm-up 0).
"$bench_bin" --target "127.0.0.1:$port" --rate 500 --arrivals constant --burst 0.4,1.6 \
  --duration 6 --warmup 0 --json "$work/bursts.json" >"$work/bursts.txt"
assert_no_errors "$work/bursts.json"
grep -q "by burst phase" "$work/bursts.txt" || fail "no burst phase table: $(cat "$work/bursts.txt")"
# The same with 100 req/s between bursts.
"$bench_bin" --target "127.0.0.1:$port" --rate 500 --arrivals constant --burst 0.4,1.6 \
  --burst-off-rate 100 --duration 6 --warmup 0 --json "$work/between.json" >/dev/null
assert_no_errors "$work/between.json"
/usr/bin/python3 - "$work/bursts.json" "$work/between.json" <<'PY' || fail "bursts not as asked"
import json, sys
def phases(path):
    step = json.load(open(path))["steps"][0]
    return {name: phase["calls"] for name, phase in step["phases"].items()}, step["ok"]
bursts, ok = phases(sys.argv[1])
print("bursts only:", bursts, ok)
# 3 bursts x 0.4 s x 500/s = 600 calls, all in bursts.
assert 540 <= bursts["burst"] <= 660, bursts
assert bursts["after_burst_first_1s"] == 0 and bursts["after_burst_later"] == 0, bursts
assert ok == sum(bursts.values())
between, _ = phases(sys.argv[2])
print("with 100/s between:", between)
# Between bursts: 3 x 1.6 s x 100/s = 480 calls, 300 within a second of a burst, 180 later.
assert 540 <= between["burst"] <= 660, between
assert 270 <= between["after_burst_first_1s"] <= 330, between
assert 160 <= between["after_burst_later"] <= 200, between
PY
echo "PASS"

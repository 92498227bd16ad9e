#!/usr/bin/env bash
# Latency at low concurrency (docs/BENCHMARKS.md, "Latency at low concurrency"): the seed's
# client pattern — one connection, C calls in flight, 50-row payloads with distinct parameters,
# the demo model — against the echo server (the transport's limit), model_server as it runs by
# default (a lone call runs to completion on the thread that received it), model_server with
# that off (--idle-max-forward-us 0: every call through the codec pool and the batch thread, as
# before issue 24) and the seed-built Python peer. Servers run alternately within each round;
# the summary quotes medians over rounds. Server on CPU 0, model_bench on CPU 1.
#
#   bench/latency.sh [BUILD_DIR] [OUT_DIR]
#
# Env: ROUNDS (3), DURATION (5 s per step), WARMUP (1 s), CONCURRENCIES ("1 4 16 64"), NICE (-10,
# as root). Writes OUT_DIR/summary.md (default BUILD_DIR/latency) with the load average before
# and after, and the raw model_bench JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-$build/latency}
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
warmup=${WARMUP:-1}
read -ra concurrencies <<<"${CONCURRENCIES:-1 4 16 64}"
nice -n "${NICE:--10}" true 2>/dev/null && pin=(nice -n "${NICE:--10}" taskset -c) || pin=(taskset -c)
rm -rf "$out"
mkdir -p "$out/raw" "$out/logs"
"$build/server/model_server" --export-demo-model "$out/demo.pt" --log-level warn
echo "before $(cut -d' ' -f1-3 /proc/loadavg)" >"$out/loadavg.txt"

server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT

# start KIND NAME: the server on CPU 0; sets server_pid and port.
start() {
  local log=$out/logs/$2.log
  case $1 in
    echo) "${pin[@]}" 0 "$build/bench/echo_server" --address 127.0.0.1:0 >"$log" 2>&1 & ;;
    ours) "${pin[@]}" 0 "$build/server/model_server" --address 127.0.0.1:0 \
            --metrics-address "" >"$log" 2>&1 & ;;
    batched) "${pin[@]}" 0 "$build/server/model_server" --address 127.0.0.1:0 \
               --metrics-address "" --idle-max-forward-us 0 >"$log" 2>&1 & ;;
    peer) "${pin[@]}" 0 /usr/bin/python3 bench/seed_peer/seed_server.py --model "$out/demo.pt" \
            --address 127.0.0.1:0 >"$log" 2>&1 & ;;
  esac
  server_pid=$!
  for _ in $(seq 1200); do
    if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then
      port=${BASH_REMATCH[1]}
      return
    fi
    kill -0 $server_pid 2>/dev/null || { echo "$2 exited: $(tail -3 "$log")" >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 did not start" >&2
  exit 1
}

stop() {
  kill -TERM $server_pid
  wait $server_pid || true
  server_pid=
}

for round in $(seq "$rounds"); do
  for kind in echo ours batched peer; do
    start $kind "${kind}_r$round"
    for c in "${concurrencies[@]}"; do
      "${pin[@]}" 1 "$build/bench/model_bench" --target "127.0.0.1:$port" --connections 1 \
        --concurrency "$c" --distinct-params --duration "$duration" --warmup "$warmup" \
        --json "$out/raw/${kind}_c${c}_r$round.json" >>"$out/logs/bench.txt"
    done
    stop
  done
done
echo "after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/loadavg.txt"

/usr/bin/python3 - "$out" "$rounds" "${concurrencies[@]}" <<'EOF' | tee "$out/summary.md"
import json, statistics, sys
out, rounds, concurrencies = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3:]]
names = {"echo": "echo server", "ours": "model_server", "batched": "model_server, idle path off",
         "peer": "seed-built Python peer"}
def step(kind, c, r):
    return json.load(open(f"{out}/raw/{kind}_c{c}_r{r}.json"))["steps"][0]
print("| concurrency | server | req/s | p50 µs | p99 µs | errors |")
print("|---:|---|---:|---:|---:|---:|")
for c in concurrencies:
    for kind, name in names.items():
        steps = [step(kind, c, r) for r in range(1, rounds + 1)]
        rps = statistics.median(s["throughput_rps"] for s in steps)
        p50 = statistics.median(s["latency_ms"]["p50"] for s in steps) * 1000
        p99 = statistics.median(s["latency_ms"]["p99"] for s in steps) * 1000
        errors = sum(sum(s["errors"].values()) for s in steps)
        print(f"| {c} | {name} | {rps:.0f} | {p50:.0f} | {p99:.0f} | {errors} |")
print()
print(open(f"{out}/loadavg.txt").read().replace("\n", "; ").strip("; "))
EOF

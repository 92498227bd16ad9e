#!/usr/bin/env bash
# The same 50-row workload over the seed's JSON (ModelService.EvaluateModel) and the Open
# Inference Protocol (GRPCInferenceService.ModelInfer, raw FP32 tensors), against the echo
# server (the transport's limit): docs/BENCHMARKS.md, "Open Inference Protocol vs the seed's
# JSON".
#
#   bench/cost/protocols.sh BUILD_DIR OUT_DIR
#
# 1. Instructions per request, per thread, under callgrind (run_cost.sh): the near-free model over
#    each protocol, and echo. These do not move with machine load.
# 2. Throughput and latency with the server on CPU 0 and model_bench on CPU 1: the demo model over
#    each protocol, and echo, alternated within each round, each on a fresh server; concurrency 64,
#    2 connections, distinct parameters. The 1-minute load average is recorded with every run.
# Env: ROUNDS (3), DURATION (5 s), REQUESTS (2000, callgrind), NICE (-10).
# Writes OUT_DIR/summary.md and the raw figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1
out=$2
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
mkdir -p "$out/raw"
nice -n "${NICE:--10}" true 2>/dev/null && pin=(nice -n "${NICE:--10}" taskset -c) || pin=(taskset -c)

for protocol in seed oip; do
  PROTOCOL=$protocol bench/cost/run_cost.sh "$build" "$out/cost" ours 1 >/dev/null
done
bench/cost/run_cost.sh "$build" "$out/cost" echo 1 >/dev/null

server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT
for round in $(seq "$rounds"); do
  for run in seed oip echo; do
    log=$out/raw/$run-r$round.log
    if [[ $run == echo ]]; then
      "${pin[@]}" 0 "$build/bench/echo_server" --address 127.0.0.1:0 >"$log" 2>&1 &
    else
      "${pin[@]}" 0 "$build/server/model_server" --address 127.0.0.1:0 --metrics-address "" \
        >"$log" 2>&1 &
    fi
    server_pid=$!
    port=
    for _ in $(seq 600); do
      if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then port=${BASH_REMATCH[1]}; break; fi
      sleep 0.1
    done
    [[ -n $port ]] || { echo "$run did not start" >&2; cat "$log" >&2; exit 1; }
    protocol=seed
    [[ $run == oip ]] && protocol=oip
    "${pin[@]}" 1 "$build/bench/model_bench" --target "127.0.0.1:$port" --protocol "$protocol" \
      --connections 2 --distinct-params --rows 50 --concurrency 64 --duration "$duration" \
      --warmup 1 --json "$out/raw/$run-r$round.json" >/dev/null 2>&1
    cut -d' ' -f1 /proc/loadavg >"$out/raw/$run-r$round.load"
    kill -TERM $server_pid
    wait $server_pid || true
    server_pid=
  done
done

/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def cost(name):
    with open(f"{out}/cost/{name}.json") as f:
        return json.load(f)
lines = ["| server | instructions/request (all threads) | busiest thread | its instructions/request |",
         "|---|---:|---|---:|"]
for label, name in (("ours, seed JSON", "ours-c1"), ("ours, OIP raw", "ours-oip-c1"),
                    ("echo", "echo-c1")):
    c = cost(name)
    lines.append(f"| {label} | {c['total_per_request']:,.0f} | {c['busiest']['role']} | "
                 f"{c['busiest']['per_request']:,.0f} |")
lines += ["", "| run | req/s (median) | per round | p50 ms | p99 ms | load average per round |",
          "|---|---:|---|---:|---:|---|"]
for run in ("seed", "oip", "echo"):
    results, loads = [], []
    for r in range(1, rounds + 1):
        with open(f"{out}/raw/{run}-r{r}.json") as f:
            step = json.load(f)["steps"][0]
        results.append(step)
        with open(f"{out}/raw/{run}-r{r}.load") as f:
            loads.append(f.read().strip())
    rates = [s["throughput_rps"] for s in results]
    best = sorted(results, key=lambda s: s["throughput_rps"])[len(results) // 2]
    lines.append(f"| {run} | {statistics.median(rates):.0f} | {' '.join(f'{x:.0f}' for x in rates)} | "
                 f"{best['latency_ms']['p50']:.2f} | {best['latency_ms']['p99']:.2f} | {' '.join(loads)} |")
text = "\n".join(lines) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
PY

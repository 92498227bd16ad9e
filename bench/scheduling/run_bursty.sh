#!/bin/bash
# The bursty open-loop benchmarks of issue 25 (docs/BENCHMARKS.md, "Scheduling under bursts"):
#   bench/scheduling/run_bursty.sh [BUILD_DIR] [OUT_DIR]
#
# A. Priorities. The demo model, served twice from a model repository ("flood" and "urgent",
#    each with priority_levels 2 and one instance). First its capacity C (closed loop, requests
#    of ROWS rows, req/s). Then "urgent" alone at 0.1 C with priority 1: its p99 on an idle
#    server. Then the same urgent load while "flood" gets bursts at 2 C (BURST seconds on, off;
#    0.5 C between bursts) with priority 2: two models, as the issue asks. Then both loads on
#    one model ("flood"), where the two priority levels share one queue. Checks: the urgent p99
#    stays within 2x its idle p99, and no accepted call is lost (every call is OK or refused at
#    once with RESOURCE_EXHAUSTED / UNAVAILABLE: no DEADLINE_EXCEEDED, CANCELLED, UNKNOWN).
# B. The latency objective. The same bursty load (2 C in bursts, 0.5 C between) on one model,
#    for each fixed max_queue_delay_microseconds in DELAYS, then for the objective
#    (latency_objective_p99_microseconds OBJECTIVE_US) instead: req/s served, p99, and the p99 of
#    the calls sent within a second after a burst and later (recovery).
#
# Protocol as bench/run_benchmarks.sh: the server on CPU 0, the load generators on CPU 1; a
# quiet machine (load average < 1 before and after; both are written to the summary).
# Environment: DURATION (20 s per run), WARMUP (2 s), ROWS (1 row per request), BURST (1,2:
# seconds on, off), DELAYS (0,250,500,1000,2000,5000 us), OBJECTIVE_US (5000), CAPACITY (req/s;
# measured when empty).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-$build/bursty-results}
duration=${DURATION:-20}
warmup=${WARMUP:-2}
rows=${ROWS:-1}
burst=${BURST:-1,2}
delays=${DELAYS:-0,250,500,1000,2000,5000}
objective_us=${OBJECTIVE_US:-5000}
server_cpu=0
load_cpu=1

model_server=$build/server/model_server
model_bench=$build/bench/model_bench/model_bench
[[ -x $model_bench ]] || model_bench=$build/bench/model_bench
for binary in "$model_server" "$model_bench"; do
  [[ -x $binary ]] || { echo "missing $binary: build first (cmake --build $build)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/raw" "$out/logs" "$out/models"
"$model_server" --export-demo-model "$out/demo.pt" --log-level warn
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$out/summary.md"

# model NAME CONFIG: a repository model serving the demo model with CONFIG's dynamic_batching
# and parameters.
model() {
  mkdir -p "$out/models/$1/1"
  ln -sf "$(realpath "$out/demo.pt")" "$out/models/$1/1/model.pt"
  cat >"$out/models/$1/config.pbtxt" <<EOF
platform: "pytorch_libtorch"
max_batch_size: 4096
instance_group [ { count: 1 kind: KIND_CPU } ]
$2
EOF
}
levels='priority_levels: 2 default_priority_level: 2'
model flood "dynamic_batching { $levels }"
model urgent "dynamic_batching { $levels }"
for delay in ${delays//,/ }; do
  model "delay$delay" "dynamic_batching { max_queue_delay_microseconds: $delay }"
done
model objective "dynamic_batching { }
parameters { key: \"latency_objective_p99_microseconds\" value: { string_value: \"$objective_us\" } }"

server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT
metrics_port=$((20000 + RANDOM % 20000))
taskset -c $server_cpu "$model_server" --address 127.0.0.1:0 --model-repository "$out/models" \
  --metrics-address "127.0.0.1:$metrics_port" --torch-threads 1 --cq-threads 1 \
  --codec-threads 1 >"$out/logs/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1200); do
  [[ $(cat "$out/logs/server.log") =~ listening\ on\ port\ ([0-9]+) ]] && break
  kill -0 $server_pid 2>/dev/null || { echo "server exited: $(tail -3 "$out/logs/server.log")" >&2; exit 1; }
  sleep 0.1
done
port=${BASH_REMATCH[1]}
common=(--target "127.0.0.1:$port" --protocol oip --rows "$rows" --distinct-params
        --warmup "$warmup" --duration "$duration" --threads 1)

# bench NAME MODEL [FLAGS...]: one model_bench run on $load_cpu, JSON in raw/NAME.json.
bench() {
  local name=$1 model=$2
  shift 2
  taskset -c $load_cpu "$model_bench" "${common[@]}" --model "$model" "$@" \
    --json "$out/raw/$name.json" >"$out/logs/$name.txt" 2>&1
}

capacity=${CAPACITY:-}
if [[ -z $capacity ]]; then
  bench capacity flood --concurrency 64
  capacity=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['steps'][0]['throughput_rps']))" "$out/raw/capacity.json")
fi
flood_rate=$((capacity * 2))
off_rate=$((capacity / 2))
urgent_rate=$((capacity / 10))
echo "capacity: $capacity req/s; flood $flood_rate req/s in bursts ($burst s on,off), $off_rate between; urgent $urgent_rate req/s" | tee -a "$out/summary.md"

# A. Priorities.
bench urgent_idle urgent --rate "$urgent_rate" --priority 1
bench flood_two_models flood --rate "$flood_rate" --burst "$burst" --burst-off-rate "$off_rate" \
  --priority 2 &
flood_pid=$!
bench urgent_two_models urgent --rate "$urgent_rate" --priority 1
wait $flood_pid
bench flood_one_model flood --rate "$flood_rate" --burst "$burst" --burst-off-rate "$off_rate" \
  --priority 2 &
flood_pid=$!
bench urgent_one_model flood --rate "$urgent_rate" --priority 1
wait $flood_pid

# B. The latency objective against fixed delays.
for delay in ${delays//,/ }; do
  bench "objective_sweep_delay$delay" "delay$delay" --rate "$flood_rate" --burst "$burst" \
    --burst-off-rate "$off_rate"
done
bench objective_sweep_objective objective --rate "$flood_rate" --burst "$burst" \
  --burst-off-rate "$off_rate"
curl -s "http://127.0.0.1:$metrics_port/metrics" >"$out/raw/metrics.txt" || true
kill -TERM $server_pid
wait $server_pid || true
server_pid=

python3 - "$out" "$objective_us" "$delays" >>"$out/summary.md" <<'EOF'
import json, os, sys
out, objective_us, delays = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
def step(name):
    return json.load(open(os.path.join(out, "raw", name + ".json")))["steps"][0]
refusals = {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
idle = step("urgent_idle")["latency_ms"]["p99"]
print(f"\n## A. Priorities (urgent p99 on an idle server: {idle:.3f} ms)\n")
print("| layout | urgent p99 ms | within 2x idle | flood ok req/s | flood refused | calls lost |")
print("| --- | --- | --- | --- | --- | --- |")
for layout in ("two_models", "one_model"):
    urgent, flood = step("urgent_" + layout), step("flood_" + layout)
    lost = sum(n for s in (urgent, flood) for code, n in s["errors"].items() if code not in refusals)
    refused = sum(n for code, n in flood["errors"].items() if code in refusals)
    p99 = urgent["latency_ms"]["p99"]
    print(f"| {layout.replace('_', ' ')} | {p99:.3f} | {'yes' if p99 <= 2 * idle else 'NO'} | "
          f"{flood['throughput_rps']:.0f} | {refused} | {lost} |")
print(f"\n## B. Latency objective {objective_us / 1000:g} ms against fixed delays (same bursty load)\n")
print("| batching | ok req/s | p99 ms | meets | p99 first 1 s after a burst | p99 later | refused |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name in [f"delay{d}" for d in delays] + ["objective"]:
    s = step("objective_sweep_" + name)
    phases = s.get("phases", {})
    p99 = s["latency_ms"]["p99"]
    label = f"max_queue_delay {name[5:]} us" if name != "objective" else "latency objective"
    print(f"| {label} | {s['throughput_rps']:.0f} | {p99:.3f} | "
          f"{'yes' if p99 <= objective_us / 1000 else 'no'} | "
          f"{phases.get('after_burst_first_1s', {}).get('p99_ms', 0):.3f} | "
          f"{phases.get('after_burst_later', {}).get('p99_ms', 0):.3f} | "
          f"{sum(s['errors'].values())} |")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/summary.md"
cat "$out/summary.md"

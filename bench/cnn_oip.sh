#!/usr/bin/env bash
# A small CNN ([n, 3, 32, 32] -> [n, 10], random weights; test/python/torch_models.py "cnn") from
# a model repository, served through the Open Inference Protocol at concurrency 64 (IMAGES per
# request) with the server on one core, against the in-process forward pass of the same model at
# the batch size the server's batcher settled on (docs/BENCHMARKS.md, "A repository CNN through
# OIP"; the target: served images/s >= 80 % of the forward's).
#
#   bench/cnn_oip.sh [BUILD_DIR] [OUT_DIR]
#
# BUILD_DIR (default build) must hold server/model_server, bench/model_bench and
# bench/model_forward_bench. The server runs on CPU 0 (its threads: completion queue, codec,
# batch), model_bench on CPU 1; each round runs the server, reads the batch sizes it formed from
# ModelStatistics (inference_count / execution_count over the measured step), then runs
# model_forward_bench on CPU 0 at that mean batch size and at the most frequent one. Env: ROUNDS
# (3), DURATION (10 s measured per step), WARMUP (3 s), CONCURRENCY (64), IMAGES (per request,
# 1), CONNECTIONS (4), DELAY (the config's max_queue_delay_microseconds, 0), MAX_BATCH (the
# config's max_batch_size, 64), NICE (-10, as root). Writes OUT_DIR/summary.md (default
# BUILD_DIR/cnn-oip) and the raw figures. Needs Debian's python3 with torch (the model) and
# grpcio (the statistics).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-$build/cnn-oip}
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
warmup=${WARMUP:-3}
concurrency=${CONCURRENCY:-64}
images=${IMAGES:-1}
connections=${CONNECTIONS:-4}
delay=${DELAY:-0}
max_batch=${MAX_BATCH:-64}
nice -n "${NICE:--10}" true 2>/dev/null && pin=(nice -n "${NICE:--10}" taskset -c) || pin=(taskset -c)
for binary in server/model_server bench/model_bench bench/model_forward_bench; do
  [[ -x $build/$binary ]] || { echo "missing $build/$binary: build it first" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/raw" "$out/repository/cnn/1" "$out/stubs"

cat >"$out/repository/cnn/config.pbtxt" <<EOF
platform: "pytorch_libtorch"
max_batch_size: $max_batch
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: $delay }
EOF
/usr/bin/python3 test/python/torch_models.py make "cnn=$out/repository/cnn/1/model.pt"
protoc --python_out="$out/stubs" --grpc_out="$out/stubs" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin -I protos grpc_predict_v2.proto \
  triton_extensions.proto model_config.proto

# statistics PORT FILE: the model's ModelStatistics as JSON.
statistics() {
  PYTHONPATH=$out/stubs /usr/bin/python3 - "$1" "$2" <<'EOF'
import sys, grpc, grpc_predict_v2_pb2_grpc, triton_extensions_pb2
from google.protobuf import json_format
stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}"))
reply = stub.ModelStatistics(triton_extensions_pb2.ModelStatisticsRequest(name="cnn"), timeout=10)
open(sys.argv[2], "w").write(json_format.MessageToJson(reply))
EOF
}

server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT
: >"$out/raw/loadavg.txt"
for round in $(seq "$rounds"); do
  log=$out/raw/server_r$round.log
  "${pin[@]}" 0 "$build/server/model_server" --model-repository "$out/repository" \
    --address 127.0.0.1:0 --metrics-address "" --torch-threads 1 >"$log" 2>&1 &
  server_pid=$!
  port=
  for _ in $(seq 600); do
    if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then port=${BASH_REMATCH[1]}; break; fi
    kill -0 $server_pid 2>/dev/null || { tail -5 "$log" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n $port ]] || { echo "server did not start" >&2; exit 1; }
  bench=("${pin[@]}" 1 "$build/bench/model_bench" --target "127.0.0.1:$port" --protocol oip
         --model cnn --input "INPUT__0:FP32:${images}x3x32x32" --connections "$connections"
         --concurrency "$concurrency" --warmup 0)
  "${bench[@]}" --duration "$warmup" >/dev/null
  statistics "$port" "$out/raw/stats_before_r$round.json"
  echo "server_r$round before $(cut -d' ' -f1 /proc/loadavg)" >>"$out/raw/loadavg.txt"
  "${bench[@]}" --duration "$duration" --check --json "$out/raw/server_r$round.json" \
    >"$out/raw/server_r$round.txt"
  echo "server_r$round after $(cut -d' ' -f1 /proc/loadavg)" >>"$out/raw/loadavg.txt"
  statistics "$port" "$out/raw/stats_after_r$round.json"
  kill -TERM $server_pid
  wait $server_pid || true
  server_pid=
  sizes=$(/usr/bin/python3 - "$out/raw/stats_before_r$round.json" \
    "$out/raw/stats_after_r$round.json" <<'EOF'
import json, sys
before, after = (json.load(open(path))["modelStats"][0] for path in sys.argv[1:3])
count = lambda stats, key: int(stats.get(key, 0))
inferences = count(after, "inferenceCount") - count(before, "inferenceCount")
executions = count(after, "executionCount") - count(before, "executionCount")
per_size = lambda stats: {int(b["batchSize"]): int(b["computeInfer"].get("count", 0))
                          for b in stats.get("batchStats", [])}
b, a = per_size(before), per_size(after)
deltas = {size: n - b.get(size, 0) for size, n in a.items() if n > b.get(size, 0)}
mode = max(deltas, key=deltas.get)
print(max(1, round(inferences / executions)), mode)
EOF
)
  read -r mean mode <<<"$sizes"
  echo "$mean $mode" >"$out/raw/batch_r$round.txt"
  list=$mean
  [[ $mode != "$mean" ]] && list="$mean,$mode"
  "${pin[@]}" 0 "$build/bench/model_forward_bench" --model-repository "$out/repository" \
    --model-name cnn --batch-rows "$list" --seconds "$duration" --torch-threads 1 \
    >"$out/raw/forward_r$round.txt" 2>&1
  echo "forward_r$round after $(cut -d' ' -f1 /proc/loadavg)" >>"$out/raw/loadavg.txt"
done

/usr/bin/python3 - "$out" "$rounds" "$images" "$concurrency" <<'EOF' | tee "$out/summary.md"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, rounds + 1):
    served = json.load(open(f"{out}/raw/server_r{r}.json"))["steps"][0]
    mean, mode = map(int, open(f"{out}/raw/batch_r{r}.txt").read().split())
    forward = {}
    for line in open(f"{out}/raw/forward_r{r}.txt"):
        fields = line.split()
        if len(fields) == 4 and fields[0].isdigit():
            forward[int(fields[0])] = float(fields[2])
    errors = sum(served.get("errors", {}).values())
    rows.append((served["rows_per_s"], errors, mean, mode, forward[mean],
                 forward[mode]))
print(f"{sys.argv[3]} image(s) per request, concurrency {sys.argv[4]}\n")
print("| round | served images/s (1 core) | errors | batch: mean, most frequent | "
      "forward images/s at the mean | at the most frequent | served / forward (mean) |")
print("|---:|---:|---:|---|---:|---:|---:|")
for r, (served, errors, mean, mode, at_mean, at_mode) in enumerate(rows, 1):
    print(f"| {r} | {served:,.0f} | {errors} | {mean}, {mode} | {at_mean:,.0f} | {at_mode:,.0f} |"
          f" {served / at_mean:.2f} |")
ratio = statistics.median(s / m for s, _, _, _, m, _ in rows)
print(f"\nmedian served / forward: {ratio:.2f} (target >= 0.80)")
print("\n1-minute load average: " + ", ".join(
    line.strip() for line in open(f"{out}/raw/loadavg.txt")))
EOF

#!/usr/bin/env bash
# The same models as TorchScript, in the Debian libtorch 1.13 build and the 2.x build, and as
# AOTInductor packages (.pt2) in the 2.x build: the forward pass in process (model_forward_bench,
# one torch thread, CPU 0) and through the server over the Open Inference Protocol (model_server
# on CPU 0, model_bench on CPU 1; one-row requests at concurrency 1 and 64: rows/s, p50/p99).
# Wall-clock figures: run on a quiet machine (load average < 1; this script records it).
#
#   bench/aoti/run.sh OUT_DIR            # builds: build/ (1.13) and build-torch2/build (2.x)
#
# Env: SECONDS_PER_STEP (forward bench, default 2), DURATION (model_bench, default 10),
# MODELS ("mlp cnn two_input"), BATCHES (1,7,64,256,1024).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1
mkdir -p "$out"
seconds=${SECONDS_PER_STEP:-2}
duration=${DURATION:-10}
models=${MODELS:-mlp cnn two_input}
batches=${BATCHES:-1,7,64,256,1024}
for binary in build/bench/model_forward_bench build-torch2/build/bench/model_forward_bench \
  build/server/model_server build-torch2/build/server/model_server \
  build-torch2/build/bench/model_bench; do
  [[ -x $binary ]] || { echo "missing $binary: cmake --build ${binary%%/*}${binary#build}" >&2; exit 2; }
done
[[ -e $out/models/aoti/mlp/1/model.pt2 ]] ||
  build-torch2/venv/bin/python3 -W ignore bench/aoti/export_models.py --out "$out/models"
[[ -e $out/payloads/cnn.oip ]] || /usr/bin/python3 bench/aoti/make_payloads.py --out "$out/payloads"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/load.txt"

# name build format
runs=("debian-1.13 build torchscript" "torch2 build-torch2/build torchscript"
      "torch2 build-torch2/build aoti")
for run in "${runs[@]}"; do
  read -r name build format <<<"$run"
  extension=$([[ $format == aoti ]] && echo pt2 || echo pt)
  for model in $models; do
    echo "== forward $model $format ($name)" | tee -a "$out/forward.txt"
    taskset -c 0 "$build/bench/model_forward_bench" \
      --model "$out/models/$format/$model/1/model.$extension" --batch-rows "$batches" \
      --seconds "$seconds" --torch-threads 1 2>&1 | grep -v '\[info\]' | tee -a "$out/forward.txt"
  done
done

for run in "${runs[@]}"; do
  read -r name build format <<<"$run"
  port=$((20000 + RANDOM % 20000))
  taskset -c 0 "$build/server/model_server" --model-repository "$out/models/$format" \
    --address "127.0.0.1:$port" --metrics-address "" --torch-threads 1 --cq-threads 1 \
    --max-batch-rows 1024 >"$out/server-$name-$format.log" 2>&1 &
  server=$!
  for model in $models; do
    taskset -c 1 build-torch2/build/bench/model_bench --target "127.0.0.1:$port" --protocol oip \
      --payload "$out/payloads/$model.oip" --sweep-concurrency 1,64 --duration "$duration" \
      --check --json "$out/server-$name-$format-$model.json" 2>/dev/null |
      sed "s/^/$name $format $model: /" | tee -a "$out/server.txt"
  done
  kill -TERM $server
  wait $server || true
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"

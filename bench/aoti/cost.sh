#!/usr/bin/env bash
# Instructions per forward pass (callgrind; they do not move with machine load): the same models
# as TorchScript and as .pt2 in the 2.x build (and TorchScript in the Debian 1.13 build), at batch
# 1 and 64, one instance; and a .pt2 with two instances on one shared loader (two runners)
# against a loader each. Packages compiled for AVX2 (valgrind has no AVX-512):
#
#   build-torch2/venv/bin/python3 bench/aoti/export_models.py --out DIR/models --valgrind
#   bench/aoti/cost.sh DIR/models OUT_DIR
#
# Env: FORWARDS (per batch size and instance; default 200), MODELS ("mlp cnn two_input").
set -euo pipefail
cd "$(dirname "$0")/../.."
models_dir=$1
out=$2
forwards=${FORWARDS:-200}
models=${MODELS:-mlp cnn two_input}
mkdir -p "$out"
stub=$(TMPDIR=$out bench/valgrind-hwy-stub/build.sh)

# count NAME BUILD MODEL_FILE INSTANCES [FLAGS...]: one callgrind run, a dump per batch size.
count() {
  local name=$1 build=$2 file=$3 instances=$4
  shift 4
  rm -f "$out/$name".callgrind.*
  LD_PRELOAD=$stub valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out/$name.callgrind" \
    "$build/bench/model_forward_bench" --model "$file" --batch-rows 1,64 --forwards "$forwards" \
    --instances "$instances" "$@" >"$out/$name.log" 2>&1
  local dump rows total
  for dump in "$out/$name".callgrind.*; do
    [[ -e $dump ]] || { echo "$name: no dump (see $out/$name.log)" >&2; return 1; }
    rows=$(sed -n 's/^desc: Trigger: Client Request: rows=//p' "$dump")
    total=$(sed -n 's/^\(totals\|summary\): //p' "$dump" | head -1)
    if [[ -n $rows ]]; then
      printf '%-28s rows=%-4s %12.0f instructions/forward\n' "$name" "$rows" \
        "$(echo "$total / ($forwards * $instances)" | bc -l)"
    fi
  done
}

for model in $models; do
  [[ -x build/bench/model_forward_bench ]] &&
    count "$model-torchscript-1.13" build "$models_dir/torchscript/$model/1/model.pt" 1
  count "$model-torchscript-2.x" build-torch2/build "$models_dir/torchscript/$model/1/model.pt" 1
  count "$model-pt2" build-torch2/build "$models_dir/aoti/$model/1/model.pt2" 1
  count "$model-pt2-2x-shared" build-torch2/build "$models_dir/aoti/$model/1/model.pt2" 2
  count "$model-pt2-2x-separate" build-torch2/build "$models_dir/aoti/$model/1/model.pt2" 2 \
    --aoti-separate
done | tee "$out/cost.txt"

#!/usr/bin/env bash
# Instructions per call of the JSON codec alone (bench/cost/codec_cost.cc), counted by callgrind:
# the server's request decoder and reply encoder on model_bench's 50-row seed payload, simdjson
# On-Demand reading the same numbers, and fast_float converting them (no JSON). Each figure is
# (N iterations - 0 iterations) / N.
#
#   bench/cost/codec_cost.sh BUILD_DIR [ITERATIONS]
set -euo pipefail
build=$1
iterations=${2:-1000}
tool=$build/bench/codec_cost
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$tool" "$1" "$2" 2>&1 >/dev/null |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
printf '%-9s %s\n' step "instructions per call"
for mode in decode encode ondemand fastfloat; do
  with=$(count "$mode" "$iterations")
  without=$(count "$mode" 0)
  printf '%-9s %d\n' "$mode" $(((with - without) / iterations))
done

#!/usr/bin/env bash
# Builds the libFuzzer targets (test/fuzz) with clang under ASan+UBSan into build-fuzz and runs
# each on a scratch copy of its seed corpus for FUZZ_SECONDS (default 30), printing executions/s
# and total executions.
#
#   scripts/fuzz.sh                   # decode_fuzzer, batch_fuzzer, oip_fuzzer and config_fuzzer,
#                                     # 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh decode_fuzzer
#
# Exit status: non-zero on any crash, leak, UB report, timeout or broken invariant (a reproducer
# is left in build-fuzz/artifacts/; rerun it with build-fuzz/<fuzzer> <file>). Ends with one
# "fuzz: ..." summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-30}
JOBS=${JOBS:-$(nproc)}
CXX=${FUZZ_CXX:-clang++}
FUZZERS=("$@")
((${#FUZZERS[@]} > 0)) || FUZZERS=(decode_fuzzer batch_fuzzer oip_fuzzer config_fuzzer)
BUILD=build-fuzz

command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

start=$SECONDS
# The libraries under test (handlers, batching, protocol, repository) get coverage and sanitizers
# too; the fuzzers' own CMakeLists adds -fsanitize=fuzzer to link libFuzzer's main.
FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -D_GLIBCXX_ASSERTIONS"
cmake -S test/fuzz -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CXX_FLAGS="$FLAGS" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target "${FUZZERS[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

SYMBOLIZER=$(command -v llvm-symbolizer || ls /usr/bin/llvm-symbolizer-* 2>/dev/null | head -n1 || true)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

summary=()
status=0
mkdir -p "$BUILD/artifacts"
for fuzzer in "${FUZZERS[@]}"; do
  case $fuzzer in
    decode_fuzzer) seeds=test/fuzz/corpus/decode dict=test/fuzz/json.dict ;;
    batch_fuzzer) seeds=test/fuzz/corpus/batch dict=test/fuzz/json.dict ;;
    oip_fuzzer) seeds=test/fuzz/corpus/oip dict="" ;;
    config_fuzzer) seeds=test/fuzz/corpus/config dict=test/fuzz/config.dict ;;
    *) echo "fuzz: unknown fuzzer $fuzzer" >&2; exit 2 ;;
  esac
  # A scratch copy: what the run adds stays out of the tree.
  corpus=$BUILD/corpus/$fuzzer
  rm -rf "$corpus" && mkdir -p "$corpus" && cp "$seeds"/* "$corpus"/
  log=$BUILD/$fuzzer.log
  echo "== $fuzzer: ${SECONDS_EACH}s on $(ls "$corpus" | wc -l) seeds"
  rc=0
  "$BUILD/$fuzzer" "$corpus" ${dict:+-dict="$dict"} -max_total_time="$SECONDS_EACH" \
    -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$BUILD/artifacts/$fuzzer-" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  cov=$({ grep -Eo 'cov: [0-9]+' "$log" || true; } | tail -n1 | cut -d' ' -f2)
  units=$(ls "$corpus" | wc -l)
  if ((rc != 0)); then
    status=1
    tail -n 60 "$log"
    summary+=("$fuzzer FAIL (exit $rc, see $log and $BUILD/artifacts/)")
  else
    summary+=("$fuzzer PASS ${execs:-?} execs, ${rate:-?} execs/s, cov ${cov:-?}, corpus $units")
    echo "$fuzzer: ${execs:-?} execs in ${SECONDS_EACH}s (${rate:-?} execs/s), cov ${cov:-?}, corpus $units units"
  fi
done

echo "fuzz: $([ $status -eq 0 ] && echo PASS || echo FAIL): $(IFS=';'; echo "${summary[*]}") (total $((SECONDS - start)) s)"
exit $status

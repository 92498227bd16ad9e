#!/usr/bin/env bash
# Builds the tests that need no libtorch (batching_tests, handlers_tests, protocol_tests,
# repository_tests, metrics_tests, server_tests, ...) under ASan+UBSan (build-asan) and TSan
# (build-tsan), and runs them through ctest. With clang both builds also run Clang's thread-safety
# analysis as errors (-Wthread-safety -Werror=thread-safety: ABSL_GUARDED_BY fields read or
# written without their mutex fail the build; base/mutex.h). Without clang the analysis is skipped with a note, and
# fails the run where skips are not allowed (MODEL_SERVER_NO_SKIPS=1, .ci/run).
# The sanitizers see only our code: MODEL_SERVER_WITH_TORCH=OFF keeps libtorch out of these
# builds entirely.
#
#   scripts/sanitize.sh            # both builds
#   scripts/sanitize.sh asan       # one of them: asan | tsan
#
# Env: CXX (default clang++ if installed, else g++), JOBS (default: nproc).
# Exit status: non-zero if a build fails or any test reports an error (a sanitizer report fails
# its test: halt_on_error / -fno-sanitize-recover). Ends with one "sanitize: ..." summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ -z "${CXX:-}" ]; then
  if command -v clang++ >/dev/null; then CXX=clang++; else CXX=g++; fi
fi
JOBS=${JOBS:-$(nproc)}
# Not platform_tests: they measure glibc malloc's trimming, and the sanitizers replace malloc.
TARGETS=(base_tests batching_tests handlers_tests protocol_tests repository_tests metrics_tests
  server_tests flags_tests client_tests bench_unit_tests)
THREAD_SAFETY=""
if "$CXX" --version 2>/dev/null | grep -q clang; then
  THREAD_SAFETY="-Wthread-safety -Werror=thread-safety"
elif [ "${MODEL_SERVER_NO_SKIPS:-0}" = 1 ]; then
  echo "sanitize: $CXX is not clang: no thread-safety analysis, and skips are not" \
    "allowed (MODEL_SERVER_NO_SKIPS=1)" >&2
  exit 1
else
  echo "sanitize: note: $CXX is not clang: no thread-safety analysis" >&2
fi
KINDS=("$@")
((${#KINDS[@]} > 0)) || KINDS=(asan tsan)

# Each test gets these at run time. The symbolizer makes reports readable; the suppressions file
# covers only races TSan cannot see through uninstrumented Debian libraries (see test/tsan.supp).
SYMBOLIZER=$(command -v llvm-symbolizer || ls /usr/bin/llvm-symbolizer-* 2>/dev/null | head -n1 || true)
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="report_objects=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/test/tsan.supp${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"

declare -A FLAGS=(
  [asan]="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  [tsan]="-fsanitize=thread -fno-omit-frame-pointer"
)

summary=()
status=0
for kind in "${KINDS[@]}"; do
  [ -n "${FLAGS[$kind]:-}" ] || { echo "sanitize: unknown build '$kind' (asan | tsan)" >&2; exit 2; }
  dir=build-$kind
  start=$SECONDS
  echo "== $kind: configure $dir ($CXX ${FLAGS[$kind]} $THREAD_SAFETY)"
  # RelWithDebInfo: optimised enough that the server tests keep their timing, with line numbers.
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$CXX" -DMODEL_SERVER_WITH_TORCH=OFF -DMODEL_SERVER_TESTS=ON \
    -DCMAKE_CXX_FLAGS="${FLAGS[$kind]} $THREAD_SAFETY" \
    -DCMAKE_EXE_LINKER_FLAGS="${FLAGS[$kind]}" -DCMAKE_SHARED_LINKER_FLAGS="${FLAGS[$kind]}" \
    >/dev/null
  echo "== $kind: build ${TARGETS[*]}"
  cmake --build "$dir" -j "$JOBS" --target "${TARGETS[@]}"
  built=$((SECONDS - start))
  echo "== $kind: run"
  regex="^($(IFS='|'; echo "${TARGETS[*]}"))\$"
  if scripts/ctest.sh "$dir" -R "$regex" --output-on-failure --timeout 600; then
    summary+=("$kind PASS (build ${built}s, tests $((SECONDS - start - built))s)")
  else
    summary+=("$kind FAIL (build ${built}s, tests $((SECONDS - start - built))s)")
    status=1
  fi
done

echo "sanitize: $([ $status -eq 0 ] && echo PASS || echo FAIL): ${summary[*]}"
exit $status

#!/usr/bin/env bash
# Runs ctest in a build folder and, where skips are not allowed, fails on any test that did not
# run (skipped, disabled or not run), naming each.
#
#   scripts/ctest.sh DIR [CTEST_ARGUMENTS...]
#
# A test skips (exit 77) where a prerequisite is missing: the oip-peers venv, chromium, haproxy,
# a GPU. On a developer's machine that is reported and allowed. CI installs every prerequisite
# (scripts/setup*.sh), so there a skip means a check silently stopped checking: .ci/run sets
# MODEL_SERVER_NO_SKIPS=1 and a skip fails the run.
#
# Env: MODEL_SERVER_NO_SKIPS (1: a skip fails), MODEL_SERVER_ALLOWED_SKIPS (space-separated test
# names that may skip even then; default: the GPU tests, since CI has no GPU).
# Exit status: ctest's if it failed, else 1 for a skip that is not allowed, else 0.
set -uo pipefail
(($# >= 1)) || { echo "usage: $0 DIR [CTEST_ARGUMENTS...]" >&2; exit 2; }
dir=$1
shift
NO_SKIPS=${MODEL_SERVER_NO_SKIPS:-0}
ALLOWED=" ${MODEL_SERVER_ALLOWED_SKIPS-torch_gpu_tests torch_gpu_sticky_tests} "

log=$(mktemp)
trap 'rm -f "$log"' EXIT
ctest --test-dir "$dir" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# ctest ends with "The following tests did not run:" and a line per test: "\t 23 - name (Skipped)".
mapfile -t did_not_run < <(sed -n 's/^[[:space:]]*[0-9]\+ - \(.*\) (\(Skipped\|Disabled\|Not Run\))$/\1/p' "$log")
unexpected=()
for name in "${did_not_run[@]}"; do
  [[ "$ALLOWED" == *" $name "* ]] || unexpected+=("$name")
done
if ((${#unexpected[@]} > 0)); then
  if [[ "$NO_SKIPS" == 1 ]]; then
    echo "ctest.sh: FAIL: ${#unexpected[@]} test(s) in $dir did not run, and skips are not allowed" \
      "here (MODEL_SERVER_NO_SKIPS=1): ${unexpected[*]}" >&2
    ((status != 0)) || status=1
  else
    echo "ctest.sh: note: ${#unexpected[@]} test(s) in $dir did not run (allowed outside CI):" \
      "${unexpected[*]}" >&2
  fi
fi
exit "$status"

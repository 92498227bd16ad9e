#!/usr/bin/env bash
# The device check: on a GPU machine without package access (docs/GPU.md), in under 10 minutes,
# builds model_server against the libtorch inside the machine's Python torch (with CUDA), runs
# the GPU tests with a GPU required (no CUDA is a failure, not a skip), and runs the GPU
# benchmark; writes everything into one results file.
#
#   scripts/gpu_check.sh [--dry-run] [--build DIR] [--out FILE] [--seconds S]
#
# GPU run (the default), from the project root on the GPU machine, with .gpu-deps/ carried:
#   1. build (../shared/gpu/README.md's recipe: .gpu-deps/build-env.sh, cmake with
#      MODEL_SERVER_REQUIRE_CUDA=ON) of torch_gpu_tests, model_server, model_bench and
#      model_forward_bench into DIR (default /tmp/build-gpu);
#   2. torch_gpu_tests --require-gpu (every case but "[sticky]"), then the "[sticky]" case (a
#      device-side assert, classed as a lost device) in a process of its own;
#   3. the benchmark, for each precision (fp32, tf32, bf16) with CUDA graphs off and on: the
#      demo model (hidden width 1024, --demo-hidden) served by model_server on cuda:0, driven by
#      model_bench at concurrency 1 and 64 (50 rows per request; S seconds each, default 5):
#      req/s, rows/s, p50 and p99; the server's mean batch (from its /metrics); then
#      model_forward_bench (the in-process forward, same device, precision and graphs) at the
#      same batch sizes, and the server's rows/s as a share of it; the GPU memory the server's
#      /metrics reported at the end of the run; the server's exit code after SIGTERM (0).
# --dry-run (CI, scripts/test.sh; no GPU): uses an existing build DIR (default build/) and
#   checks what a CPU machine can: torch_gpu_tests exits 77 (skipped) without a GPU, and fails
#   (exit 1) with --require-gpu; then the same benchmark pipeline on the CPU (demo width 32,
#   S default 0.5), so the script itself is exercised end to end; graphs fall back to eager there.
#
# The results file (default $OUT/gpu_check_results.txt when $OUT is set, else
# ./gpu_check_results.txt) ends with "result: PASS" or "result: FAIL"; the exit status is 0 only
# for PASS. Each phase's output is kept beside it (FILE.d/).
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
build=""
out="${OUT:+$OUT/}gpu_check_results.txt"
seconds=""
while (($# > 0)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--build DIR] [--out FILE] [--seconds S]" >&2; exit 2 ;;
  esac
  shift
done
if ((dry_run)); then
  build=${build:-build}
  seconds=${seconds:-0.5}
  device=cpu
  hidden=32
else
  build=${build:-/tmp/build-gpu}
  seconds=${seconds:-5}
  device=cuda:0
  hidden=1024
fi
logs="$out.d"
rm -rf "$logs"
mkdir -p "$logs" "$(dirname "$out")"
: >"$out"
started=$(date +%s)
failures=()

note() { echo "$*" | tee -a "$out"; }
fail() {
  failures+=("$1")
  note "FAIL: $1"
}
elapsed() { echo $(($(date +%s) - started)); }

note "# model_server device check ($( ((dry_run)) && echo "dry run on the CPU" || echo GPU))"
note "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
note "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

# 1. Build.
if ((!dry_run)); then
  if [[ ! -f .gpu-deps/build-env.sh ]]; then
    fail "no .gpu-deps/: run ../shared/gpu/fetch-debs.sh .gpu-deps on a machine with package access and carry it (docs/GPU.md)"
  else
    # shellcheck disable=SC1091
    source .gpu-deps/build-env.sh
    build_start=$(date +%s)
    if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$GPU_PREFIX_PATH" -DMODEL_SERVER_REQUIRE_CUDA=ON >"$logs/configure.log" 2>&1 &&
      cmake --build "$build" -j "$(nproc)" --target torch_gpu_tests model_server model_bench \
        model_forward_bench >"$logs/build.log" 2>&1; then
      note "build: ok in $(($(date +%s) - build_start)) s ($build)"
    else
      tail -30 "$logs/configure.log" "$logs/build.log" 2>/dev/null
      fail "build (see $logs/build.log)"
    fi
  fi
fi
server="$build/server/model_server"
bench="$build/bench/model_bench"
forward="$build/bench/model_forward_bench"
gpu_tests="$build/test/torch_gpu_tests"
for binary in "$server" "$bench" "$forward" "$gpu_tests"; do
  [[ -x "$binary" ]] || fail "missing $binary (build it first)"
done
python=$(command -v python3 || echo /usr/bin/python3)
if ((!dry_run)); then
  note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'nvidia-smi not found')"
  note "torch: $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
fi

# 2. The GPU tests.
if ((${#failures[@]} == 0)); then
  if ((dry_run)); then
    "$gpu_tests" >"$logs/gpu_tests_no_flag.log" 2>&1
    status=$?
    if ((status == 77)); then
      note "tests: torch_gpu_tests without a GPU: skipped (77), as it must"
    else
      fail "torch_gpu_tests without a GPU exited $status; expected 77 (skipped)"
    fi
    "$gpu_tests" --require-gpu >"$logs/gpu_tests_required.log" 2>&1
    status=$?
    if ((status == 1)) && grep -q "FAILED: a GPU is required" "$logs/gpu_tests_required.log"; then
      note "tests: torch_gpu_tests --require-gpu without a GPU: failed (1), as it must"
    else
      fail "torch_gpu_tests --require-gpu without a GPU exited $status; expected 1 (a failure)"
    fi
  else
    timeout 300 "$gpu_tests" --require-gpu "~[sticky]" >"$logs/gpu_tests.log" 2>&1
    status=$?
    summary=$(grep -E "^(All tests passed|test cases:|assertions:)" "$logs/gpu_tests.log" | tr '\n' ' ')
    if ((status == 0)); then note "tests: torch_gpu_tests: PASS: $summary"; else
      tail -60 "$logs/gpu_tests.log"
      fail "torch_gpu_tests exited $status: $summary"
    fi
    timeout 120 "$gpu_tests" --require-gpu "[sticky]" >"$logs/gpu_sticky_tests.log" 2>&1
    status=$?
    if ((status == 0)); then note "tests: torch_gpu_tests [sticky]: PASS"; else
      tail -30 "$logs/gpu_sticky_tests.log"
      fail "torch_gpu_tests [sticky] exited $status"
    fi
  fi
fi

# 3. The benchmark.
# The value of `key` in a Prometheus scrape (the sum of its series when several match).
scrape_value() {
  "$python" - "$1" "$2" <<'EOF'
import sys
text, key = open(sys.argv[1]).read(), sys.argv[2]
values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(key)]
print(int(sum(values)) if values else "-")
EOF
}

# Starts model_server with the given flags; sets server_pid, grpc_port, metrics_port.
start_server() {
  local log=$1
  shift
  "$server" --address 127.0.0.1:0 --metrics-address 127.0.0.1:0 --device "$device" \
    --demo-hidden "$hidden" --self-check-interval-ms 0 "$@" >"$log" 2>&1 &
  server_pid=$!
  grpc_port=""
  metrics_port=""
  for _ in $(seq 600); do
    grpc_port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$log" | head -1)
    metrics_port=$(sed -n 's/.*serving GET \/metrics on .*:\([0-9]*\)$/\1/p' "$log" | head -1)
    [[ -n "$grpc_port" && -n "$metrics_port" ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

if ((${#failures[@]} == 0)); then
  rows=50
  note ""
  note "bench: demo model (hidden $hidden) on $device, $rows rows per request, ${seconds} s per step"
  note "$(printf '%-9s %-6s %4s %9s %10s %8s %8s %9s %12s %8s %12s %12s' precision graphs c \
    'req/s' 'rows/s' 'p50_ms' 'p99_ms' 'batch' 'fwd_rows/s' 'server%' 'gpu_reserved' 'gpu_peak')"
  for precision in fp32 tf32 bf16; do
    for graphs in false true; do
      tag="$precision-graphs-$graphs"
      if ! start_server "$logs/server-$tag.log" --precision "$precision" --cuda-graphs "$graphs"; then
        tail -20 "$logs/server-$tag.log"
        fail "model_server ($tag) did not start"
        kill "$server_pid" 2>/dev/null
        continue
      fi
      declare -A batch_rows=()
      for concurrency in 1 64; do
        json="$logs/bench-$tag-c$concurrency.json"
        if ! timeout 120 "$bench" --target "127.0.0.1:$grpc_port" --concurrency "$concurrency" \
          --duration "$seconds" --warmup 1 --rows "$rows" --distinct-params --check \
          --metrics "127.0.0.1:$metrics_port" --json "$json" >"$logs/bench-$tag-c$concurrency.log" 2>&1; then
          tail -20 "$logs/bench-$tag-c$concurrency.log"
          fail "model_bench ($tag, c=$concurrency)"
          continue
        fi
        read -r rps rows_s p50 p99 per_batch errors < <("$python" - "$json" <<'EOF'
import json, sys
step = json.load(open(sys.argv[1]))["steps"][0]
latency = step["latency_ms"]
server = step.get("server", {})
errors = sum(step.get("errors", {}).values())
print(f'{step["throughput_rps"]:.0f} {step["rows_per_s"]:.0f} {latency["p50"]:.3f} '
      f'{latency["p99"]:.3f} {server.get("requests_per_batch", 0):.2f} {errors}')
EOF
        )
        ((errors == 0)) || fail "model_bench ($tag, c=$concurrency): $errors errors"
        batch=$("$python" -c "print(max(1, round($per_batch * $rows)))")
        batch_rows[$concurrency]="$batch $rps $rows_s $p50 $p99"
      done
      curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$logs/metrics-$tag.txt" 2>/dev/null ||
        "$python" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())" \
          >"$logs/metrics-$tag.txt" 2>/dev/null
      reserved=$(scrape_value "$logs/metrics-$tag.txt" model_server_gpu_memory_reserved_bytes)
      peak=$(scrape_value "$logs/metrics-$tag.txt" model_server_gpu_memory_peak_allocated_bytes)
      kill -TERM "$server_pid"
      wait "$server_pid"
      status=$?
      ((status == 0)) || fail "model_server ($tag) exited $status after SIGTERM"
      # The in-process forward at the batch sizes the server ran.
      sizes=""
      for concurrency in 1 64; do
        [[ -n "${batch_rows[$concurrency]:-}" ]] && sizes="$sizes${sizes:+,}${batch_rows[$concurrency]%% *}"
      done
      [[ -n "$sizes" ]] || continue
      if ! timeout 180 "$forward" --device "$device" --precision "$precision" --cuda-graphs "$graphs" \
        --demo-hidden "$hidden" --batch-rows "$sizes" --seconds "$seconds" \
        >"$logs/forward-$tag.log" 2>&1; then
        tail -20 "$logs/forward-$tag.log"
        fail "model_forward_bench ($tag)"
        continue
      fi
      for concurrency in 1 64; do
        [[ -n "${batch_rows[$concurrency]:-}" ]] || continue
        read -r batch rps rows_s p50 p99 <<<"${batch_rows[$concurrency]}"
        forward_rows=$(awk -v b="$batch" '$1 == b { print int($3); exit }' "$logs/forward-$tag.log")
        share=$("$python" -c "print(f'{100 * $rows_s / ${forward_rows:-0}:.0f}' if ${forward_rows:-0} else '-')")
        note "$(printf '%-9s %-6s %4s %9s %10s %8s %8s %9s %12s %8s %12s %12s' "$precision" "$graphs" \
          "$concurrency" "$rps" "$rows_s" "$p50" "$p99" "$batch" "${forward_rows:--}" "$share" \
          "$reserved" "$peak")"
      done
      unset batch_rows
    done
  done
fi

note ""
note "total: $(elapsed) s"
if ((${#failures[@]} == 0)); then
  note "result: PASS"
  exit 0
fi
note "result: FAIL (${#failures[@]}: ${failures[*]})"
exit 1

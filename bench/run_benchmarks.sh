#!/bin/bash
# Reproduces every figure of docs/BENCHMARKS.md in one command (about 15 minutes on 2 cores):
#   bench/run_benchmarks.sh [BUILD_DIR] [OUT_DIR]
# BUILD_DIR (default build-bench) must hold model_server, model_bench, echo_server and
# model_forward_bench. Writes raw JSON per run, profiles and OUT_DIR/summary.md (default BUILD_DIR/bench-results; the tables of
# the document). Protocol: the server under test runs on CPU 0, the load generator on CPU 1;
# compared servers run alternately, ROUNDS times, and the summary quotes medians.
# Environment: ROUNDS (3), DURATION (5 s per step), WARMUP (1 s per step),
# CALLGRIND_REQUESTS (2000), NICE (-10: the measured processes' niceness, so that other work on a
# shared machine disturbs them less; needs root, otherwise they run at the default).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
out=${2:-$build/bench-results}
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
warmup=${WARMUP:-1}
callgrind_requests=${CALLGRIND_REQUESTS:-2000}
server_cpu=0
load_cpu=1
nice -n "${NICE:--10}" true 2>/dev/null && pin=(nice -n "${NICE:--10}" taskset -c) || pin=(taskset -c)

model_server=$build/server/model_server
model_bench=$build/bench/model_bench
echo_server=$build/bench/echo_server
forward_bench=$build/bench/model_forward_bench
for binary in "$model_server" "$model_bench" "$echo_server" "$forward_bench"; do
  [[ -x $binary ]] || { echo "missing $binary: build first (cmake --build $build)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/raw" "$out/logs"
"$model_server" --export-demo-model "$out/demo.pt" --log-level warn

server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT

# start_server KIND NAME [FLAGS...]: starts the server on $server_cpu; sets server_pid and port.
start_server() {
  local kind=$1 name=$2
  shift 2
  local log=$out/logs/$name.log
  case $kind in
    ours) "${pin[@]}" $server_cpu "$model_server" --address 127.0.0.1:0 "$@" >"$log" 2>&1 & ;;
    echo) "${pin[@]}" $server_cpu "$echo_server" --address 127.0.0.1:0 "$@" >"$log" 2>&1 & ;;
    peer) "${pin[@]}" $server_cpu /usr/bin/python3 bench/seed_peer/seed_server.py \
            --model "$out/demo.pt" --address 127.0.0.1:0 "$@" >"$log" 2>&1 & ;;
    callgrind) valgrind --tool=callgrind --instr-atstart=no \
                 --callgrind-out-file="$out/$name.out" "$@" --address 127.0.0.1:0 >"$log" 2>&1 & ;;
  esac
  server_pid=$!
  for _ in $(seq 1200); do
    if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then
      port=${BASH_REMATCH[1]}
      started_cpu=$(cpu_ticks)
      started_at=$(date +%s.%N)
      return
    fi
    kill -0 $server_pid 2>/dev/null || { echo "$name exited: $(tail -3 "$log")" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not start" >&2
  exit 1
}

# CPU time (user + system, clock ticks) the server has used so far.
cpu_ticks() { awk '{print $14 + $15}' /proc/$server_pid/stat; }

# stop_server NAME: records in NAME.meta.json the peak RSS, the server's CPU use while it served
# (busy = CPU seconds / wall seconds), the load average, and model_server's batch counts.
stop_server() {
  local name=$1
  local hwm busy load_average
  hwm=$(awk '/^VmHWM/ {print $2}' /proc/$server_pid/status)
  busy=$(echo "$(cpu_ticks) $started_cpu $(getconf CLK_TCK) $(date +%s.%N) $started_at" |
    awk '{printf "%.3f", ($1 - $2) / $3 / ($4 - $5)}')
  load_average=$(cut -d' ' -f1 /proc/loadavg)
  kill -TERM $server_pid
  wait $server_pid || true
  server_pid=
  local requests=0 batches=0
  if line=$(grep -Eo 'stopped: [0-9]+ requests in [0-9]+ batches' "$out/logs/$name.log"); then
    read -r requests batches < <(echo "$line" | awk '{print $2, $5}')
  fi
  echo "{\"vmhwm_kb\": $hwm, \"requests\": $requests, \"batches\": $batches," \
    "\"server_busy\": $busy, \"load_average\": $load_average}" \
    >"$out/raw/$name.meta.json"
}

# load NAME [FLAGS...]: model_bench on $load_cpu against the running server.
load() {
  local name=$1
  shift
  "${pin[@]}" $load_cpu "$model_bench" --target "127.0.0.1:$port" --connections 2 \
    --distinct-params --duration "$duration" --warmup "$warmup" --json "$out/raw/$name.json" \
    --report "$out/raw/$name.html" "$@" | tee -a "$out/logs/bench.txt"
}

# run KIND NAME LOAD_FLAGS -- SERVER_FLAGS: one server lifetime under one model_bench run.
run() {
  local kind=$1 name=$2
  shift 2
  local load_flags=()
  while [[ $# -gt 0 && $1 != -- ]]; do load_flags+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  echo "== $name" | tee -a "$out/logs/bench.txt"
  echo "$*" >"$out/raw/$name.flags"
  start_server "$kind" "$name" "$@"
  load "$name" "${load_flags[@]}"
  stop_server "$name"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "pinning: ${pin[*]} (server on CPU $server_cpu, model_bench on CPU $load_cpu)"
  echo "rounds: $rounds, step: ${warmup} s warm-up + ${duration} s measured"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$out/machine.txt"
cat "$out/machine.txt"

# 0. Thread counts and queue delay (choosing defaults) and the peers' best settings, c=64.
for round in $(seq "$rounds"); do
  run ours "tune_ours-default_r$round" --concurrency 64
  run ours "tune_ours-cq2_r$round" --concurrency 64 -- --cq-threads 2
  run ours "tune_ours-torch2_r$round" --concurrency 64 -- --torch-threads 2
  run ours "tune_ours-delay200_r$round" --concurrency 64 -- --max-queue-delay-us 200
  run peer "tune_peer-w4_r$round" --concurrency 64 -- --workers 4
  run peer "tune_peer-w16_r$round" --concurrency 64 -- --workers 16
  run echo "tune_echo-cq1_r$round" --concurrency 64 -- --cq-threads 1
  run echo "tune_echo-cq2_r$round" --concurrency 64 -- --cq-threads 2
done
best() {  # best VARIANT among tune_KIND-*: highest median throughput
  /usr/bin/python3 bench/summarize.py --out "$out" --best "$1"
}
ours_flags=$(best ours)
peer_flags=$(best peer)
echo_flags=$(best echo)
echo "best: ours [$ours_flags] peer [$peer_flags] echo [$echo_flags]" | tee "$out/best.txt"

# 1. Ours vs the seed-built peer vs the echo limit, closed loop.
for round in $(seq "$rounds"); do
  # shellcheck disable=SC2086
  {
    run ours "sweep_ours_r$round" --sweep-concurrency 1,16,64,256 -- $ours_flags
    run peer "sweep_peer_r$round" --sweep-concurrency 1,16,64,256 -- $peer_flags
    run echo "sweep_echo_r$round" --sweep-concurrency 1,16,64,256 -- $echo_flags
  }
done

# 2. Batching on vs off (a batch closes at one request's 50 rows).
for round in $(seq "$rounds"); do
  # shellcheck disable=SC2086
  {
    run ours "batching_on_r$round" --sweep-concurrency 64,256 -- $ours_flags
    run ours "batching_off_r$round" --sweep-concurrency 64,256 -- $ours_flags --max-batch-rows 50
  }
done

# 3. Open loop at 25/50/75 % of our measured maximum.
max=$(/usr/bin/python3 bench/summarize.py --out "$out" --max-throughput)
rates=$(/usr/bin/python3 -c "m=$max; print(','.join(str(round(m*f)) for f in (0.25, 0.5, 0.75)))")
echo "our maximum: $max req/s; open-loop rates $rates" | tee "$out/open_loop_rates.txt"
for round in $(seq "$rounds"); do
  # shellcheck disable=SC2086
  run ours "open_r$round" --sweep-rate "$rates" --duration $((duration * 2)) -- $ours_flags
done

# 4. Instructions per request: model_server and echo_server under callgrind, instrumented during
# the load only (not start-up), CALLGRIND_REQUESTS requests at concurrency 16.
for target in callgrind_ours callgrind_echo; do
  echo "== $target" | tee -a "$out/logs/bench.txt"
  # shellcheck disable=SC2086
  case $target in
    callgrind_ours) start_server callgrind $target "$model_server" $ours_flags ;;
    callgrind_echo) start_server callgrind $target "$echo_server" $echo_flags ;;
  esac
  callgrind_control -i on $server_pid >/dev/null
  "${pin[@]}" $load_cpu "$model_bench" --target "127.0.0.1:$port" --distinct-params \
    --concurrency 16 --requests "$callgrind_requests" --warmup 0 --timeout-ms 120000 \
    --json "$out/raw/$target.json" | tee -a "$out/logs/bench.txt"
  callgrind_control -i off $server_pid >/dev/null
  kill -TERM $server_pid
  wait $server_pid || true
  server_pid=
  callgrind_annotate --inclusive=no "$out/$target.out" >"$out/${target}_self.txt"
  callgrind_annotate --inclusive=yes "$out/$target.out" >"$out/${target}_inclusive.txt"
done
grep -Eo 'stopped: [0-9]+ requests in [0-9]+ batches' "$out/logs/callgrind_ours.log" \
  >"$out/callgrind_batches.txt" || true

# 5. The model's own limit: forward passes in process, no gRPC (CPU 0, like the servers).
"${pin[@]}" $server_cpu "$forward_bench" --batch-rows 1,50,100,200,400,800,1600,3200 --seconds 2 \
  | tee "$out/forward.txt"

/usr/bin/python3 bench/summarize.py --out "$out" >"$out/summary.md"
cat "$out/summary.md"

#!/usr/bin/env bash
# "The server's own cost" (docs/BENCHMARKS.md): two builds of model_server compared in one run —
# instructions per request per thread under callgrind (the primary figure: it does not move with
# machine load), then throughput on one server core against echo_server, alternated within each
# round, and an independent cross-check with h2load.
#
#   bench/cost/compare.sh BEFORE_BUILD AFTER_BUILD OUT_DIR
#
# Each build dir must hold server/model_server, bench/model_bench and bench/echo_server (build
# the "before" commit in a worktree of its own). The load generator is the AFTER build's.
# Env: ROUNDS (3), DURATION (5 s per step), REQUESTS (2000, callgrind), NICE (-10), AFTER_FLAGS
# (more flags for the AFTER build's model_server, e.g. --codec-threads 1).
# Writes OUT_DIR/summary.md and the raw figures. Needs valgrind and h2load (nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/../.."
before=$1
after=$2
out=$3
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
mkdir -p "$out/raw"
read -ra after_flags <<<"${AFTER_FLAGS:-}"
bench=$after/bench/model_bench
nice -n "${NICE:--10}" true 2>/dev/null && pin=(nice -n "${NICE:--10}" taskset -c) || pin=(taskset -c)
/usr/bin/python3 bench/cost/make_free_model.py "$out/free.pt"
"$after/server/model_server" --export-demo-model "$out/demo.pt" --log-level warn

# 1. Instructions per request, per thread: near-free model and echo, 1 and 4 connections.
for build_name in before after; do
  build=${!build_name}
  for connections in 1 4; do
    flags=()
    [[ $build_name == after ]] && flags=("${after_flags[@]}")
    MODEL_BENCH=$bench SERVER_FLAGS="${flags[*]}" bench/cost/run_cost.sh "$build" \
      "$out/cost-$build_name" ours "$connections" >/dev/null
  done
done
for connections in 1 4; do
  bench/cost/run_cost.sh "$after" "$out/cost-echo" echo "$connections" >/dev/null
done

# 2. Throughput with the server on CPU 0 and model_bench on CPU 1, c=64, 50 rows, 4 connections,
#    distinct tunables; servers alternate within each round. The demo model also at c=1.
server_pid=
trap '[[ -n $server_pid ]] && kill -KILL $server_pid 2>/dev/null; true' EXIT
start() {  # start LOG BINARY ARGS...: sets server_pid and port
  local log=$1
  shift
  "${pin[@]}" 0 "$@" --address 127.0.0.1:0 >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then
      port=${BASH_REMATCH[1]}
      return
    fi
    sleep 0.1
  done
  echo "server did not start: $(tail -3 "$log")" >&2
  exit 1
}
stop() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=
}
load() {  # load NAME CONCURRENCY: one closed-loop step against $port
  "${pin[@]}" 1 "$bench" --target "127.0.0.1:$port" --connections 4 --distinct-params --rows 50 \
    --concurrency "$2" --duration "$duration" --warmup 1 --json "$out/raw/$1.json" >/dev/null
  echo "$1 $(cut -d' ' -f1 /proc/loadavg)" >>"$out/raw/loadavg.txt"
}
: >"$out/raw/loadavg.txt"
for round in $(seq "$rounds"); do
  for build_name in before after; do
    build=${!build_name}
    flags=()
    [[ $build_name == after ]] && flags=("${after_flags[@]}")
    start "$out/raw/free_${build_name}_r$round.log" "$build/server/model_server" \
      --model "$out/free.pt" --metrics-address "" "${flags[@]}"
    load "free_${build_name}_r$round" 64
    stop
    start "$out/raw/demo_${build_name}_r$round.log" "$build/server/model_server" \
      --model "$out/demo.pt" --metrics-address "" "${flags[@]}"
    load "demo64_${build_name}_r$round" 64
    load "demo1_${build_name}_r$round" 1
    stop
  done
  start "$out/raw/echo_r$round.log" "$after/bench/echo_server"
  load "echo_r$round" 64
  stop
done

# 3. Cross-check: h2load (nghttp2) drives the after build and echo with one framed gRPC request
#    (the same 50-row payload), 4 connections x 16 streams; model_bench alike, alternating with
#    it on the same server, ROUNDS times.
"$bench" --rows 50 --grpc-body "$out/request.bin"
for target in free echo; do
  if [[ $target == free ]]; then
    start "$out/raw/h2_free.log" "$after/server/model_server" --model "$out/free.pt" \
      --metrics-address "" "${after_flags[@]}"
  else
    start "$out/raw/h2_echo.log" "$after/bench/echo_server"
  fi
  for round in $(seq "$rounds"); do
    "${pin[@]}" 1 h2load -c 4 -m 16 -D "$duration" --warm-up-time 1 -d "$out/request.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$port/ModelService/EvaluateModel" >"$out/raw/h2load_${target}_r$round.txt"
    "${pin[@]}" 1 "$bench" --target "127.0.0.1:$port" --connections 4 --rows 50 \
      --concurrency 64 --duration "$duration" --warmup 1 \
      --json "$out/raw/h2check_bench_${target}_r$round.json" >/dev/null
  done
  stop
done

/usr/bin/python3 bench/cost/summarize.py "$out" | tee "$out/summary.md"

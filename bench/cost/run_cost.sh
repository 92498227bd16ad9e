#!/usr/bin/env bash
# The server's own cost per request, per thread, counted by callgrind (instructions do not move
# with machine load). Serves the near-free model (bench/cost/make_free_model.py) so the figures
# are the server's work — gRPC, JSON, hand-offs — not the model's.
#
#   bench/cost/run_cost.sh BUILD_DIR OUT_DIR [SERVER] [CONNECTIONS]
#
# SERVER: ours (default; model_server with the near-free model), demo (model_server with the
# demo model), echo (echo_server) or repository (model_server --model-repository $REPOSITORY,
# driven over OIP with model_bench --model $MODEL --input $INPUT, e.g. INPUT__0:FP32:1x3x32x32). CONNECTIONS: HTTP/2 connections model_bench opens
# (default 1). Env: REQUESTS (2000), CONCURRENCY (16), CQ_THREADS (2), ROWS (50), PROTOCOL (seed:
# the seed's JSON over ModelService; oip: the Open Inference Protocol's ModelInfer, raw tensors),
# PRELOAD (a library preloaded into the server as well, e.g. an allocator:
# /usr/lib/x86_64-linux-gnu/libjemalloc.so.2), SERVER_FLAGS (more model_server flags),
# MODEL_BENCH (the load generator; default BUILD_DIR's: compare.sh gives both builds the same).
# Writes OUT_DIR/<server>[-oip]-c<connections>.{txt,json} and the raw per-thread profiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1
out=$2
server=${3:-ours}
connections=${4:-1}
requests=${REQUESTS:-2000}
concurrency=${CONCURRENCY:-16}
cq_threads=${CQ_THREADS:-2}
rows=${ROWS:-50}
protocol=${PROTOCOL:-seed}
mkdir -p "$out"
[[ $server == repository ]] && protocol=oip
name=$server-c$connections
[[ $protocol == seed ]] || name=$server-$protocol-c$connections
prefix=$out/$name.callgrind
rm -f "$prefix"-*

stub=$(TMPDIR=$out bench/valgrind-hwy-stub/build.sh)
case $server in
  ours | demo)
    model=()
    if [[ $server == ours ]]; then
      /usr/bin/python3 bench/cost/make_free_model.py "$out/free.pt"
      model=(--model "$out/free.pt")
    fi
    command=("$build/server/model_server" "${model[@]}" --cq-threads "$cq_threads"
             --metrics-address "" --torch-threads 1 --log-level info ${SERVER_FLAGS:-})
    ;;
  echo) command=("$build/bench/echo_server" --cq-threads "$cq_threads") ;;
  repository)
    command=("$build/server/model_server" --model-repository "$REPOSITORY" --cq-threads
             "$cq_threads" --metrics-address "" --torch-threads 1 --log-level info
             ${SERVER_FLAGS:-})
    ;;
  *) echo "unknown server $server (ours | demo | echo | repository)" >&2; exit 2 ;;
esac
payload=(--distinct-params --rows "$rows")
[[ $server == repository ]] && payload=(--model "$MODEL" --input "$INPUT")

log=$out/$name.log
LD_PRELOAD="$stub${PRELOAD:+ $PRELOAD}" valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
  --callgrind-out-file="$prefix" "${command[@]}" --address 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true' EXIT
port=
for _ in $(seq 1800); do
  if [[ $(cat "$log") =~ listening\ on\ port\ ([0-9]+) ]]; then port=${BASH_REMATCH[1]}; break; fi
  kill -0 $pid 2>/dev/null || { tail -20 "$log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $port ]] || { echo "server did not start" >&2; exit 1; }

bench=("${MODEL_BENCH:-$build/bench/model_bench}" --target "127.0.0.1:$port" --protocol "$protocol"
       --connections "$connections"
       "${payload[@]}" --concurrency "$concurrency" --warmup 0
       --timeout-ms 120000)
"${bench[@]}" --requests 200 >/dev/null   # warm up uninstrumented
callgrind_control -i on $pid >/dev/null
"${bench[@]}" --requests "$requests" --json "$out/$name.bench.json" >"$out/$name.bench.txt"
callgrind_control -i off $pid >/dev/null
kill -TERM $pid
wait $pid || true
trap - EXIT
python3 bench/cost/thread_cost.py "$prefix" "$requests" --json "$out/$name.json" | tee "$out/$name.txt"

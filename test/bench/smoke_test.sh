#!/bin/bash
# CI smoke: model_bench against a model_server this test starts. Asserts zero errors with
# --check at concurrency 32, over the seed's protocol and over the Open Inference Protocol
# (--protocol oip, the built-in payload and --input tensors), and that the server batched (more than one request per batch on
# average, both from the server's /metrics as model_bench --metrics reads it and from its
# "stopped: N requests in M batches" line at SIGTERM).
# Usage: smoke_test.sh MODEL_SERVER MODEL_BENCH
set -euo pipefail
server_bin=$1 bench_bin=$2
source "$(dirname "$0")/../lib.sh"
with_scratch_dir

"$server_bin" --address 127.0.0.1:0 --metrics-address 127.0.0.1:0 --torch-threads 1 \
  >"$work/server.log" 2>&1 &
server_pid=$!
port=$(wait_for_port "$work/server.log" 'listening on port ([0-9]+)' "$server_pid")
metrics_port=$(wait_for_port "$work/server.log" 'GET /metrics on 127.0.0.1:([0-9]+)' "$server_pid")
echo "model_server on port $port, metrics on $metrics_port"

"$bench_bin" --target "127.0.0.1:$port" --concurrency 32 --duration 3 --warmup 0.5 --check \
  --distinct-params --metrics "127.0.0.1:$metrics_port" --json "$work/result.json"
assert_no_errors "$work/result.json"
/usr/bin/python3 - "$work/result.json" <<'PY' || fail "no server-side batching in /metrics"
import json, sys
server = json.load(open(sys.argv[1]))["steps"][0]["server"]
print("server side: %.3f ms queued per request, %.3f ms compute per batch, %.1f requests per batch"
      % (server["queue_ms_per_request"], server["compute_ms_per_batch"], server["requests_per_batch"]))
sys.exit(0 if server["requests_per_batch"] > 1 else 1)
PY

"$bench_bin" --target "127.0.0.1:$port" --protocol oip --concurrency 32 --duration 2 \
  --warmup 0.5 --check --distinct-params --json "$work/oip.json"
assert_no_errors "$work/oip.json"

# General tensors (--input): random data of the names, types and shapes given, every output
# checked; the same with a datatype the model does not take must fail every call.
"$bench_bin" --target "127.0.0.1:$port" --protocol oip --input x:FP32:4x3 --input params:FP32:4x5 \
  --concurrency 8 --duration 1 --warmup 0.2 --check --json "$work/inputs.json"
assert_no_errors "$work/inputs.json"
"$bench_bin" --target "127.0.0.1:$port" --protocol oip --input x:FP64:4x3 \
  --concurrency 2 --requests 20 --warmup 0 --json "$work/wrong.json" >/dev/null
/usr/bin/python3 - "$work/wrong.json" <<'PY' || fail "FP64 inputs were not refused"
import json, sys
step = json.load(open(sys.argv[1]))["steps"][0]
sys.exit(0 if step["ok"] == 0 and sum(step["errors"].values()) == 20 else 1)
PY

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
line=$(grep -Eo 'stopped: [0-9]+ requests in [0-9]+ batches' "$work/server.log") ||
  fail "no 'stopped:' line in the server log: $(tail -5 "$work/server.log")"
read -r requests batches < <(echo "$line" | awk '{print $2, $5}')
echo "server: $requests requests in $batches batches"
awk -v r="$requests" -v b="$batches" 'BEGIN { exit !(b > 0 && r / b > 1) }' ||
  fail "the server did not batch: $requests requests in $batches batches"
echo "PASS"

#!/usr/bin/env bash
# Overload test (docs/RELIABILITY.md, "Overload"): 10x more offered load than capacity for 60 s,
# open loop. Asserts: the server stays up; what the bounded queue cannot hold is refused at once
# with RESOURCE_EXHAUSTED (no DEADLINE_EXCEEDED pile-up, small overall p50); RSS stays under a
# bound and does not grow; after the burst the p50 latency is back at its idle baseline; SIGTERM
# still drains and exits 0.
#
# usage: overload_test.sh --server build/server/model_server --bench build/bench/model_bench
# Knobs (environment), e.g. to see the assertions fail with an unbounded queue:
#   OVERLOAD_MAX_QUEUE_ROWS (2000)  OVERLOAD_DEMO_HIDDEN (2048)  OVERLOAD_SECONDS (60)
#   OVERLOAD_TIMEOUT_MS (5000, the burst's per-call deadline)  OVERLOAD_MAX_STREAMS (256)
#   OVERLOAD_FACTOR (10)  OVERLOAD_RSS_BOUND_MIB (600)  OVERLOAD_GRPC_MEMORY_BYTES (268435456)
set -euo pipefail

SERVER= BENCH=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -x "$SERVER" && -x "$BENCH" ]] || { echo "usage: $0 --server PATH --bench PATH" >&2; exit 2; }

QUEUE_ROWS=${OVERLOAD_MAX_QUEUE_ROWS:-2000}
HIDDEN=${OVERLOAD_DEMO_HIDDEN:-2048}
SECONDS_OVER=${OVERLOAD_SECONDS:-60}
FACTOR=${OVERLOAD_FACTOR:-10}
RSS_BOUND_MIB=${OVERLOAD_RSS_BOUND_MIB:-600}
GRPC_MEMORY=${OVERLOAD_GRPC_MEMORY_BYTES:-268435456}
TIMEOUT_MS=${OVERLOAD_TIMEOUT_MS:-5000}
MAX_STREAMS=${OVERLOAD_MAX_STREAMS:-256}
BATCH_ROWS=$(( QUEUE_ROWS < 500 ? QUEUE_ROWS : 500 ))

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

FAILURES=0
check() {  # check "description" <python boolean expression over the figures>
  if /usr/bin/python3 -c "import sys; sys.exit(0 if ($2) else 1)"; then
    echo "PASS: $1"
  else
    echo "FAIL: $1"; FAILURES=$((FAILURES + 1))
  fi
}

PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TARGET=127.0.0.1:$PORT
"$SERVER" --address "$TARGET" --metrics-address 127.0.0.1:0 --demo-hidden "$HIDDEN" \
  --max-batch-rows "$BATCH_ROWS" --max-queue-rows "$QUEUE_ROWS" \
  --grpc-memory-bytes "$GRPC_MEMORY" --max-concurrent-streams "$MAX_STREAMS" \
  --log-level info >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# json FILE EXPR: a figure from a model_bench --json result (s = its single step).
json() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["steps"][0]
errors = s.get("errors", {})
total = s["ok"] + sum(errors.values())
print(eval(sys.argv[2], {"s": s, "errors": errors, "total": total}))
PY
}
bench() {  # bench NAME ARGS...: one model_bench run, its table on stdout, JSON in $WORK/NAME.json
  local name=$1; shift
  "$BENCH" --target "$TARGET" --timeout-ms 5000 --json "$WORK/$name.json" "$@" 2>&1 | grep -v '% done' || true
  [[ -s "$WORK/$name.json" ]] || { echo "FAIL: model_bench wrote no $name.json"; cat "$WORK/server.log"; exit 1; }
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }

echo "== idle baseline (20 req/s, 5 s)"
bench baseline --rate 20 --duration 5 --warmup 1
IDLE_RSS=$(rss_kib)
echo "== capacity (closed loop, concurrency 32, 3 s)"
bench capacity --concurrency 32 --duration 3 --warmup 1
CAPACITY=$(json "$WORK/capacity.json" 's["throughput_rps"]')
RATE=$(/usr/bin/python3 -c "print(max(100, int($CAPACITY * $FACTOR)))")
echo "capacity ${CAPACITY} req/s -> offering ${RATE} req/s for ${SECONDS_OVER} s"

echo "== overload (open loop, ${RATE} req/s, ${SECONDS_OVER} s; RSS sampled every second)"
"$BENCH" --target "$TARGET" --timeout-ms "$TIMEOUT_MS" --no-wait --rate "$RATE" --duration "$SECONDS_OVER" \
  --warmup 0 --max-in-flight 1000000 --json "$WORK/overload.json" >"$WORK/overload.out" 2>&1 &
BENCH_PID=$!
: >"$WORK/rss"
ALIVE=1
while kill -0 "$BENCH_PID" 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then ALIVE=0; break; fi
  rss_kib >>"$WORK/rss"
  sleep 1
done
wait "$BENCH_PID" || true
grep -v '% done' "$WORK/overload.out" || true
kill -0 "$SERVER_PID" 2>/dev/null || ALIVE=0
[[ -s "$WORK/overload.json" ]] || { echo "FAIL: model_bench wrote no overload.json"; cat "$WORK/server.log"; exit 1; }

# After the burst: up to 3 low-rate runs, the first within the bound counts (other processes on
# a shared CI machine can slow one 5 s window; a server still degraded fails all three).
AFTER_TRIES=0
if [[ $ALIVE == 1 ]]; then
  BASE_P50=$(json "$WORK/baseline.json" 's["latency_ms"]["p50"]')
  for AFTER_TRIES in 1 2 3; do
    echo "== after the burst, try ${AFTER_TRIES} (20 req/s, 5 s)"
    bench after --rate 20 --duration 5 --warmup 1
    AFTER_P50=$(json "$WORK/after.json" 's["latency_ms"]["p50"]')
    /usr/bin/python3 -c "import sys; sys.exit(0 if $AFTER_P50 <= max(2 * $BASE_P50, $BASE_P50 + 2) else 1)" && break
  done
fi

O="$WORK/overload.json"
TOTAL=$(json "$O" 'total')
OK=$(json "$O" 's["ok"]')
RE=$(json "$O" 'errors.get("RESOURCE_EXHAUSTED", 0)')
DE=$(json "$O" 'errors.get("DEADLINE_EXCEEDED", 0)')
NONOK=$(json "$O" 'total - s["ok"]')
ERRORS=$(json "$O" 'errors')
ELAPSED=$(json "$O" 's["elapsed_s"]')
OFFERED=$(/usr/bin/python3 -c "print(round($TOTAL / $ELAPSED, 1))")
GOODPUT=$(json "$O" 's["throughput_rps"]')
P50=$(json "$O" 's["latency_ms"]["p50"]')
P99=$(json "$O" 's["latency_ms"]["p99"]')
BASE_P50=$(json "$WORK/baseline.json" 's["latency_ms"]["p50"]')
BASE_P99=$(json "$WORK/baseline.json" 's["latency_ms"]["p99"]')
read -r RSS_MAX RSS_EARLY RSS_LATE RSS_N RSS_LIST < <(/usr/bin/python3 - "$WORK/rss" <<'PY'
import sys
mib = [int(l) / 1024 for l in open(sys.argv[1]) if l.strip() and int(l) > 0]
mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
early, late = mib[10:30], mib[-20:]
print(f"{max(mib, default=0):.1f} {mean(early):.1f} {mean(late):.1f} {len(mib)} "
      + ",".join(f"{x:.0f}" for x in mib))
PY
)

echo
echo "== figures"
echo "server: demo-hidden ${HIDDEN}, max-batch-rows ${BATCH_ROWS}, max-queue-rows ${QUEUE_ROWS}," \
     "grpc-memory-bytes ${GRPC_MEMORY}, max-concurrent-streams ${MAX_STREAMS}"
echo "idle baseline: p50 ${BASE_P50} ms, p99 ${BASE_P99} ms; idle RSS $((IDLE_RSS / 1024)) MiB"
echo "capacity: ${CAPACITY} req/s (50 rows/request)"
echo "overload: offered ${OFFERED} req/s for ${ELAPSED} s: ${TOTAL} calls, ${OK} OK (${GOODPUT} req/s)," \
     "non-OK ${ERRORS}; p50 ${P50} ms, p99 ${P99} ms"
echo "RSS (MiB, one sample per second, ${RSS_N} samples): ${RSS_LIST}"
echo "RSS max ${RSS_MAX} MiB (bound ${RSS_BOUND_MIB}); mean of s 10-30 ${RSS_EARLY}, of the last 20 s ${RSS_LATE}"
if [[ $ALIVE == 1 ]]; then
  AFTER_P50=$(json "$WORK/after.json" 's["latency_ms"]["p50"]')
  AFTER_P99=$(json "$WORK/after.json" 's["latency_ms"]["p99"]')
  AFTER_ERR=$(json "$WORK/after.json" 'total - s["ok"]')
  echo "after the burst (try ${AFTER_TRIES}): p50 ${AFTER_P50} ms, p99 ${AFTER_P99} ms, ${AFTER_ERR} non-OK"
fi
echo

check "server alive through the burst" "$ALIVE == 1"
check "load really was overload: offered ${OFFERED} req/s >= 5 x capacity ${CAPACITY}" \
      "$OFFERED >= 5 * $CAPACITY"
check "the queue refused most calls: RESOURCE_EXHAUSTED ${RE} >= 50% of ${TOTAL}" "$RE >= 0.5 * $TOTAL"
check "non-OK outcomes are RESOURCE_EXHAUSTED: ${RE} >= 99% of ${NONOK}" "$RE >= 0.99 * $NONOK"
check "no timeout pile-up: DEADLINE_EXCEEDED ${DE} <= 0.1% of ${TOTAL}" "$DE <= 0.001 * $TOTAL"
check "refusals are immediate: overall p50 ${P50} ms < 100 ms" "$P50 < 100"
check "still serving under overload: goodput ${GOODPUT} req/s >= 10% of capacity" \
      "$GOODPUT >= 0.1 * $CAPACITY"
check "RSS max ${RSS_MAX} MiB < ${RSS_BOUND_MIB} MiB" "0 < $RSS_MAX < $RSS_BOUND_MIB"
check "RSS does not grow: last-20-s mean ${RSS_LATE} <= 1.2 x s-10-30 mean ${RSS_EARLY}" \
      "$RSS_N >= 40 and $RSS_LATE <= 1.2 * $RSS_EARLY"
if [[ $ALIVE == 1 ]]; then
  check "latency back to idle: p50 ${AFTER_P50} ms <= max(2 x ${BASE_P50}, ${BASE_P50} + 2) ms" \
        "$AFTER_P50 <= max(2 * $BASE_P50, $BASE_P50 + 2)"
  check "after the burst every call succeeds (${AFTER_ERR} non-OK)" "$AFTER_ERR == 0"
  kill -TERM "$SERVER_PID"
  RC=0; wait "$SERVER_PID" || RC=$?
  SERVER_PID=
  STOPPED=$(grep -o 'stopped: .*' "$WORK/server.log" || true)
  echo "server: ${STOPPED:-no stopped line}; exit code ${RC}"
  check "SIGTERM: drained and exited 0" "$RC == 0 and '''${STOPPED}''' != ''"
fi

if [[ $FAILURES -ne 0 ]]; then
  echo "--- server log (last 20 lines)"; tail -20 "$WORK/server.log"
  echo "overload_test: FAIL ($FAILURES)"; exit 1
fi
echo "overload_test: PASS"

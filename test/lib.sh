# Helpers for the shell tests that run our binaries.

# Makes a scratch directory $work and, on exit, kills $server_pid (when set) and removes $work.
with_scratch_dir() {
  work=$(mktemp -d)
  server_pid=
  trap 'if [[ -n $server_pid ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# wait_for_port LOG REGEX PID: prints the port captured by REGEX's group once it shows in LOG;
# fails if PID exits or 30 s pass first.
wait_for_port() {
  local log=$1 regex=$2 pid=$3
  for _ in $(seq 300); do
    if [[ $(cat "$log") =~ $regex ]]; then
      echo "${BASH_REMATCH[1]}"
      return
    fi
    kill -0 "$pid" 2>/dev/null || fail "server exited: $(tail -5 "$log")"
    sleep 0.1
  done
  fail "server did not report its port within 30 s: $(tail -5 "$log")"
}

# assert_no_errors RESULT_JSON: every step of a model_bench --json result completed calls and
# none failed.
assert_no_errors() {
  /usr/bin/python3 - "$1" <<'PY' || fail "model_bench reported errors or no calls (see above)"
import json, sys
result = json.load(open(sys.argv[1]))
bad = [s for s in result["steps"] if s["errors"] or s["ok"] == 0]
for step in result["steps"]:
    print("step c=%s r=%s: ok=%d errors=%s" % (step["concurrency"], step["rate"], step["ok"], step["errors"]))
sys.exit(1 if bad or not result["steps"] else 0)
PY
}

#!/usr/bin/env bash
# The drain test's four variants (docs/RELIABILITY.md, "Drain"), RUNS runs each (default 10, the
# figure issue 24 asks for): clients that back off or resend at once, without and with
# --drain-grace 2. Prints each run's tallies and the server's drain lines; exits 1 if any run
# failed.
#   test/reliability/drain_runs.sh build/server/model_server [RUNS]
set -uo pipefail
server=${1:?usage: drain_runs.sh MODEL_SERVER [RUNS]}
runs=${2:-10}
here=$(dirname "$0")
status=0
for clients in "" --no-backoff; do
  for grace in "" "--drain-grace 2"; do
    echo "=== ${clients:-back-off} ${grace:-(no grace)}: $runs runs"
    # shellcheck disable=SC2086  # $clients and $grace are zero or more words
    /usr/bin/python3 "$here/drain_test.py" --server "$server" --runs "$runs" $clients -- $grace ||
      status=1
  done
done
exit $status

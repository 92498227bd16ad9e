#!/usr/bin/env bash
# Runs docker/compose.yaml with podman-compose against an already built image (docker/test_image.sh
# builds it; the proxy's image is built here when missing): the server starts behind HAProxy,
# model_bench runs through the proxy for 10 s once the server is healthy, and the test asserts
# that model_bench exited 0 with zero errors; then tears everything down.
#
#   docker/test_compose.sh
#
# Needs podman-compose and, for the bench container to resolve the service name "model-server",
# the CNI dnsname plugin (Debian: golang-github-containernetworking-plugin-dnsname).
set -euo pipefail
cd "$(dirname "$0")"

command -v podman-compose > /dev/null || { echo "test_compose: podman-compose missing" >&2; exit 1; }
OWN_CONF=
if [[ -z "${CONTAINERS_CONF:-}" ]]; then  # runc and modest ulimits: see test_image.sh
  CONTAINERS_CONF=$(mktemp --suffix=.conf)
  OWN_CONF=$CONTAINERS_CONF
  printf '[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
  export CONTAINERS_CONF
fi
PROJECT=model-server-compose-test-$$
LOG=$(mktemp)
cleanup() {
  podman-compose -p "$PROJECT" -f compose.yaml down > /dev/null 2>&1 || true
  podman network rm -f "${PROJECT}_default" > /dev/null 2>&1 || true
  rm -f "$LOG" ${OWN_CONF:+"$OWN_CONF"}
}
trap cleanup EXIT

podman image exists model-server:cpu || { echo "test_compose: build model-server:cpu first" >&2; exit 1; }
# The proxy's image is small (Debian's haproxy and its configuration): built here when missing.
podman image exists model-server-proxy ||
  podman build --network=host --format docker -t model-server-proxy -f haproxy/Dockerfile ..
# Free host ports for the server, so a server already on 13000 or 8002 does not get in the way.
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
MODEL_SERVER_HOST_PORT=$(free_port)
MODEL_SERVER_METRICS_HOST_PORT=$(free_port)
export MODEL_SERVER_HOST_PORT MODEL_SERVER_METRICS_HOST_PORT
status=0
timeout 180 podman-compose -p "$PROJECT" -f compose.yaml up --abort-on-container-exit \
  --exit-code-from bench > "$LOG" 2>&1 || status=$?
grep -v 'systemd connection' "$LOG" | grep -E '^(step|c=[0-9]+ |r=[0-9.]+/s |model_bench:)|listening' || true
[[ $status == 0 ]] || { tail -30 "$LOG"; echo "test_compose: FAIL: exit status $status" >&2; exit 1; }
# model_bench's table: "c=16  <req/s> ... <errors>" (closed loop) or "r=2000/s ..." (open
# loop); the last field is the error count.
result=$(grep -E '^(c=[0-9]+|r=[0-9.]+/s) ' "$LOG" | tail -1)
[[ -n "$result" ]] || { echo "test_compose: FAIL: no model_bench result" >&2; exit 1; }
errors=$(awk '{print $NF}' <<< "$result")
[[ "$errors" == 0 ]] || { echo "test_compose: FAIL: $errors errors" >&2; exit 1; }
echo "PASS compose: $result"

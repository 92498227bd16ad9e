#!/usr/bin/env bash
# Builds the CUDA image (docker/Dockerfile.cuda) with podman and checks that it serves on CPU, as
# it must on a machine without a GPU:
#   1. the image starts with PROCESSOR=cpu and its own HEALTHCHECK (model_probe) passes;
#   2. model_bench from the image, 8 calls in flight for 5 s: responses checked, zero errors;
#   3. a model calling scaled_dot_product_attention, saved by the pinned PyTorch wheel
#      (build-torch2/venv, scripts/setup_torch2.sh), serves too: libtorch 1.13 refuses it;
#   4. SIGTERM (podman stop): the server drains and exits 0.
# Prints the image size, the build time and the time from `podman run` to healthy.
#
#   docker/test_image_cuda.sh              # build (cached layers reused) and test
#   docker/test_image_cuda.sh --no-build   # test the existing image
#
# By hand, not in CI: the image is ~4 GB and its build downloads ~3.5 GB (docker/README.md).
# Needs root, podman and runc, and the base image docker.io/library/debian:bookworm-slim, which
# docker/test_image.sh makes with debootstrap when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-model-server:cuda}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
NAME=model-server-cuda-test-$$
HEALTHY_TIMEOUT_S=${HEALTHY_TIMEOUT_S:-180}
BUILD=1
case "${1:-}" in
  "") ;;
  --no-build) BUILD=0 ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

log() { echo "test_image_cuda: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
podman() { command podman "$@" 2> >(grep -v 'systemd connection' >&2); }

# The same podman settings as docker/test_image.sh: runc (crun fails on these hosts), modest
# ulimits (the default nofile is above the hard limit here).
WORK=$(mktemp -d)
chmod 1777 "$WORK"  # the container runs as uid 10001: model_bench writes here, the server reads
trap 'podman rm --force --ignore -t 0 "$NAME" > /dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  export CONTAINERS_CONF=$WORK/containers.conf
  printf '[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
    > "$CONTAINERS_CONF"
fi

# One image test at a time per machine (shared with docker/test_image.sh).
exec 9> /run/lock/model_server_test_image.lock
flock -n 9 || { log "waiting for another image test to finish"; flock 9; }

podman image exists "$BASE_IMAGE" || fail "no $BASE_IMAGE: docker/test_image.sh makes it"

if ((BUILD)); then
  log "building $IMAGE"
  started=$(now_ms)
  # The host's CA bundle, for pip behind a TLS-intercepting proxy (a build secret: not in the image).
  podman build --network=host --format docker -t "$IMAGE" -f docker/Dockerfile.cuda \
    --secret "id=pip_ca,src=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" . \
    > "$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; fail "image build failed"; }
  log "built in $((($(now_ms) - started + 500) / 1000)) s"
fi
podman image exists "$IMAGE" || fail "no image $IMAGE (run without --no-build)"
log "image size $(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000)) MB"

# Starts the image on CPU with extra `podman run` arguments; waits for its HEALTHCHECK. Sets port.
start() {
  port=$(free_port)
  local started
  started=$(now_ms)
  # On podman's own network, the gRPC port published on a free host port: a port picked on the
  # host's network can be taken by another process before the server binds it.
  podman run -d --name "$NAME" --health-interval=disable -e PROCESSOR=cpu \
    -p "127.0.0.1:$port:13000" "$@" "$IMAGE" > /dev/null
  local deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
  until podman healthcheck run "$NAME" > /dev/null 2>&1; do
    if ((SECONDS > deadline)) || [[ "$(podman inspect --format '{{.State.Running}}' "$NAME")" != true ]]; then
      podman logs "$NAME" 2>&1 | tail -20
      fail "not healthy within ${HEALTHY_TIMEOUT_S} s"
    fi
    sleep 0.2
  done
  log "healthy after $(($(now_ms) - started)) ms: $(podman logs "$NAME" 2>&1 | grep -o 'model [^ ]* loaded on [a-z:0-9]*')"
}

# Stops the container with SIGTERM; it must drain and exit 0.
stop() {
  podman stop -t 30 "$NAME" > /dev/null
  [[ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME")" == 0 ]] ||
    { podman logs "$NAME" 2>&1 | tail -5; fail "exit code not 0 after SIGTERM"; }
  podman rm "$NAME" > /dev/null
}

# 1, 2: the demo model on CPU, under load.
start
podman run --rm --network=host --entrypoint model_bench -v "$WORK:/results" "$IMAGE" \
  --target "127.0.0.1:$port" --concurrency 8 --duration 5 --warmup 1 --check \
  --json /results/bench.json > "$WORK/bench.txt" 2>&1 || { cat "$WORK/bench.txt"; fail "model_bench failed"; }
/usr/bin/python3 - "$WORK/bench.json" << 'PY' || fail "model_bench reported errors"
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
ok = sum(step["ok"] for step in steps)
errors = sum(sum(step["errors"].values()) for step in steps)
print(f"test_image_cuda: model_bench ok={ok} errors={errors}", file=sys.stderr)
sys.exit(0 if ok > 0 and errors == 0 else 1)
PY
stop

# 3: a model only libtorch 2.x loads.
if [[ -x build-torch2/venv/bin/python3 ]]; then
  build-torch2/venv/bin/python3 test/python/newer_models.py --out "$WORK"
  start -v "$WORK/attention.pt:/models/attention.pt:ro" -e MODEL_LOC=/models/attention.pt
  stop
else
  log "SKIPPED the scaled_dot_product_attention model: no build-torch2/venv (scripts/setup_torch2.sh)"
fi
log "PASS"

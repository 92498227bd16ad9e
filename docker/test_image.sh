#!/usr/bin/env bash
# Builds the CPU image with podman and tests it for real:
#   1. the runtime stage runs as non-root and resolves BLAS to OpenBLAS;
#   2. `podman run` with the seed's env vars (PORT_INTERNAL) and both ports published (-p) → the
#      image's HEALTHCHECK passes;
#   3. a short model_bench run from the same image, through the published gRPC port, has zero
#      errors (or, if the image has no model_bench, 200 calls through clients/python/model_client.py);
#   4. GET /metrics from the host through the published metrics port passes
#      `promtool check metrics`, and the server counted every call as OK;
#   5. SIGTERM (podman stop) → the server drains and exits 0, well within the stop timeout;
#   6. a model mounted at /models and named by MODEL_LOC serves too; a missing one fails startup.
# Prints the image size, the build time and the time from `podman run` to healthy.
#
#   docker/test_image.sh                # build (cached layers reused) and test: what CI runs
#   docker/test_image.sh --no-build     # test the existing image
#   docker/test_image.sh --from-git     # build from `git archive HEAD`, not the working tree
#                                       # (a shared checkout's uncommitted work stays out)
#   docker/test_image.sh --no-cache     # rebuild every layer (cold-build timing; ccache stays)
#
# scripts/test.sh (so CI) runs it. Needs root (it re-runs itself with sudo), podman, runc,
# debootstrap and promtool (scripts/packages/test.txt). No registry is needed: if
# debian:bookworm-slim is missing it is made once with debootstrap and tagged with that name, so
# the Dockerfile stays standard; later runs reuse it and podman's cached layers. Runs on one
# machine take turns (a lock): they share the image name.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-model-server:cpu}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
NAME=model-server-test-$$
HEALTHY_TIMEOUT_S=${HEALTHY_TIMEOUT_S:-120}
BUILD=1
FROM_GIT=0
BUILD_FLAGS=()
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    --from-git) FROM_GIT=1 ;;
    --no-cache) BUILD_FLAGS+=(--no-cache) ;;
    *) echo "usage: $0 [--no-build] [--from-git] [--no-cache]" >&2; exit 2 ;;
  esac
done

log() { echo "test_image: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Podman wants systemd for its healthcheck timers and logs an error on every container start and
# stop without it; the health checks are run by hand below, so drop that noise. Fd 9 (the lock
# below) stays out of podman: a container's conmon would inherit it and hold the lock.
podman() { command podman "$@" 2> >(grep -v 'systemd connection' >&2) 9>&-; }

if ((EUID != 0)); then
  command -v sudo > /dev/null || fail "needs root (rootful podman), and there is no sudo"
  exec sudo IMAGE="$IMAGE" HEALTHY_TIMEOUT_S="$HEALTHY_TIMEOUT_S" "$0" "$@"
fi
for tool in podman runc promtool; do
  command -v "$tool" > /dev/null || fail "$tool missing (scripts/setup.sh installs it)"
done

# Podman defaults that fail on this kind of host: crun (hybrid cgroups) and nofile=1048576
# (above the hard limit). Use runc and modest ulimits unless the caller configured podman.
OWN_CONF=
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  CONTAINERS_CONF=$(mktemp --suffix=.conf)
  OWN_CONF=$CONTAINERS_CONF
  cat > "$CONTAINERS_CONF" << 'CONF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF
fi

WORK=$(mktemp -d)
chmod 1777 "$WORK"  # the containers run as uid 10001 and write here
cleanup() {
  # --ignore: without it podman 4.3 removes nothing when one of the names does not exist
  podman rm --force --ignore -t 0 "$NAME" "$NAME-model" > /dev/null 2>&1 || true
  rm -rf "$WORK" ${OWN_CONF:+"$OWN_CONF"}
}
trap cleanup EXIT

# One run at a time per machine: they share the image name and the base image.
exec 9> /run/lock/model_server_test_image.lock
flock -n 9 || { log "waiting for another test_image.sh run to finish"; flock 9; }

# Say plainly when podman cannot work here, rather than failing somewhere below.
podman info > "$WORK/podman.log" 2>&1 ||
  { tail -5 "$WORK/podman.log"; fail "podman cannot run on this machine (podman info failed)"; }

if ! podman image exists "$BASE_IMAGE"; then
  command -v debootstrap > /dev/null || fail "debootstrap missing and no $BASE_IMAGE image"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "making $BASE_IMAGE with debootstrap from $mirror (once per machine)"
  started=$(now_ms)
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE_IMAGE" > /dev/null
  rm -rf "$WORK/rootfs"
  log "base image made in $((($(now_ms) - started) / 1000)) s"
fi
podman run --rm --network=none "$BASE_IMAGE" true > "$WORK/podman.log" 2>&1 ||
  { tail -5 "$WORK/podman.log"; fail "podman cannot start a container on this machine"; }

if ((BUILD)); then
  log "building $IMAGE (podman build --format docker: OCI images drop HEALTHCHECK)"
  context=.
  if ((FROM_GIT)); then
    context="$WORK/context"
    mkdir "$context"
    git archive HEAD | tar -x -C "$context"
    cp .dockerignore "$context/" 2> /dev/null || true
  fi
  previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)
  started=$(now_ms)
  podman build "${BUILD_FLAGS[@]}" --network=host --format docker -t "$IMAGE" -f docker/Dockerfile "$context" > "$WORK/build.log" 2>&1 ||
    { tail -50 "$WORK/build.log"; fail "image build failed"; }
  build_s=$(((($(now_ms) - started) + 500) / 1000))
  # The image this build replaced goes (it would pile up run after run); cached layers stay.
  if [[ -n "$previous" && "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    podman rmi "$previous" > /dev/null 2>&1 || true
  fi
fi
podman image exists "$IMAGE" || fail "no image $IMAGE (run without --no-build)"
size_mb=$(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000))

# 1. Static properties of the runtime stage.
[[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" == 10001:10001 ]] ||
  fail "image does not run as uid 10001"
blas=$(podman run --rm --entrypoint readlink "$IMAGE" -f /usr/lib/x86_64-linux-gnu/libblas.so.3)
[[ "$blas" == *openblas* ]] || fail "libblas.so.3 resolves to $blas, not OpenBLAS"
healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
[[ "$healthcheck" == *model_probe* ]] || fail "image has no model_probe HEALTHCHECK"
# The metrics port the image exposes is the one compose publishes and the k8s pods announce.
[[ "$(podman image inspect --format '{{json .Config.ExposedPorts}}' "$IMAGE")" == *'"8002/tcp"'* ]] ||
  fail "image does not EXPOSE the metrics port 8002"
grep -q ':8002"' docker/compose.yaml || fail "docker/compose.yaml does not publish the metrics port 8002"
grep -q 'name: metrics, containerPort: 8002' docker/k8s/deployment.yaml &&
  grep -q 'prometheus.io/port: "8002"' docker/k8s/deployment.yaml ||
  fail "docker/k8s/deployment.yaml does not declare and annotate the metrics port 8002"

# 2. Start with the seed's env vars on podman's own network, the gRPC port and the metrics port
#    (8002) published on free host ports as a deployment would; wait for the image's own
#    HEALTHCHECK, run by hand: podman's timer for it needs systemd, absent here.
port=$(free_port)
metrics_port=$(free_port)
started=$(now_ms)
podman run -d --name "$NAME" --health-interval=disable -e PORT_INTERNAL="$port" -e PROCESSOR=cpu \
  -p "127.0.0.1:$port:$port" -p "127.0.0.1:$metrics_port:8002" "$IMAGE" > /dev/null
deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
until podman healthcheck run "$NAME" > /dev/null 2>&1; do
  if ((SECONDS > deadline)) || [[ "$(podman inspect --format '{{.State.Running}}' "$NAME")" != true ]]; then
    podman logs "$NAME" | tail -20
    fail "not healthy within ${HEALTHY_TIMEOUT_S} s"
  fi
  sleep 0.2
done
healthy_ms=$(($(now_ms) - started))
log "healthy after ${healthy_ms} ms (gRPC published on 127.0.0.1:$port, metrics on 127.0.0.1:$metrics_port)"
[[ "$(podman exec "$NAME" id -u)" == 10001 ]] || fail "server is not running as uid 10001"

# 3. Load through the published gRPC port: model_bench from the image if it has one (on the
#    host's network), else the Python client from the host.
if podman run --rm --entrypoint sh "$IMAGE" -c 'command -v model_bench' > /dev/null; then
  log "model_bench: 8 calls in flight for 5 s, responses checked"
  podman run --rm --network=host --entrypoint model_bench -v "$WORK:/results" "$IMAGE" \
    --target "127.0.0.1:$port" --concurrency 8 --duration 5 --warmup 1 --check \
    --json /results/bench.json > "$WORK/bench.txt" 2>&1 || { cat "$WORK/bench.txt"; fail "model_bench failed"; }
  cat "$WORK/bench.txt"
  calls_ok=$(/usr/bin/python3 - "$WORK/bench.json" << 'PY'
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
ok = sum(step["ok"] for step in steps)
errors = sum(sum(step["errors"].values()) for step in steps)
print(f"test_image: model_bench ok={ok} errors={errors}", file=sys.stderr)
print(ok)
sys.exit(0 if ok > 0 and errors == 0 else 1)
PY
  ) || fail "model_bench reported errors"
else
  log "no model_bench in the image: 200 calls through clients/python/model_client.py"
  /usr/bin/python3 - "$port" << 'PY' || fail "Python client calls failed"
import sys
sys.path.insert(0, "clients/python")
import model_client
with model_client.ModelClient(f"127.0.0.1:{sys.argv[1]}", timeout_s=30) as client:
    for i in range(200):
        values = client.evaluate(model_client.demo_request(10, seed=i))["prediction"]["y_1"]
        assert len(values) == 10 and all(isinstance(v, float) for v in values), values
print("test_image: 200 calls ok, 0 errors", file=sys.stderr)
PY
  calls_ok=200
fi

# 4. Metrics, scraped from the host through the published port: promtool's lint passes, and the
#    server counted at least the client's successful calls as OK (more: model_bench's warmup)
#    and no EvaluateModel call with any other code.
/usr/bin/python3 - "http://127.0.0.1:$metrics_port/metrics" "$WORK/metrics.txt" << 'PY' ||
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    content_type = response.headers["Content-Type"]
    if not content_type.startswith("text/plain; version=0.0.4"):
        sys.exit(f"test_image: /metrics has Content-Type {content_type!r}")
    open(sys.argv[2], "wb").write(response.read())
PY
  fail "GET /metrics through the published port failed"
promtool check metrics < "$WORK/metrics.txt" > "$WORK/promtool.txt" 2>&1 ||
  { cat "$WORK/promtool.txt"; fail "promtool check metrics found problems in /metrics"; }
ok_series='model_server_requests_total{method="EvaluateModel",code="OK"}'
counted_ok=$(awk -v series="$ok_series" '$1 == series {print $2}' "$WORK/metrics.txt")
[[ "$counted_ok" =~ ^[0-9]+$ ]] || fail "/metrics has no $ok_series"
((counted_ok >= calls_ok)) || fail "/metrics counted $counted_ok OK calls; the client had $calls_ok"
if grep '^model_server_requests_total{method="EvaluateModel",code=' "$WORK/metrics.txt" | grep -v 'code="OK"'; then
  fail "/metrics counted EvaluateModel calls that failed"
fi
log "metrics: /metrics through the published port passes promtool, counts $counted_ok OK calls"

# 5. SIGTERM: drains and exits 0 long before podman's 30 s stop timeout would SIGKILL it.
started=$(now_ms)
podman stop -t 30 "$NAME" > /dev/null
stop_ms=$(($(now_ms) - started))
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
# (Logs captured first: `podman logs | grep -q` fails under pipefail when grep exits early.)
server_log=$(podman logs "$NAME" 2>&1)
[[ "$server_log" == *draining* ]] || fail "no drain message in the server log"
[[ "$exit_code" == 0 ]] || { podman logs "$NAME" | tail -20; fail "exit code $exit_code after SIGTERM"; }
((stop_ms < 20000)) || fail "podman stop took ${stop_ms} ms: SIGTERM was not handled"
log "SIGTERM: exit 0 after ${stop_ms} ms"

# 6. A mounted model named by MODEL_LOC (the demo model, exported to a file) serves.
podman run --rm -v "$WORK:/out" "$IMAGE" --export-demo-model /out/model.pt > /dev/null 2>&1 ||
  fail "--export-demo-model failed"
podman run -d --name "$NAME-model" --network=host --health-interval=disable -e PORT_INTERNAL="$port" \
  -e MODEL_LOC=/models/model.pt -v "$WORK/model.pt:/models/model.pt:ro" "$IMAGE" \
  --metrics-address "" > /dev/null
deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
until podman healthcheck run "$NAME-model" > /dev/null 2>&1; do
  ((SECONDS < deadline)) || { podman logs "$NAME-model" | tail -20; fail "mounted model: not healthy"; }
  sleep 0.2
done
server_log=$(podman logs "$NAME-model" 2>&1)
[[ "$server_log" == *"/models/model.pt"* ]] || fail "MODEL_LOC was not used (not in the log)"
podman stop -t 30 "$NAME-model" > /dev/null
[[ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME-model")" == 0 ]] ||
  fail "mounted model: non-zero exit after SIGTERM"
log "MODEL_LOC=/models/model.pt (mounted) served and stopped cleanly"

# 7. MODEL_LOC is really honoured: a missing file is a startup error, not the demo model.
missing_status=0
podman run --rm --network=host -e PORT_INTERNAL="$port" -e MODEL_LOC=/models/missing.pt "$IMAGE" \
  --metrics-address "" > "$WORK/missing.log" 2>&1 || missing_status=$?
((missing_status != 0)) || fail "MODEL_LOC=/models/missing.pt started anyway"
grep -q 'model file /models/missing.pt' "$WORK/missing.log" ||
  { cat "$WORK/missing.log"; fail "MODEL_LOC=/models/missing.pt: not refused for the missing file"; }
log "MODEL_LOC=/models/missing.pt: refused to start (exit $missing_status)"

build=${build_s:+${build_s}s}
echo "PASS image=$IMAGE size=${size_mb}MB build=${build:-skipped} run_to_healthy=${healthy_ms}ms stop=${stop_ms}ms"

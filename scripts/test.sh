#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the deployment files' checks
# (scripts/check_manifests.sh: Kubernetes and KServe schemas, checkov), the sanitizer builds
# (ASan+UBSan, TSan) of the tests that need no libtorch and the clang -Wthread-safety build,
# a bounded fuzzing run, the full test suite against Debian's
# libtorch 1.13 (build/) and against the pinned PyPI wheel's libtorch 2.x with CUDA
# (build-torch2/build), the device check's CPU-only dry run against both builds
# (scripts/gpu_check.sh --dry-run: the GPU test must skip without a GPU and fail when one is
# required; the GPU benchmark's pipeline on the CPU), then the container image (built and tested
# with podman: docker/test_image.sh). A test that skips (a prerequisite missing) is reported; with
# MODEL_SERVER_NO_SKIPS=1, as .ci/run sets, it fails the run (scripts/ctest.sh).
#
#   scripts/test.sh           # everything, as CI runs it (~30 min on 2 cores; downloads the wheel)
#   scripts/test.sh --quick   # the everyday loop: Debian's packages, one build, the unit and
#                             # in-process server tests (ctest label "quick"; a few minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then
  scripts/setup.sh && scripts/build.sh && exec scripts/ctest.sh build -L quick --output-on-failure
  exit 1
fi
scripts/setup.sh || exit 1
scripts/setup_torch2.sh || exit 1
scripts/setup_oip_peers.sh || exit 1
scripts/setup_checks.sh || exit 1
scripts/build.sh || exit 1

status=0
scripts/check_manifests.sh || status=1
scripts/sanitize.sh || status=1
FUZZ_SECONDS=${FUZZ_SECONDS:-30} scripts/fuzz.sh || status=1
# scripts/ctest.sh: with MODEL_SERVER_NO_SKIPS=1 (.ci/run) a skipped test fails the run.
scripts/ctest.sh build --output-on-failure --timeout 600 || status=1
scripts/gpu_check.sh --dry-run --build build --out build/gpu_check/results.txt || status=1
{ scripts/build_torch2.sh && scripts/ctest.sh build-torch2/build --output-on-failure --timeout 600 &&
  scripts/gpu_check.sh --dry-run --build build-torch2/build \
    --out build-torch2/build/gpu_check/results.txt; } || status=1
docker/test_image.sh || status=1
exit $status

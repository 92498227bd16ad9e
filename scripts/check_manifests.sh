#!/usr/bin/env bash
# Checks the deployment files, offline, with the tools scripts/setup_checks.sh installs into
# build-checks/venv:
#   1. every Kubernetes manifest (docker/k8s/, docker/k8s/kserve/) against Kubernetes' schemas,
#      strict, and the custom resources (KServe, Prometheus Operator, Kustomize) against ours
#      (docker/k8s-schemas/): scripts/validate_manifests.py;
#   2. checkov's policies over the Dockerfiles (docker/Dockerfile, docker/Dockerfile.cuda,
#      docker/haproxy/Dockerfile) and the manifests. A finding is fixed, or skipped where it
#      stands with its reason (a "checkov:skip=ID:reason" comment in a Dockerfile; a
#      "checkov.io/skipN: ID=reason" annotation on a Kubernetes resource, the only form checkov
#      reads there).
# Exit status: 0 when both pass; 1 otherwise. Ends with one "check_manifests: ..." line.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=build-checks/venv
[ -x "$VENV/bin/checkov" ] || { echo "check_manifests: no $VENV: run scripts/setup_checks.sh" >&2; exit 2; }

status=0
summary=()
echo "== manifests against their schemas"
if "$VENV/bin/python" scripts/validate_manifests.py docker/k8s; then
  summary+=("schemas PASS")
else
  summary+=("schemas FAIL")
  status=1
fi
echo "== checkov: Dockerfiles and manifests"
# --skip-download: offline (no policy metadata from the vendor's service).
if "$VENV/bin/checkov" --skip-download --quiet --compact --framework dockerfile kubernetes \
  -d docker; then
  summary+=("checkov PASS")
else
  summary+=("checkov FAIL")
  status=1
fi
echo "check_manifests: $([ $status -eq 0 ] && echo PASS || echo FAIL): ${summary[*]}"
exit $status

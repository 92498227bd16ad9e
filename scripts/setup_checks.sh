#!/usr/bin/env bash
# Installs the deployment files' checkers from PyPI (scripts/checks-requirements.txt, pinned:
# kubernetes-validate, jsonschema, checkov) into the project's own virtual environment
# build-checks/venv (never the system Python): ~400 MB, ~1 min. Idempotent: a stamp names the
# installed list. scripts/check_manifests.sh uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=build-checks/venv
REQUIREMENTS=scripts/checks-requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
[ -e "$stamp" ] && exit 0

echo "setup_checks: installing $(grep -E '^(checkov|kubernetes-validate|jsonschema)==' "$REQUIREMENTS" | xargs) into $VENV"
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"  # Debian's python3 needs python3-venv (scripts/setup.sh)
"$VENV/bin/pip" install -q --no-cache-dir --no-deps -r "$REQUIREMENTS"
"$VENV/bin/pip" check  # the list is complete: every requirement of every package is in it
touch "$stamp"

#!/usr/bin/env bash
# Installs the Open Inference Protocol's peers from PyPI for the tests that use them: Triton's
# Python client (scripts/oip-peers-requirements.txt, pinned) into the project's own virtual
# environment build-oip-peers/venv (never the system Python): 150 MB, ~15 s. Idempotent: a stamp names
# the installed list. Without this venv the python_tritonclient test reports SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=build-oip-peers/venv
REQUIREMENTS=scripts/oip-peers-requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
[ -e "$stamp" ] && exit 0

echo "setup_oip_peers: installing $(grep '^tritonclient==' "$REQUIREMENTS") into $VENV"
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"  # Debian's python3 needs python3-venv (scripts/setup.sh)
"$VENV/bin/pip" install -q --no-cache-dir --no-deps -r "$REQUIREMENTS"
"$VENV/bin/pip" check  # the list is complete: every requirement of every package is in it
touch "$stamp"

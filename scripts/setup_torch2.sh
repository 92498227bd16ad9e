#!/usr/bin/env bash
# Installs current PyTorch for the second Torch build: the pinned PyPI torch wheel and its CUDA
# libraries (scripts/torch2-requirements.txt) into the project's own virtual environment,
# build-torch2/venv (never the system Python). The wheel carries a full libtorch, built with
# CUDA, that scripts/build_torch2.sh compiles against; its Python torch saves the newer-PyTorch
# test models. ~3.5 GB download, 5.3 GB installed. Idempotent: a stamp names the installed list.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=build-torch2/venv
REQUIREMENTS=scripts/torch2-requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
[ -e "$stamp" ] && exit 0

scripts/packages/install.sh torch2  # python3-venv: Debian's python3 makes no venv without it
echo "setup_torch2: installing $(grep '^torch==' "$REQUIREMENTS") into $VENV"
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --no-cache-dir --no-deps -r "$REQUIREMENTS"
"$VENV/bin/pip" check  # the list is complete: every requirement of every package is in it
touch "$stamp"

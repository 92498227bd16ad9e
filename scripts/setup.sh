#!/usr/bin/env bash
# Installs everything the project needs to build, serve and test, from Debian's archive: the
# package lists in scripts/packages/ (the image's Dockerfile installs the build and runtime
# lists from the same files). Idempotent; safe to run again. Needs root (or sudo).
set -euo pipefail
exec "$(dirname "$0")/packages/install.sh" build build-libtorch runtime runtime-libtorch proxy test

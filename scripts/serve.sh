#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and serves the built-in demo model on :13000.
# Extra arguments go to model_server (see build/server/model_server --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/server/model_server "$@"

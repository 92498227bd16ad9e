#!/usr/bin/env bash
# Quick start: installs what is missing, builds model_server, and serves the built-in demo model
# on :13000 (metrics on :8002). Extra arguments go to model_server (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target model_server
exec build/server/model_server "$@"

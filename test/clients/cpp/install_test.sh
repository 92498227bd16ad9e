#!/bin/bash
# The C++ client as users consume it: `cmake --install` into a scratch prefix, then the example
# project (clients/cpp/example) configured and built against that prefix alone with
# find_package(model_client), and run against a real model_server serving the demo model. Its
# answer to the README's request must be the demo model's.
# Usage: install_test.sh BUILD_DIR EXAMPLE_DIR MODEL_SERVER
set -euo pipefail
build=$1 example=$2 server_bin=$3
source "$(dirname "$0")/../../lib.sh"
with_scratch_dir

cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" ||
  fail "cmake --install failed: $(tail -5 "$work/install.log")"
[[ -f $work/prefix/lib/cmake/model_client/model_client-config.cmake ]] ||
  fail "no package config installed"
# Only the prefix: nothing from the source or build tree may leak into the example's build.
cmake -S "$example" -B "$work/example" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  >"$work/configure.log" 2>&1 || fail "example configure failed: $(tail -20 "$work/configure.log")"
cmake --build "$work/example" >"$work/build.log" 2>&1 ||
  fail "example build failed: $(tail -30 "$work/build.log")"
if grep -r --include=flags.make --include=build.ninja -e "$(cd "$build" && pwd)" \
  "$work/example" >/dev/null; then
  fail "the example's build refers to the build tree"
fi

"$server_bin" --address 127.0.0.1:0 --metrics-address "" >"$work/server.log" 2>&1 &
server_pid=$!
port=$(wait_for_port "$work/server.log" 'listening on port ([0-9]+)' "$server_pid")
output=$("$work/example/model_client_example" "127.0.0.1:$port") ||
  fail "the example failed against the server: $output"
echo "$output"
# The README's example: y_1 = [0.9056816, 0.8984267], printed with 6 significant digits.
[[ $output == "y_1: 0.905682 0.898427" ]] || fail "unexpected answer: $output"
echo "PASS"

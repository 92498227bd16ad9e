#!/usr/bin/env bash
# Configures and builds everything (Release) into build-torch2/build against the libtorch inside
# the pinned PyPI torch wheel (scripts/setup_torch2.sh installs it), with CUDA: Torch's CMake
# compiles with the toolkit's nvcc and headers (CUDA_HOME, default /usr/local/cuda) and the
# binaries link libtorch_cuda and run on a machine without a GPU. Extra arguments go to cmake's
# configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
TORCH=$(build-torch2/venv/bin/python3 -c \
  'import importlib.util; print(importlib.util.find_spec("torch").submodule_search_locations[0])')
# No GPU to probe: name the architectures (only used if CUDA sources were compiled; ours are not).
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# CMAKE_LIBRARY_PATH: Torch's CMake finds libtorch and libc10 with find_library, which would take
# Debian's (libtorch-dev 1.13, in /usr/lib) first.
cmake -S . -B build-torch2/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH/share/cmake" -DCMAKE_LIBRARY_PATH="$TORCH/lib" \
  -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DMODEL_SERVER_REQUIRE_CUDA=ON "$@"
cmake --build build-torch2/build -j "$(nproc)"

#!/usr/bin/env bash
# Installs everything the project needs to build, serve and test, from Debian's archive.
# Idempotent; safe to run again. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config ccache clang-format
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libtorch-dev libspdlog-dev libcxxopts-dev catch2 libsimdjson-dev libcpp-httplib-dev
  # libtorch uses reference BLAS (~50x slower) unless OpenBLAS is installed
  libopenblas0-pthread
  # Python clients and tests (Debian's modules: run them with /usr/bin/python3)
  python3 python3-grpcio python3-protobuf python3-torch python3-numpy
  # test tools: process control, TLS certificates, sanitizer and fuzzer runtimes, the HTML
  # report's screenshot check, instruction counts for the benchmark document
  procps openssl clang libclang-rt-14-dev chromium fonts-dejavu-core valgrind prometheus
  # the Python client example's progress bar
  python3-tqdm
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

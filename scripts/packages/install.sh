#!/usr/bin/env bash
# Installs the Debian packages of the named lists (LIST.txt beside this script) that are not
# installed yet; installs nothing when all are. Used by scripts/setup.sh and the Dockerfiles, so
# each package is named once.
#
#   scripts/packages/install.sh build build-libtorch runtime runtime-libtorch test
#
# Lists: one package per line; '#' starts a comment. Needs root (or sudo).
set -euo pipefail
dir=$(dirname "$0")
(($# > 0)) || { echo "usage: $0 LIST... (lists: $(cd "$dir" && ls -- *.txt | sed 's/\.txt$//' | xargs))" >&2; exit 2; }

packages=()
for list in "$@"; do
  [[ -f "$dir/$list.txt" ]] || { echo "install.sh: no package list $dir/$list.txt" >&2; exit 2; }
  mapfile -t -O "${#packages[@]}" packages < <(sed 's/#.*//' "$dir/$list.txt" | xargs -n1)
done

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2> /dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
((${#missing[@]} > 0)) || exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install.sh: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

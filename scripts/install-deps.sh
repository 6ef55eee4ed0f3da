#!/usr/bin/env bash
# install-deps.sh - installs, from Debian's archive, what colony needs to build
# and test, skipping what is already there. Usage: install-deps.sh [build|test]
#   build  compiler and CMake (what `colony run` needs)
#   test   also node/npm (the independent GGUF reader test), clang (fuzzing) and
#          chromium (the dashboard test)
set -euo pipefail
what=${1:-build}

pkgs=(build-essential cmake pkg-config libjansson-dev libsodium-dev libuv1-dev libopendht-c-dev libmicrohttpd-dev libsqlite3-dev)
if [ "$what" = test ]; then
  pkgs+=(clang libclang-rt-dev python3)
  # headless Chromium for the dashboard test (driven by playwright-core from npm)
  pkgs+=(chromium curl)
  # Node.js for tests that use npm packages; Debian's nodejs and npm unless a
  # node with npm is already installed.
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: everything needed is installed"
fi

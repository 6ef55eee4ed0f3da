#!/usr/bin/env bash
# run.sh - installs what is missing, builds colony, and runs the main job:
# `colony swarm`, generation through a local swarm of shard nodes (with no
# model it makes a small synthetic one and says so). Extra arguments go to
# `colony swarm`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target colony
exec ./build/colony swarm "$@"

#!/usr/bin/env bash
# test.sh - installs what is missing, builds colony twice (release, and
# ASan+UBSan), and runs every test under ctest in both builds: unit, vectors,
# integration, and the replay of every committed fuzz corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
jobs=$(nproc)

# npm packages used by tests (an independent GGUF reader), from package-lock.
if [ -f tests/node/package.json ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== sanitizer build (ASan+UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCOLONY_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && COLONY_SANITIZED=1 ctest --output-on-failure -j"$jobs" -L '' -E 'integration/.*_slow')
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
cd build
ctest --output-on-failure -j"$jobs"

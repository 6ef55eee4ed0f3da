#!/usr/bin/env bash
# bench/run.sh - reproduces the engine figures in docs/PERFORMANCE.md.
# Usage: bench/run.sh [BUILD_DIR] [MODEL_DIR] [ROUNDS]
#   Expects a release build in BUILD_DIR (default build). Writes the synthetic
#   1.1B TinyLlama-shape models (Q8_0, Q4_0; ~1.8 GB) into MODEL_DIR once.
#   The machine's memory bandwidth moves with its neighbours, so each round
#   measures the bandwidth (2 threads, 1 GiB, huge pages as the weights use)
#   right before generation, and reports generation against that roofline.
set -euo pipefail
B=${1:-build}
D=${2:-${TMPDIR:-/tmp}/colony-bench}
R=${3:-5}
mkdir -p "$D"
if [ ! -x /usr/bin/time ]; then
  echo "bench/run.sh needs /usr/bin/time for peak RSS: apt-get install time" >&2
  exit 1
fi
for ty in q8_0 q4_0; do
  [ -f "$D/tl-$ty.gguf" ] || "$B/colony" mkmodel -o "$D/tl-$ty.gguf" --preset 1.1b --type $ty
done
echo "== DRAM read bandwidth, 2 threads, 1 GiB: 4 KiB pages, then huge pages"
"$B/bandwidth" 2 1024 10
"$B/bandwidth" 2 1024 10 huge
for ty in q8_0 q4_0; do
  echo "== 1.1B $ty: pp128 and tg64, -t 2 ($R rounds, each after a bandwidth measurement)"
  /usr/bin/time -v "$B/colony" bench -m "$D/tl-$ty.gguf" -p 128 -n 0 -t 2 -r 3 2>"$D/time-$ty.txt" | tail -2
  awk -F: '/Maximum resident/ {printf "peak RSS %.0f MiB (pp128 run)\n", $2 / 1024}' "$D/time-$ty.txt"
  for r in $(seq "$R"); do
    bw=$("$B/bandwidth" 2 1024 3 huge | sed -E 's/.*best ([0-9.]+) GB.*/\1/')
    "$B/colony" bench -m "$D/tl-$ty.gguf" -p 0 -n 64 -t 2 -r 1 > "$D/tg.txt"
    python3 - "$bw" "$D/tg.txt" <<'PY'
import re, sys
bw = float(sys.argv[1]); txt = open(sys.argv[2]).read()
m = re.search(r'weights read per token ([0-9.]+) (GiB|MiB)', txt)
wb = float(m.group(1)) * (2**30 if m.group(2) == 'GiB' else 2**20)
tg = float(re.search(r'^tg\s+\d+\s+([0-9.]+)', txt, re.M).group(1))
roof = bw * 1e9 / wb
print(f"bandwidth {bw:5.1f} GB/s -> roofline {roof:5.1f} tok/s; tg {tg:5.2f} tok/s = {100 * tg / roof:3.0f}% of it")
PY
  done
done

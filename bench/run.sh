#!/usr/bin/env bash
# bench/run.sh - reproduces the figures in docs/PERFORMANCE.md.
# Usage: bench/run.sh [BUILD_DIR] [MODEL_DIR]
#   Builds nothing: expects a release build (cmake --build build) in BUILD_DIR.
#   Writes synthetic models (1.1B TinyLlama shape, Q8_0 and Q4_0; ~1.8 GB) into
#   MODEL_DIR once, then measures: DRAM read bandwidth (2 threads, 2 GiB), the
#   roofline it implies, colony bench (pp128, tg64, -t 2) and peak RSS.
set -euo pipefail
B=${1:-build}
D=${2:-${TMPDIR:-/tmp}/colony-bench}
mkdir -p "$D"
for ty in q8_0 q4_0; do
  [ -f "$D/tl-$ty.gguf" ] || "$B/colony" mkmodel -o "$D/tl-$ty.gguf" --preset 1.1b --type $ty
done
echo "== DRAM read bandwidth (2 threads)"
"$B/bandwidth" | tee "$D/bandwidth.txt"
bw=$(awk '/best/ {for (i = 1; i <= NF; i++) if ($i ~ /GB\/s/) print $(i-1)}' "$D/bandwidth.txt" | head -1)
for ty in q8_0 q4_0; do
  echo "== colony bench 1.1B $ty"
  /usr/bin/time -v "$B/colony" bench -m "$D/tl-$ty.gguf" -p 128 -n 64 -t 2 -r 5 2>"$D/time-$ty.txt" | tee "$D/bench-$ty.txt"
  rss=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$D/time-$ty.txt")
  bytes=$(stat -c %s "$D/tl-$ty.gguf")
  tg=$(awk '$1 == "tg" {print $3}' "$D/bench-$ty.txt")
  wb=$(awk '/weights read per token/ {for (i = 1; i <= NF; i++) if ($i == "token") print $(i+1), $(i+2)}' "$D/bench-$ty.txt")
  python3 - "$bw" "$tg" "$D/bench-$ty.txt" "$rss" "$bytes" <<'PY'
import re, sys
bw, tg = float(sys.argv[1] or 0), float(sys.argv[2])
txt = open(sys.argv[3]).read()
m = re.search(r'weights read per token ([0-9.]+) (GiB|MiB)', txt)
wbytes = float(m.group(1)) * (2**30 if m.group(2) == 'GiB' else 2**20)
roof = bw * 1e9 / wbytes if bw else 0
print(f"roofline {roof:.1f} tok/s at {bw:.1f} GB/s; tg {tg:.2f} tok/s = {100 * tg / roof if roof else 0:.0f}% of it; "
      f"peak RSS {int(sys.argv[4]) / 1024:.0f} MiB for a {int(sys.argv[5]) / 2**20:.0f} MiB file")
PY
done

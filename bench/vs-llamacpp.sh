#!/usr/bin/env bash
# bench/vs-llamacpp.sh - colony against llama.cpp on the same machine, in the
# same minute: pp128 and tg64 with 2 threads, the synthetic 1.1B model in Q8_0
# and Q4_0, rounds alternating the two engines (the machine's speed drifts, so
# figures taken at different times do not compare).
# Usage: bench/vs-llamacpp.sh LLAMA_BENCH [BUILD_DIR] [MODEL_DIR] [ROUNDS]
#   LLAMA_BENCH: a llama-bench binary (docs/PERFORMANCE.md says how the one
#   measured there was built); nothing is downloaded here.
#   Environment: LLAMA_ARGS (extra llama-bench arguments, e.g. "-lm none" to
#   load the weights into memory instead of mapping the file).
set -euo pipefail
LB=${1:?usage: bench/vs-llamacpp.sh LLAMA_BENCH [BUILD_DIR] [MODEL_DIR] [ROUNDS]}
B=${2:-build}
D=${3:-${TMPDIR:-/tmp}/colony-bench}
R=${4:-3}
[ -x "$LB" ] || { echo "bench/vs-llamacpp.sh: $LB is not an executable" >&2; exit 1; }
[ -x "$B/colony" ] || { echo "bench/vs-llamacpp.sh: $B/colony is missing" >&2; exit 1; }
mkdir -p "$D"
for ty in q8_0 q4_0; do
  [ -f "$D/tl-$ty.gguf" ] || "$B/colony" mkmodel -o "$D/tl-$ty.gguf" --preset 1.1b --type $ty
done
read -r -a la <<<"${LLAMA_ARGS:-}"
echo "== tokens/s, -t 2; llama-bench ${LLAMA_ARGS:-} (-r 3) and colony bench (-r 3) in turn, $R rounds"
for r in $(seq "$R"); do
  for ty in q8_0 q4_0; do
    M=$D/tl-$ty.gguf
    l=$("$LB" -m "$M" -t 2 -p 128 -n 64 -r 3 "${la[@]}" 2>/dev/null |
        awk -F'|' '/pp128|tg64/ { for (i = 1; i < NF; i++) if ($i ~ /pp128|tg64/) {
          a = $i; b = $(i + 1); gsub(/ /, "", a); gsub(/ /, "", b); printf "%s %s  ", a, b } }')
    c=$("$B/colony" bench -m "$M" -t 2 -p 128 -n 64 -r 3 2>&1 |
        awk '/^pp|^tg/ { printf "%s%s %s±%s  ", $1, $2, $3, $4 }')
    echo "round $r $ty | llama.cpp: $l| colony: $c"
  done
done

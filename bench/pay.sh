#!/usr/bin/env bash
# bench/pay.sh - reproduces "Payment overhead inside sessions" in
# docs/PERFORMANCE.md: what paying costs a generation's tokens/s.
# Usage: bench/pay.sh [BUILD_DIR] [MODEL_DIR]
#   Needs a release build with the colony target in BUILD_DIR (default build).
#   Uses MODEL_DIR/tl-q8_0.gguf (the synthetic 1.1B Q8_0 model; written there
#   with `colony mkmodel` if missing).
#   Environment: CHUNKS ("16 64": tokens per receipt/voucher), N (64 tokens
#   generated), ROUNDS (5), PROMPT, MODEL (another GGUF instead), THREADS (2:
#   the client's; shard nodes use their default).
#
# It starts, on 127.0.0.1, a ledger node and one shard node per setting, each
# serving every layer of the model in its own swarm: one free, and one per
# chunk size that requires payment (a receipt from the provider and the
# buyer's answering voucher every chunk, the channel checked at the ledger
# before the session opens). Each round generates the same greedy text
# through every swarm, in an order that rotates from round to round (the
# machine is shared: interleaving spreads its noise over all settings). It
# prints each setting's generation tokens/s (median and best of the rounds),
# the overhead of paying against the free shard, and checks that every paid
# run had its receipts (one per whole chunk). Runs at nice -15 when allowed.
# On a shared machine the A/B difference is mostly noise, so it also prints
# the payment work timed inside the sessions (the buyer's cpay_count, the
# shard's receipts and voucher checks, both on the token path) as a share of
# the generation time: a direct measurement of the overhead's upper bound.
set -euo pipefail
B=${1:-build}
D=${2:-${TMPDIR:-/tmp}/colony-bench}
CHUNKS=${CHUNKS:-16 64}
N=${N:-64}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-Once upon a time, in a land far away, there lived}
[ -x "$B/colony" ] || { echo "bench/pay.sh: $B/colony is missing: cmake --build $B --target colony" >&2; exit 1; }
M=${MODEL:-$D/tl-q8_0.gguf}
[ -f "$M" ] || { mkdir -p "$D"; "$B/colony" mkmodel -o "$M" --preset 1.1b --type q8_0; }

NICE=()
if nice -n -15 true 2>/dev/null; then NICE=(nice -n -15); fi
W=$(mktemp -d "${TMPDIR:-/tmp}/colony-pay.XXXXXX")
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$W"' EXIT

# wait_log FILE PATTERN SECONDS
wait_log() {
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench/pay.sh: '$2' not seen in $1:" >&2; tail -5 "$1" >&2; return 1
}
gen_tps() { grep -o "generation [0-9]* tokens, [0-9.]* tokens/s" "$1" | awk '{print $4}'; }
wallet() { local h=$1; shift; "$B/colony" wallet --home "$W/$h" "$@"; }

OP=$(wallet op address 2>/dev/null)
BUYER=$(wallet buyer address 2>/dev/null)
"${NICE[@]}" "$B/colony" node --home "$W/lh" --ledger "$W/ledger.db" --ledger-operator "$OP" --log-level info \
  >"$W/ledger.log" 2>&1 &
pids+=($!)
wait_log "$W/ledger.log" "transport 127.0.0.1:[0-9]" 30
L="--ledger-peer 127.0.0.1:$(grep -o "transport 127.0.0.1:[0-9]*" "$W/ledger.log" | head -1 | cut -d: -f2)"
wallet op deposit 1000 --to "$BUYER" $L >/dev/null

# shard NAME ARGS...: a node serving every layer, its own swarm; sets BS_NAME.
shard() {
  local name=$1; shift
  "${NICE[@]}" "$B/colony" node --home "$W/$name" --model "$M" --kv-mem 1G -q \
    "$@" --log-level info >"$W/$name.log" 2>&1 &
  pids+=($!)
  wait_log "$W/$name.log" "serving layers" 120
  wait_log "$W/$name.log" "DHT port [0-9]" 30
  eval "BS_$name=127.0.0.1:$(grep -o 'DHT port [0-9]*' "$W/$name.log" | head -1 | awk '{print $3}')"
}
SETS="free"
shard free
for c in $CHUNKS; do
  shard "paid$c" --price-in 1000000 --price-out 2000000 --pay-chunk "$c" --require-payment $L
  SETS="$SETS paid$c"
done

# run NAME ROUND: one generation through that swarm; appends its tokens/s.
run() {
  local name=$1 r=$2 bs pay=()
  bs=$(eval echo "\$BS_$name")
  [ "$name" = free ] || pay=(--pay $L --wallet-home "$W/buyer" --budget 1)
  "${NICE[@]}" "$B/colony" run -m "$M" -t "$THREADS" --swarm "$bs" -p "$PROMPT" -n "$N" \
    --temp 0 --ignore-eos "${pay[@]}" >"$W/$name.$r.out" 2>"$W/$name.$r.err" \
    || { echo "bench/pay.sh: run through $name failed:" >&2; tail -5 "$W/$name.$r.err" >&2; exit 1; }
  gen_tps "$W/$name.$r.err" >>"$W/$name.tps"
  if [ "$name" != free ]; then
    local c=${name#paid} nr tin tout
    nr=$(grep -o "[0-9]* receipts from the provider matched" "$W/$name.$r.err" | awk '{print $1}')
    tin=$(grep -o "[0-9]* tokens in, [0-9]* out" "$W/$name.$r.err" | awk '{print $1}')
    tout=$(grep -o "[0-9]* tokens in, [0-9]* out" "$W/$name.$r.err" | awk '{print $4}')
    # the prompt is one FORWARD (one receipt if it fills a chunk), then one row at a time
    local want=$(( (tin + tout) / c ))
    [ "$tin" -lt "$c" ] || want=$(( 1 + tout / c ))
    [ "$nr" = "$want" ] || { echo "bench/pay.sh: $name: $nr receipts for $tin+$tout tokens, expected $want" >&2; exit 1; }
    echo "$nr" >>"$W/$name.receipts"
    # payment work of this run: the buyer's, and the shard's for the session
    # (logged when it ends, just after the run: wait for it)
    local cw sw tps
    cw=$(grep -o "payment work [0-9]* us" "$W/$name.$r.err" | tail -1 | awk '{print $3}')
    for _ in $(seq 50); do
      [ "$(grep -c 'paid session .* ended' "$W/$name.log")" -ge "$r" ] && break
      sleep 0.1
    done
    sw=$(grep -o "payment work [0-9]* us" "$W/$name.log" | tail -1 | awk '{print $3}')
    tps=$(tail -1 "$W/$name.tps")
    awk -v c="$cw" -v s="$sw" -v t="$tps" -v n="$N" \
      'BEGIN {printf "%.0f %.0f %.4f\n", c, s, (c + s) / 1e4 / ((n - 1) / t)}' >>"$W/$name.work"
  fi
}

set -- $SETS
n=$#
for r in $(seq "$ROUNDS"); do
  # rotate the order: round r starts with setting (r - 1) mod n
  order=()
  for i in $(seq 0 $((n - 1))); do
    k=$(( (i + r - 1) % n + 1 ))
    order+=("${!k}")
  done
  for name in "${order[@]}"; do run "$name" "$r"; done
  echo "round $r: $(for s in $SETS; do printf '%s %s  ' "$s" "$(tail -1 "$W/$s.tps")"; done)"
done

for f in "$W"/*.out; do
  cmp -s "$f" "$W/free.1.out" || { echo "bench/pay.sh: $(basename "$f") differs from free.1.out" >&2; exit 1; }
done
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (a - b) * 100 / a}'; }
stat() { sort -g "$1" | awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[NR]}'; }
read -r FREE_MED FREE_BEST < <(stat "$W/free.tps")
echo
echo "model $(basename "$M"), $N tokens generated, $ROUNDS rounds, $THREADS threads${NICE:+, nice -15}"
printf '%-8s %10s %10s %14s %14s %9s %22s\n' setting median best "overhead(med)" "overhead(best)" receipts \
  "pay work buyer/shard"
printf '%-8s %10.3f %10.3f %14s %14s %9s %22s\n' free "$FREE_MED" "$FREE_BEST" - - - -
for s in $SETS; do
  [ "$s" = free ] && continue
  read -r MED BEST < <(stat "$W/$s.tps")
  # median of the runs' work (us) and of its share of their generation time
  cw=$(awk '{print $1}' "$W/$s.work" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
  sw=$(awk '{print $2}' "$W/$s.work" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
  share=$(awk '{print $3}' "$W/$s.work" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
  printf '%-8s %10.3f %10.3f %13s%% %13s%% %9s %22s\n' "$s" "$MED" "$BEST" "$(pct "$FREE_MED" "$MED")" \
    "$(pct "$FREE_BEST" "$BEST")" "$(head -1 "$W/$s.receipts")/run" "$cw/$sw us = $share%"
done

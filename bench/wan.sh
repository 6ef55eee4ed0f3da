#!/usr/bin/env bash
# bench/wan.sh - reproduces "Pipeline over 20 ms links" in docs/PERFORMANCE.md.
# Usage: bench/wan.sh [BUILD_DIR] [MODEL_DIR]
#   Needs a release build with the colony and delay_relay targets in BUILD_DIR
#   (default build). Uses MODEL_DIR/tl-q8_0.gguf (the synthetic 1.1B Q8_0
#   model; written there with `colony mkmodel` if missing).
#   Environment: HOPS ("1 2 4"), DELAY_MS (10: one-way, so RTT 20 ms), N (32
#   tokens generated), ROUNDS (3), PROMPT, MODEL (another GGUF instead).
#
# For each number of hops it starts, on 127.0.0.1, two swarms of a bootstrap
# node and one shard node per span (the layers split evenly): one with the
# nodes announced on their own ports (loopback), one with each node announced
# through its own delay_relay, so every connection to a node crosses a link of
# DELAY_MS each way. Each round generates greedily with one process
# (`colony run -m`), then with `colony run --swarm` through each swarm; the
# machine is shared and noisy, so rounds interleave the three and the best of
# each is kept. It prints generation tokens/s and the bound
# 1 / (compute + hops x RTT): the client sends each token's hidden state to
# hop 1, takes the result, sends it to hop 2, ... (src/swarm/sess.c), so one
# token costs one round trip per hop on top of the compute.
set -euo pipefail
B=${1:-build}
D=${2:-${TMPDIR:-/tmp}/colony-bench}
HOPS=${HOPS:-1 2 4}
DELAY_MS=${DELAY_MS:-10}
N=${N:-32}
ROUNDS=${ROUNDS:-3}
PROMPT=${PROMPT:-Once upon a time, in a land far away, there lived}
for t in colony delay_relay; do
  [ -x "$B/$t" ] || { echo "bench/wan.sh: $B/$t is missing: cmake --build $B --target $t" >&2; exit 1; }
done
M=${MODEL:-$D/tl-q8_0.gguf}
[ -f "$M" ] || { mkdir -p "$D"; "$B/colony" mkmodel -o "$M" --preset 1.1b --type q8_0; }
L=$("$B/colony" inspect "$M" | awk '$1 ~ /\.block_count$/ && !n {print $3; n = 1}')
[ -n "$L" ] || { echo "bench/wan.sh: no block_count in $M" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/colony-wan.XXXXXX")
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$W"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_log FILE PATTERN SECONDS
wait_log() {
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench/wan.sh: '$2' not seen in $1:" >&2; tail -5 "$1" >&2; return 1
}

# gen_tps LOG: generation tokens/s of a colony run
gen_tps() { grep -o "generation [0-9]* tokens, [0-9.]* tokens/s" "$1" | awk '{print $4}'; }

# single: TPS = generation tokens/s of one process
single() {
  "$B/colony" run -m "$M" -p "$PROMPT" -n "$N" --temp 0 >/dev/null 2>"$W/single.err"
  TPS=$(gen_tps "$W/single.err")
}

# swarm_start NAME HOPS DELAY: a bootstrap node and HOPS shard nodes, each
# behind its own relay when DELAY > 0; BS = the bootstrap's DHT address.
# Not run in a subshell, so the EXIT trap stops its processes whatever happens.
swarm_start() {
  local dir=$W/$1 h=$2 delay=$3
  mkdir -p "$dir"
  "$B/colony" node --home "$dir/boot" 2>"$dir/boot.log" &
  pids+=($!)
  wait_log "$dir/boot.log" "DHT port" 30
  BS=127.0.0.1:$(grep -o "DHT port [0-9]*" "$dir/boot.log" | awk '{print $3}')
  for i in $(seq 0 $((h - 1))); do
    local a=$((L * i / h)) b=$((L * (i + 1) / h)) args=()
    if [ "$delay" -gt 0 ]; then
      local np rp
      np=$(free_port)
      "$B/delay_relay" --listen 0 --to 127.0.0.1:"$np" --delay-ms "$delay" >"$dir/relay$i.out" 2>"$dir/relay$i.err" &
      pids+=($!)
      wait_log "$dir/relay$i.out" "^port " 10
      rp=$(awk '/^port / {print $2}' "$dir/relay$i.out")
      args=(--port "$np" --announce 127.0.0.1:"$rp")
    fi
    "$B/colony" node --home "$dir/n$i" --model "$M" --layers "$a:$b" --bootstrap "$BS" "${args[@]}" 2>"$dir/n$i.log" &
    pids+=($!)
  done
  for i in $(seq 0 $((h - 1))); do wait_log "$dir/n$i.log" "(announced)" 300; done
}

# hop_ms ERRFILE: the client's round trip per token of each hop (route line)
hop_ms() { grep "route " "$1" | grep -o "([0-9.]* ms/token)" | tr -d '(' | awk '{printf "%s ", $1}'; }

# node_ms NAME HOPS: each node's mean compute per one-token step (status)
node_ms() {
  for i in $(seq 0 $(($2 - 1))); do
    "$B/colony" peers --home "$W/$1/n$i" --status | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["tok_ms"], end=" ")'
  done
}

# swarm_run NAME BS: TPS = generation tokens/s through that swarm
swarm_run() {
  "$B/colony" run --swarm "$2" -m "$M" -p "$PROMPT" -n "$N" --temp 0 >/dev/null 2>"$W/$1.err" || {
    echo "bench/wan.sh: the generation through $1 failed:" >&2; tail -3 "$W/$1.err" >&2; exit 1; }
  TPS=$(gen_tps "$W/$1.err")
}

echo "== $(basename "$M"), $N tokens greedy; links of $DELAY_MS ms each way (RTT $((2 * DELAY_MS)) ms) through delay_relay;"
echo "   best of $ROUNDS rounds, each round: one process, the loopback chain, the delayed chain"
rows=""
for h in $HOPS; do
  swarm_start lo$h "$h" 0; bs_lo=$BS
  swarm_start wan$h "$h" "$DELAY_MS"; bs_wan=$BS
  sg=() lo=() wan=() lohop=()
  for r in $(seq "$ROUNDS"); do
    single; sg+=("$TPS")
    swarm_run lo$h "$bs_lo"; lo+=("$TPS")
    lohop+=("$(hop_ms "$W/lo$h.err")")
    swarm_run wan$h "$bs_wan"; wan+=("$TPS")
    echo "-- $h hop(s), round $r: one process ${sg[-1]}, loopback ${lo[-1]}, ${DELAY_MS} ms links ${wan[-1]} tok/s" >&2
  done
  grep -h "route" "$W/lo$h.err" "$W/wan$h.err" | sed 's/^colony: /   /' >&2
  # Per-hop overhead on loopback: the client's round trip per token of each
  # hop (mean over the rounds) minus that node's own compute per one-token
  # step (its status, over the same rounds): messages, encryption, the
  # hand-offs between threads and processes.
  nms=$(node_ms lo$h "$h")
  ov=$(python3 -c '
import sys
rounds = [[float(x) for x in r.split()] for r in sys.argv[2:]]
node = [float(x) for x in sys.argv[1].split()]
rt = [sum(r[i] for r in rounds) / len(rounds) for i in range(len(node))]
print(" ".join(f"{(a - b) * 1000:.0f}" for a, b in zip(rt, node)),
      "|", " ".join(f"{a:.2f}" for a in rt), "|", " ".join(f"{b:.2f}" for b in node))' "$nms" "${lohop[@]}")
  echo "-- $h hop(s), loopback: per-hop overhead (us) | client round trip per token (ms) | node compute per token (ms): $ov" >&2
  rows+="$h|${sg[*]}|${lo[*]}|${wan[*]}"$'\n'
  stop_all
done
python3 - "$DELAY_MS" "$rows" <<'PY'
import sys
d = float(sys.argv[1])
rtt = 2 * d / 1000
rows = []
for line in sys.argv[2].strip().splitlines():
    h, sg, lo, wan = line.split('|')
    rows.append((int(h), [float(x) for x in sg.split()], [float(x) for x in lo.split()], [float(x) for x in wan.split()]))
# compute: the best one-process time per token seen in the whole run
single = max(x for r in rows for x in r[1])
compute = 1.0 / single
print(f"one process: best {single:.2f} tok/s (compute {compute * 1000:.1f} ms/token); RTT {rtt * 1000:.0f} ms")
# bound: one process's compute plus a round trip per hop (the client sends each
# hop its input and waits for the result). The last column starts from the
# loopback chain's own time per token instead (its overheads included), so it
# isolates what the links cost.
r = rtt * 1000
print(f"| hops | one process | loopback | {r:.0f} ms RTT | bound 1/(compute + hops x RTT) | {r:.0f} ms vs bound "
      f"| 1/(1/loopback + hops x RTT) | {r:.0f} ms vs that |")
print("|---|---|---|---|---|---|---|---|")
for h, sg, lo, wan in rows:
    b1 = 1.0 / (compute + h * rtt)
    l, w = max(lo), max(wan)
    b2 = 1.0 / (1.0 / l + h * rtt)
    print(f"| {h} | {max(sg):.2f} | {l:.2f} | {w:.2f} | {b1:.2f} | {100 * w / b1:.0f}% | {b2:.2f} | {100 * w / b2:.0f}% |")
print("(tok/s of generation, best of the rounds: " +
      "; ".join(f"{h} hop(s): one process {min(sg):.1f}-{max(sg):.1f}, loopback {min(lo):.1f}-{max(lo):.1f}, "
                f"links {min(wan):.1f}-{max(wan):.1f}" for h, sg, lo, wan in rows) + ")")
PY

#!/usr/bin/env bash
# gateway.sh - what the OpenAI-compatible gateway costs (docs/PERFORMANCE.md,
# "Gateway"):
#  1. time to first token and time per token of a streamed greedy generation
#     through the gateway (POST /v1/completions, SSE) vs the swarm client
#     library directly, on the same local swarm (bench_gateway: medians and
#     p90 of REPS runs each, alternating);
#  2. 100 concurrent streams held open while they wait for a route (the nodes
#     of one span killed, so every request waits up to the client's 15 s
#     discovery time): resident memory, threads and CPU of the gateway process,
#     against the same gateway idle.
# Usage: bench/gateway.sh [BUILD_DIR (build)] [MODEL (stories260K fixture)] [REPS (20)] [TOKENS (64)]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build}
M=${2:-${COLONY_FIXTURES:-$ROOT/../shared/fixtures}/stories260K.gguf}
REPS=${3:-20}
TOK=${4:-64}
STREAMS=${STREAMS:-100}
NAME=$(basename "$M" .gguf)   # the model's id in the API
BIN=$B/colony
[ -x "$BIN" ] && [ -x "$B/bench_gateway" ] || { echo "build colony and bench_gateway in $B first" >&2; exit 1; }
[ -f "$M" ] || { echo "no model $M" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/colony-gw.XXXXXX")
swpid=""
cleanup() { [ -n "$swpid" ] && kill -TERM "$swpid" 2>/dev/null && wait "$swpid" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$BIN" swarm -m "$M" --home "$TMP/sw" --nodes 4 --replicas 2 --api 127.0.0.1:0 -q >"$TMP/out" 2>"$TMP/err" &
swpid=$!
for _ in $(seq 300); do grep -q "serves the API at" "$TMP/err" && break; sleep 0.1; done
URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$TMP/out" | head -1)
BS=$(grep -o 'bootstrap DHT 127.0.0.1:[0-9]*' "$TMP/err" | grep -o '127.0.0.1:[0-9]*')
[ -n "$URL" ] && [ -n "$BS" ] || { echo "the swarm did not start: $(tail -3 "$TMP/err")" >&2; exit 1; }
echo "# swarm: 4 nodes (2 spans x 2 replicas) of $(basename "$M"), gateway $URL, $(nproc) CPUs"

echo "## 1. latency: gateway vs client library ($REPS runs each, $TOK tokens)"
"$B/bench_gateway" "$M" "$BS" "${URL#http://}" "$REPS" "$TOK" || exit 1

echo "## 2. $STREAMS streams waiting for a route"
proc() { # PID -> "rss_kib threads cpu_ticks"
  awk '/^VmRSS/{r=$2} /^Threads/{t=$2} END{printf "%s %s ", r, t}' "/proc/$1/status"
  awk '{print $14 + $15}' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)
measure() { # LABEL SECONDS
  read -r r0 t0 c0 < <(proc "$swpid"); local w0; w0=$(date +%s.%N)
  sleep "$2"
  read -r r1 t1 c1 < <(proc "$swpid"); local w1; w1=$(date +%s.%N)
  python3 -c "print(f'%-28s RSS %7.1f MiB, %4d threads, CPU %5.1f%% of one core' % ('$1', $r1 / 1024, $t1, 100 * ($c1 - $c0) / $HZ / ($w1 - $w0)))"
}
# a gap: both nodes of the last span go (their PIDs are on colony swarm's stderr)
for pid in $(python3 -c '
import re, sys
nodes = [tuple(map(int, m.groups())) for m in re.finditer(r"serves layers \[(\d+), \d+\) \(pid (\d+)\)", open(sys.argv[1]).read())]
last = max(a for a, _ in nodes)
print(" ".join(str(p) for a, p in nodes if a == last))' "$TMP/err"); do
  kill -KILL "$pid"
done
sleep 1
measure "idle gateway" 4
cpids=()
for i in $(seq "$STREAMS"); do
  curl -sN -o /dev/null -m 60 "$URL/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"$NAME\",\"prompt\":\"Once\",\"max_tokens\":1000,\"stream\":true}" &
  cpids+=($!)
done
sleep 2
active=$(curl -s "$URL/api/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for x in s["sessions"] if x["state"] == "waiting"))')
echo "# $active sessions waiting for a route"
measure "$STREAMS streams waiting" 8
wait_code=$(curl -s -o /dev/null -w '%{http_code}' -m 30 "$URL/v1/completions" -H 'Content-Type: application/json' -d "{\"model\":\"$NAME\",\"prompt\":\"x\",\"max_tokens\":2}")
echo "# a request made meanwhile ends with HTTP $wait_code after the discovery time (no route)"
wait "${cpids[@]}" 2>/dev/null
measure "after they ended (503)" 2

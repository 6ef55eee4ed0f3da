#!/usr/bin/env bash
# One model across peers: `colony swarm` and `colony run --swarm` on real node
# processes. Greedy text through a 3-hop chain equals llama.cpp's reference;
# a serving node killed with SIGKILL mid-generation (after the first token, in
# the middle, near the end) is replaced and the text does not change.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
need_fixture reference.json
M="$FIX/stories260K.gguf"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
P=$(python3 -c "import json;print(json.load(open('$FIX/reference.json'))['cases'][0]['prompt'],end='')")
WANT=$(python3 -c "import json;c=json.load(open('$FIX/reference.json'))['cases'][0];print(c['prompt']+c['runs']['kv_f32']['generated_text'],end='')")

# colony swarm: 3 nodes, one per span
got=$("$BIN" swarm -m "$M" --home "$TMP/sw" --nodes 3 --replicas 1 -p "$P" -n 64 --temp 0 2>"$TMP/sw.err")
[ "$got" = "$WANT" ] && ok "colony swarm (3 hops) gives llama.cpp's text" || fail "colony swarm: [$got] $(tail -3 "$TMP/sw.err")"
grep -q "route \[0,1) .* -> \[1,3) .* -> \[3,5)" "$TMP/sw.err" && ok "route of 3 hops shown" || fail "route: $(grep route "$TMP/sw.err")"
[ "$(grep "route " "$TMP/sw.err" | grep -o "ms/token" | wc -l)" = 3 ] && ok "each hop's round trip per token shown" || fail "hop times: $(grep route "$TMP/sw.err")"
grep -q "tokens/s" "$TMP/sw.err" && ok "tokens/s shown" || fail "no tokens/s"

# A random-weight synthetic model through 3 hops: the logits that pick the first
# token are bit for bit those of a single process (F32 wire), and the text is the same.
"$BIN" mkmodel -q -o "$TMP/syn.gguf" --preset small --type q8_0
got=$("$BIN" swarm -m "$TMP/syn.gguf" --home "$TMP/sws" --nodes 3 --replicas 1 -p "$P" -n 24 --temp 0 --logits-out "$TMP/syn-swarm.f32" 2>"$TMP/sws.err")
want=$("$BIN" run -m "$TMP/syn.gguf" -p "$P" -n 24 --temp 0 --logits-out "$TMP/syn-local.f32" 2>/dev/null)
[ "$got" = "$want" ] && ok "synthetic q8_0 model: same text through 3 hops" || fail "synthetic: [$got] vs [$want] $(tail -2 "$TMP/sws.err")"
cmp -s "$TMP/syn-swarm.f32" "$TMP/syn-local.f32" && [ -s "$TMP/syn-local.f32" ] && ok "synthetic: logits bit for bit equal to one process" || fail "synthetic: logits differ"

# our own swarm: A serves [0,5) for free; B [0,2) and C [2,5) stand by at a price that,
# with --price-weight, makes them the route only when A is gone
start_node() { # NAME LAYERS [BOOTSTRAP] [PRICE]
  local args=(node --home "$TMP/$1" --model "$M" --layers "$2" --price "${4:-0}")
  [ -n "${3:-}" ] && args+=(--bootstrap "$3")
  "$BIN" "${args[@]}" 2>"$TMP/$1.log" &
  pids+=($!)
  eval "pid_$1=$!"
  for _ in $(seq 100); do grep -q "DHT port" "$TMP/$1.log" 2>/dev/null && break; sleep 0.1; done
}
start_node boot 0:1
DP=$(grep -o "DHT port [0-9]*" "$TMP/boot.log" | awk '{print $3}')
BS=127.0.0.1:$DP
for at in 1 30 62; do
  start_node a$at 0:5 "$BS"
  [ $at = 1 ] && { start_node b 0:2 "$BS" 1000000; start_node c 2:5 "$BS" 1000000; }
  # wait until the new node's record is in the DHT (the bootstrap node sees it)
  aid=""
  for _ in $(seq 100); do
    aid=$("$BIN" peers --home "$TMP/a$at" --status 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])' 2>/dev/null) && [ -n "$aid" ] && break
    sleep 0.1
  done
  for _ in $(seq 100); do "$BIN" peers --home "$TMP/boot" --json 2>/dev/null | grep -q "\"id\":\"$aid\"" && break; sleep 0.1; done
  a_pid=$(eval echo \$pid_a$at)
  got=$("$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 64 --temp 0 --price-weight 0.001 --chaos-pid "$a_pid" --chaos-at $at 2>"$TMP/run$at.err")
  [ "$got" = "$WANT" ] && ok "SIGKILL of the serving node after token $at: same text" || fail "failover at $at: [$got] $(tail -3 "$TMP/run$at.err")"
  grep -q "failovers [1-9]" "$TMP/run$at.err" && ok "failover happened ($(grep -o 'failovers [0-9]* ([0-9]* rows replayed)' "$TMP/run$at.err"))" \
    || fail "no failover reported: $(tail -2 "$TMP/run$at.err")"
done
# A server that stalls (SIGSTOP: it stops answering without closing) is
# detected by the timeout and replaced.
start_node st 0:5 "$BS"
sid=""
for _ in $(seq 100); do
  sid=$("$BIN" peers --home "$TMP/st" --status 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])' 2>/dev/null) && [ -n "$sid" ] && break
  sleep 0.1
done
for _ in $(seq 100); do "$BIN" peers --home "$TMP/boot" --json 2>/dev/null | grep -q "\"id\":\"$sid\"" && break; sleep 0.1; done
t0=$(date +%s.%N)
got=$("$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 64 --temp 0 --price-weight 0.001 --timeout-ms 1500 --chaos-pid "$pid_st" --chaos-at 20 --chaos-sig 19 2>"$TMP/stall.err")
el=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
kill -CONT "$pid_st" 2>/dev/null; kill -KILL "$pid_st" 2>/dev/null
[ "$got" = "$WANT" ] && grep -q "failovers [1-9]" "$TMP/stall.err" && grep -q "no reply" "$TMP/stall.err" \
  && ok "a stalled server is detected by timeout and replaced (same text, $el s with a 1.5 s timeout)" || fail "stall: [$got] $(tail -3 "$TMP/stall.err")"

# 8 concurrent sessions on one chain ([0,2) b, [2,5) c): every one gets the
# single-session text, and the shards ran batches of more than one session.
for i in $(seq 8); do
  "$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 64 --temp 0 >"$TMP/c$i.out" 2>"$TMP/c$i.err" &
  cpids[$i]=$!
done
same=0
for i in $(seq 8); do wait "${cpids[$i]}"; [ "$(cat "$TMP/c$i.out")" = "$WANT" ] && same=$((same + 1)); done
[ $same = 8 ] && ok "8 concurrent sessions all give the single-session text" || fail "only $same of 8 concurrent sessions gave the text"
mb=$("$BIN" peers --home "$TMP/b" --status | python3 -c 'import json,sys; j=json.loads(sys.stdin.readline()); print(j["max_batch"], j["batched_steps"], j["sessions"])')
set -- $mb
[ "${1:-0}" -gt 1 ] && [ "${2:-0}" -gt 0 ] && ok "shard batched sessions together (largest batch $1, $2 batched steps)" || fail "no batching seen: $mb"
[ "${3:-1}" = 0 ] && ok "every session freed at the shard" || fail "sessions left at the shard: ${3:-?}"

# With no replica left for a span, a clear error.
kill -KILL "$pid_b" 2>/dev/null
sleep 0.5
"$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 8 --temp 0 >/dev/null 2>"$TMP/none.err"; rc=$?
[ $rc = 1 ] && grep -q "layers" "$TMP/none.err" && ok "no route: exit 1 and the uncovered layers named" || fail "no route: rc $rc $(tail -2 "$TMP/none.err")"
finish

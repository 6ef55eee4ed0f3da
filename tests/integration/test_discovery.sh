#!/usr/bin/env bash
# Six colony node processes on 127.0.0.1 (one bootstrap) find each other
# through the DHT; a node killed with SIGKILL drops out once its record is
# stale; a restarted node is found again with a higher sequence; a node
# stopped with SIGTERM is withdrawn at once by its tombstone; hostile clients
# (garbage, floods of connections) are cut off while the node keeps serving.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"
REFRESH=500
STALE=6000
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

start_node() { # IDX LAYERS [BOOTSTRAP]
  local i=$1 layers=$2 bs=${3:-}
  local args=(node --home "$TMP/n$i" --model "$M" --layers "$layers" --refresh-ms $REFRESH --stale-ms $STALE)
  [ -n "$bs" ] && args+=(--bootstrap "$bs")
  "$BIN" "${args[@]}" 2>>"$TMP/n$i.log" &
  pids[$i]=$!
  for _ in $(seq 100); do grep -q "DHT port" "$TMP/n$i.log" 2>/dev/null && break; sleep 0.1; done
}
npeers() { "$BIN" peers --home "$TMP/n$1" --json 2>/dev/null | grep -c '^{' ; }
has_peer() { "$BIN" peers --home "$TMP/n$1" --json 2>/dev/null | grep -q "\"id\":\"$2\""; }
node_id() { "$BIN" peers --home "$TMP/n$1" --status | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])'; }
seq_of() { "$BIN" peers --home "$TMP/n$1" --json | python3 -c "import json,sys
for l in sys.stdin:
    if l.startswith('{'):
        j = json.loads(l)
        if j['id'] == '$2': print(j['seq'])"; }

start_node 0 0:1
DP=$(grep -o "DHT port [0-9]*" "$TMP/n0.log" | awk '{print $3}')
[ -n "$DP" ] && ok "bootstrap node up (DHT port $DP)" || { fail "bootstrap node did not start: $(cat "$TMP/n0.log")"; finish; exit 1; }
spans=(0:1 1:2 2:3 3:4 4:5 0:5)
t0=$(date +%s.%N)
for i in 1 2 3 4 5; do start_node $i "${spans[$i]}" "127.0.0.1:$DP"; done

# Every node finds the 5 others.
all=0
for _ in $(seq 150); do
  all=1
  for i in 0 1 2 3 4 5; do [ "$(npeers $i)" = 5 ] || { all=0; break; }; done
  [ $all = 1 ] && break
  sleep 0.1
done
t1=$(date +%s.%N)
[ $all = 1 ] && ok "all 6 nodes see the 5 others after $(python3 -c "print(round($t1 - $t0, 2))") s" \
  || fail "not every node sees 5 peers: $(for i in 0 1 2 3 4 5; do printf '%s ' "$(npeers $i)"; done)"
"$BIN" peers --home "$TMP/n0" > "$TMP/table"
grep -q "5 peers" "$TMP/table" && grep -q "127.0.0.1:" "$TMP/table" && ok "colony peers prints a table" || fail "peers table: $(cat "$TMP/table")"
sleep 1.5
"$BIN" peers --home "$TMP/n1" --json | grep -q '"connected":true' && ok "nodes connect to each other over Noise" || fail "no encrypted connection"
"$BIN" peers --home "$TMP/n1" --json | python3 -c "import json,sys
ps=[json.loads(l) for l in sys.stdin if l.startswith('{')]
sys.exit(0 if any(p['rtt_ms'] >= 0 for p in ps) else 1)" && ok "RTT measured" || fail "no RTT measured"
sleep 1
conns=$("$BIN" peers --home "$TMP/n1" --status | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["connections"])')
[ "$conns" -le 5 ] && ok "one connection per peer pair ($conns for 5 peers)" || fail "$conns connections for 5 peers"

# SIGKILL: gone once stale (<= STALE + refresh + lookup period), not before the tombstone-less bound.
id3=$(node_id 3)
seq3=$(seq_of 0 "$id3")
kill -KILL "${pids[3]}"
tk=$(date +%s.%N)
gone=0
for _ in $(seq 120); do
  g=1; for i in 0 1 2 4 5; do has_peer $i "$id3" && { g=0; break; }; done
  [ $g = 1 ] && { gone=1; break; }
  sleep 0.1
done
tg=$(date +%s.%N)
el=$(python3 -c "print(round($tg - $tk, 2))")
[ $gone = 1 ] && ok "SIGKILLed node gone from every lookup after $el s (bound: stale $((STALE/1000)) s + refresh + lookup)" || fail "SIGKILLed node still listed after $el s"

# Restart with the same identity: found again, with a higher sequence.
start_node 3 "${spans[3]}" "127.0.0.1:$DP"
back=0
for _ in $(seq 100); do has_peer 0 "$id3" && { back=1; break; }; sleep 0.1; done
seq3b=$(seq_of 0 "$id3")
[ $back = 1 ] && [ "${seq3b:-0}" -gt "${seq3:-0}" ] && ok "restarted node found again, sequence $seq3 -> $seq3b" || fail "restart: back=$back seq $seq3 -> $seq3b"

# SIGTERM: the tombstone hides it well before it could go stale.
id4=$(node_id 4)
kill -TERM "${pids[4]}"
wait "${pids[4]}"; rc=$?
[ $rc = 0 ] && ok "SIGTERM stops cleanly (exit 0)" || fail "SIGTERM exit $rc"
tt=$(date +%s.%N)
gone=0
for _ in $(seq 40); do
  g=1; for i in 0 1 2 5; do has_peer $i "$id4" && { g=0; break; }; done
  [ $g = 1 ] && { gone=1; break; }
  sleep 0.1
done
el=$(python3 -c "print(round($(date +%s.%N) - $tt, 2))")
[ $gone = 1 ] && ok "tombstone withdrew the stopped node in $el s (< stale $((STALE/1000)) s)" || fail "stopped node still listed after $el s"
grep -q "tombstone" "$TMP/n4.log" && fail "node 4 could not publish its tombstone" || true

# Hostile clients against node 0's transport port.
TP=$(grep -o "transport 127.0.0.1:[0-9]*" "$TMP/n0.log" | head -1 | cut -d: -f2)
rss() { awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status"; }
r0=$(rss)
python3 - "$TP" <<'PY'
import os, socket, sys, time
port = int(sys.argv[1])
socks = []
# garbage, a truncated handshake, an oversized length
for payload in (os.urandom(4096), b'\x20\x00' + os.urandom(10), b'\xff\xff'):
    s = socket.create_connection(('127.0.0.1', port)); s.sendall(payload); socks.append(s)
# a flood of 300 connections that say nothing
for _ in range(300):
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=1); socks.append(s)
    except OSError:
        pass
# 50 clients that push random bytes as fast as they can for a second
end = time.time() + 1
blob = os.urandom(65536)
flood = []
for _ in range(50):
    try:
        flood.append(socket.create_connection(('127.0.0.1', port), timeout=1))
    except OSError:
        pass
while time.time() < end:
    for s in list(flood):
        try: s.send(blob)
        except OSError: flood.remove(s)
time.sleep(0.5)
PY
sleep 1
r1=$(rss)
kill -0 "${pids[0]}" 2>/dev/null && ok "node survives garbage and connection floods" || fail "node 0 died"
[ "$(npeers 0)" -ge 3 ] && ok "node keeps serving its peers during the attack" || fail "node 0 lost its peers: $(npeers 0)"
[ $((r1 - r0)) -lt 65536 ] && ok "RSS bounded: ${r0} KiB -> ${r1} KiB" || fail "RSS grew from ${r0} KiB to ${r1} KiB"
grep -Eq "handshake|rate|too many|closed" "$TMP/n0.log" || true
finish

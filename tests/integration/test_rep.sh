#!/usr/bin/env bash
# test_rep.sh - reputation end to end: a ledger node and three paid shard
# nodes (A cheapest, then B, then G, which also runs the HTTP gateway), each
# serving every layer of stories260K. A buyer pays A twice through
# `colony run --swarm --pay --prefer price`; each run publishes a signed
# receipt digest about A in the DHT. Then:
#   - the gateway's /api/status shows A with the buyer's digests and a
#     score, B none, and every peer's price;
#   - a run with --no-digest publishes nothing;
#   - a paying buyer routing with --prefer reputation checks the digests'
#     channels at the ledger, scores A from them and pays A, although B
#     is as good on every other count;
#   - `colony peers --status` prints what A earned.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"

P="Once upon a time"
OP=$(W op address 2>/dev/null) BUYER=$(W buyer address 2>/dev/null)

start_ledger_node "$OP"
W op deposit 100 --to "$BUYER" $L >/dev/null 2>"$TMP/err" && ok "ledger up, buyer funded" || fail "deposit: $(cat "$TMP/err")"

# (digests from one-shot runs are never refreshed: --stale-ms keeps them in view for the test)
COMMON=(--model "$M" --pay-chunk 8 --require-payment $L --refresh-ms 1000 --stale-ms 60000 --log-level info)
"$BIN" node --home "$TMP/a" "${COMMON[@]}" --price 1000000 --price-in 1000000 --price-out 1000000 >"$TMP/a.log" 2>&1 &
pids+=($!)
wait_log "$TMP/a.log" "DHT port" || { fail "node A did not start: $(head -c 600 "$TMP/a.log")"; finish; exit 1; }
BS=127.0.0.1:$(grep -o "DHT port [0-9]*" "$TMP/a.log" | head -1 | awk '{print $3}')
"$BIN" node --home "$TMP/b" "${COMMON[@]}" --bootstrap "$BS" --price 2000000 --price-in 2000000 --price-out 2000000 >"$TMP/b.log" 2>&1 &
pids+=($!)
"$BIN" node --home "$TMP/g" "${COMMON[@]}" --bootstrap "$BS" --price 3000000 --price-in 3000000 --price-out 3000000 \
  --api 127.0.0.1:0 >"$TMP/g.out" 2>"$TMP/g.log" &
pids+=($!)
URL=""
for _ in $(seq 150); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$TMP/g.out" 2>/dev/null | head -1)
  [ -n "$URL" ] && grep -q "DHT port" "$TMP/b.log" && break
  sleep 0.1
done
[ -n "$URL" ] && ok "nodes A, B and G (gateway $URL) up" || { fail "no gateway: $(tail -3 "$TMP/g.log")"; finish; exit 1; }
id_of() { "$BIN" peers --home "$TMP/$1" --status | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])'; }
A=$(id_of a) B=$(id_of b)
AW=$(W a address 2>/dev/null)
# the gateway sees A and B connected
for _ in $(seq 100); do
  curl -s "$URL/api/status" | python3 -c '
import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(p["connected"] for p in s["peers"]) >= 2 else 1)' 2>/dev/null && break
  sleep 0.1
done

RUN=("$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 12 --temp 0 --ignore-eos --pay $L --wallet-home "$TMP/buyer" --budget 2)
for i in 1 2; do
  "${RUN[@]}" --prefer price >/dev/null 2>"$TMP/run$i.err"
  rc=$?
  [ $rc = 0 ] && grep -q "paid provider $AW" "$TMP/run$i.err" && ok "paid run $i (--prefer price) went to A" \
    || fail "run $i: exit $rc, $(grep -i 'paid\|route\|error' "$TMP/run$i.err" | tail -3)"
done

# The gateway watches each provider's digest key: A's two digests arrive.
sc=""
for _ in $(seq 100); do
  sc=$(curl -s "$URL/api/status" | python3 -c '
import json,sys
s=json.load(sys.stdin); a, b = sys.argv[1], sys.argv[2]
p = {x["id"]: x for x in s["peers"]}
assert p[a]["digests"] == 2 and p[a]["score"] is not None, p[a]
assert p[b]["digests"] == 0 and p[b]["score"] is None, p[b]
assert p[a]["price"] == 1000000 and p[b]["price"] == 2000000, (p[a]["price"], p[b]["price"])
g = s["gateway"]
assert g["earnings"] == 0 and g["spend"] == 0, g
print(p[a]["score"])' "$A" "$B" 2>/dev/null) && break
  sleep 0.2
done
[ -n "$sc" ] && ok "/api/status: A has the buyer's 2 digests (score $sc), B none; prices shown; G earned 0" \
  || fail "status: $(curl -s "$URL/api/status" | head -c 800)"

# --no-digest: paid, but nothing published.
"${RUN[@]}" --prefer price --no-digest >/dev/null 2>"$TMP/run3.err" && ok "a paid run with --no-digest" \
  || fail "run 3: $(tail -c 300 "$TMP/run3.err")"
sleep 2
n=$(curl -s "$URL/api/status" | python3 -c 'import json,sys; print({x["id"]: x for x in json.load(sys.stdin)["peers"]}[sys.argv[1]]["digests"])' "$A")
[ "$n" = 2 ] && ok "--no-digest published nothing (A still has 2 digests)" || fail "digests about A: $n"

# Reputation over price: a buyer weighing reputation only goes to A, whose
# digests it checked at the ledger, not to the unknown B or G.
"${RUN[@]}" --prefer reputation >/dev/null 2>"$TMP/run4.err"
rc=$?
short=${A:0:16}
[ $rc = 0 ] && grep -q "paid provider $AW" "$TMP/run4.err" && ok "--prefer reputation: routed to A and paid it" \
  || fail "run 4: exit $rc, $(grep -i 'paid\|reputation\|error' "$TMP/run4.err" | tail -4)"
line=$(grep "provider $short: reputation" "$TMP/run4.err" | head -1)
echo "$line" | grep -Eq "reputation 1.00 \([12] digests from others, payments checked at the ledger; 0 sessions of ours\)" \
  && ok "A's score from the ledger-checked digests: ${line#*client: }" || fail "no checked score for A: $(grep -i reputation "$TMP/run4.err" | head -3)"

# The provider's earnings: node status and the one-line summary.
wait_log "$TMP/a.log" "paid session settled"
sleep 1
st=$("$BIN" peers --home "$TMP/a" --status)
earned=$(echo "$st" | head -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["earned"])')
echo "$st" | tail -1 | grep -q "^earned [0-9]*\.[0-9]* units, spent 0\.000000 units$" && [ "$earned" -gt 0 ] \
  && ok "colony peers --status: $(echo "$st" | tail -1)" || fail "peers --status: $st"
finish

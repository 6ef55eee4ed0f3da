#!/usr/bin/env bash
# test_gateway_pay.sh - a gateway that pays its shard sessions (colony api
# --pay): a ledger node with a 2 s challenge window, a 2-hop chain of shard
# nodes ([0,3) and [3,5) of stories260K) that require payment, each with its
# own wallet and prices, and a gateway whose wallet the operator funded.
#  - two chat completions through the gateway (curl) give the text of
#    `colony run --chat` in one process;
#  - both providers settle every session; what they redeemed together ==
#    the gateway's /api/status "spend" == the ledger's debit of the gateway
#    wallet; the gateway publishes a reputation digest about each provider;
#  - the gateway closes each generation's channels itself and again after
#    the window: its wallet's reserved goes to 0 and its balance is the
#    deposit minus the spend, with no `colony wallet reclaim`; its
#    channels.db has every channel, closed;
#  - a gateway without --pay gets the shards' "payment required" as a clear
#    HTTP error;
#  - a gateway inside a node (colony node --api --pay) that serves [0,3)
#    itself: free to itself, pays [3,5); its spend = its node's "spent" = what
#    the providers gained; its wallet gets the rest back after the window;
#  - the ledger audits.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"

PIN1=1500000 POUT1=2500000 PIN2=700000 POUT2=3300000 CHUNK=8 N=40 DEP=100 WIN=2
# sanitizer builds are slower: a provider's redeem must still land within the
# window that the gateway's close opens
if [ -n "${COLONY_SANITIZED:-}" ]; then WIN=8; fi
U="Tell me a story about a cat."
OP=$(W op address 2>/dev/null) GW=$(W gw address 2>/dev/null)
P1=$(W p1 address 2>/dev/null) P2=$(W p2 address 2>/dev/null)
fmt() { python3 -c "import sys; v=int(sys.argv[1]); print('%d.%06d' % (v // 1000000, v % 1000000))" "$1"; }
micro() { python3 -c "import sys; a, b = sys.argv[1].split('.'); print(int(a) * 1000000 + int(b))" "$1"; }

start_ledger_node "$OP" --ledger-window $WIN
out=$(W op deposit $DEP --to "$GW" $L 2>"$TMP/err")
[ "$out" = "balance $DEP.000000  stake 0.000000  reserved 0.000000" ] && ok "ledger up (port $LP, window $WIN s), $DEP deposited for the gateway's wallet" \
  || fail "deposit: '$out' $(cat "$TMP/err")"

COMMON=(--model "$M" --pay-chunk $CHUNK --require-payment $L --refresh-ms 1000 --stale-ms 3000 --log-level info)
"$BIN" node --home "$TMP/p1" "${COMMON[@]}" --layers 0:3 --price-in $PIN1 --price-out $POUT1 >"$TMP/p1.log" 2>&1 &
pids+=($!)
wait_log "$TMP/p1.log" "DHT port" || { fail "shard node 1 did not start: $(head -c 600 "$TMP/p1.log")"; finish; exit 1; }
BS=127.0.0.1:$(grep -o "DHT port [0-9]*" "$TMP/p1.log" | head -1 | awk '{print $3}')
"$BIN" node --home "$TMP/p2" "${COMMON[@]}" --bootstrap "$BS" --layers 3:5 --price-in $PIN2 --price-out $POUT2 >"$TMP/p2.log" 2>&1 &
pids+=($!)
wait_log "$TMP/p2.log" "DHT port" || { fail "shard node 2 did not start: $(head -c 600 "$TMP/p2.log")"; finish; exit 1; }
ok "paid shard nodes up: [0,3) and [3,5), payment required (DHT $BS)"

# The gateways: one pays, one does not.
"$BIN" api -m "$M" --bootstrap "$BS" --stale-ms 3000 --pay $L --wallet-home "$TMP/gw" --budget 5 \
  >"$TMP/gw.out" 2>"$TMP/gw.err" &
GW_PID=$!
pids+=($GW_PID)
"$BIN" api -m "$M" --bootstrap "$BS" --stale-ms 3000 --wallet-home "$TMP/free" >"$TMP/free.out" 2>"$TMP/free.err" &
pids+=($!)
G="" F=""
for _ in $(seq 200); do
  G=$(grep -o 'http://127.0.0.1:[0-9]*/v1' "$TMP/gw.out" 2>/dev/null | head -1)
  F=$(grep -o 'http://127.0.0.1:[0-9]*/v1' "$TMP/free.out" 2>/dev/null | head -1)
  [ -n "$G" ] && [ -n "$F" ] && break
  sleep 0.1
done
[ -n "$G" ] && [ -n "$F" ] && ok "gateways up: paying $G, not paying $F" \
  || { fail "gateways: '$G' '$F' $(tail -3 "$TMP/gw.err" "$TMP/free.err")"; finish; exit 1; }
# Coverage: both spans connected, as each gateway's client sees them.
for g in "$G" "$F"; do
  for _ in $(seq 150); do
    curl -s "${g%/v1}/api/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); s=json.dumps(d); sys.exit(0 if "\"layers_covered\": 5" in s else 1)' 2>/dev/null && break
    sleep 0.1
  done
done

want=$("$BIN" run -m "$M" --chat -p "$U" -n $N --temp 0 2>/dev/null)
body() { python3 -c 'import json,sys; print(json.dumps({"model": "stories260K", "max_tokens": int(sys.argv[1]), "temperature": 0,
  "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$N" "$U"; }
content() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$1" 2>/dev/null; }

# A gateway that does not pay: the shards' refusal, as a clear HTTP error.
st=$(curl -s -m 60 -o "$TMP/unpaid.json" -w '%{http_code}' "$F/chat/completions" -H 'Content-Type: application/json' -d "$(body)")
{ [ "$st" = 503 ] || [ "$st" = 402 ]; } && grep -q "payment required" "$TMP/unpaid.json" \
  && ok "gateway without --pay: HTTP $st, $(head -c 200 "$TMP/unpaid.json")" || fail "unpaid gateway: $st $(head -c 400 "$TMP/unpaid.json")"

# Two chat completions through the paying gateway.
for i in 1 2; do
  st=$(curl -s -m 60 -o "$TMP/c$i.json" -w '%{http_code}' "$G/chat/completions" -H 'Content-Type: application/json' -d "$(body)")
  got=$(content "$TMP/c$i.json")
  [ "$st" = 200 ] && [ -n "$want" ] && [ "$got" = "$want" ] && ok "paid chat completion $i: 200, the text of colony run --chat" \
    || fail "paid completion $i: $st [$got] vs [$want] $(head -c 300 "$TMP/c$i.json") $(grep -i 'pay\|channel' "$TMP/gw.err" | tail -3)"
done

# Each provider settles each of its two sessions.
settled() { grep -c "paid session settled" "$1" 2>/dev/null; }
for _ in $(seq 300); do [ "$(settled "$TMP/p1.log")" -ge 2 ] && [ "$(settled "$TMP/p2.log")" -ge 2 ] && break; sleep 0.1; done
[ "$(settled "$TMP/p1.log")" = 2 ] && [ "$(settled "$TMP/p2.log")" = 2 ] && ok "both providers settled two sessions each" \
  || fail "settled: p1 $(settled "$TMP/p1.log"), p2 $(settled "$TMP/p2.log"): $(grep -i 'redeem\|settle' "$TMP/p1.log" "$TMP/p2.log" | tail -4)"
bal() { W "$1" balance $L 2>/dev/null | awk '{print $2}'; }
R1=$(micro "$(bal p1)") R2=$(micro "$(bal p2)")
REDEEMED=$((R1 + R2))
status() { curl -s "${G%/v1}/api/status"; }
jget() { python3 -c '
import json, sys
def find(o, k):
    if isinstance(o, dict):
        if k in o: return o[k]
        for v in o.values():
            r = find(v, k)
            if r is not None: return r
    return None
print(find(json.load(sys.stdin), sys.argv[1]))' "$1"; }
# the client's view is refreshed every 500 ms
for _ in $(seq 100); do SPEND=$(status | jget spend); [ "$SPEND" = "$REDEEMED" ] && break; sleep 0.1; done
gwo=$(W gw balance $L 2>/dev/null)
gbal=$(micro "$(echo "$gwo" | awk '{print $2}')") gres=$(micro "$(echo "$gwo" | awk '{print $6}')")
DEBIT=$((DEP * 1000000 - gbal - gres))
[ "$R1" -gt 0 ] && [ "$R2" -gt 0 ] && [ "$REDEEMED" = "$SPEND" ] && [ "$SPEND" = "$DEBIT" ] \
  && ok "redeemed by the providers $(fmt $R1) + $(fmt $R2) = gateway spend $(fmt $SPEND) = ledger debit of its wallet" \
  || fail "providers $R1 + $R2, gateway spend '$SPEND', ledger debit $DEBIT ($gwo)"
# What the counted tokens cost: each hop is paid for the prompt and the n - 1
# forwarded tokens of each completion (ceil of count x price / 1M per
# channel), so the two providers' shares follow their prices.
read -r pt ct < <(python3 -c 'import json,sys; u=json.load(open(sys.argv[1]))["usage"]; print(u["prompt_tokens"], u["completion_tokens"])' "$TMP/c1.json")
charge() { echo $(( (pt * $1 + 999999) / 1000000 + ((ct - 1) * $2 + 999999) / 1000000 )); }
C1=$(charge $PIN1 $POUT1) C2=$(charge $PIN2 $POUT2)
[ "$R1" = $((2 * C1)) ] && [ "$R2" = $((2 * C2)) ] && ok "each provider paid its charge twice ($pt prompt + $((ct - 1)) forwarded tokens): $C1, $C2" \
  || fail "provider payments $R1, $R2; per completion by the usage ($pt, $ct): $C1, $C2"
for _ in $(seq 300); do [ "$(status | jget digests_published)" -ge 2 ] 2>/dev/null && break; sleep 0.1; done
ND=$(status | jget digests_published)
[ "$ND" -ge 2 ] 2>/dev/null && ok "the gateway publishes reputation digests about the providers it paid ($ND)" \
  || fail "digests published: '$ND'"

# The gateway closes its channels; after the window it closes them again and
# the rest of each budget is back.
ok_after=0
for _ in $(seq $((WIN * 10 + 200))); do
  gwo=$(W gw balance $L 2>/dev/null)
  [ "$(echo "$gwo" | awk '{print $6}')" = "0.000000" ] && { ok_after=1; break; }
  sleep 0.1
done
want_bal=$(fmt $((DEP * 1000000 - SPEND)))
[ $ok_after = 1 ] && [ "$gwo" = "balance $want_bal  stake 0.000000  reserved 0.000000" ] \
  && ok "after the window: the gateway wallet has reserved 0, balance = deposit - spend ($want_bal)" \
  || fail "gateway wallet after the window: '$gwo', want balance $want_bal and reserved 0; $(grep -i 'channel' "$TMP/gw.err" | tail -4)"
nch=$(W gw channels 2>/dev/null | grep -c "^channel ")
ncl=$(W gw channels 2>/dev/null | grep -c "^channel [0-9a-f]*  closed ")
[ "$nch" = 4 ] && [ "$ncl" = 4 ] && ok "the gateway's channels.db: $nch channels (2 completions x 2 hops), all closed" \
  || fail "gateway channels.db: $nch channels, $ncl closed: $(W gw channels 2>&1 | cut -c1-160)"

# A gateway inside a node (colony node --api --pay): the node serves [0,3) as
# well, free to its own gateway (paying itself would move nothing), and pays
# [3,5) at p2; its /api/status spend, its node's "spent" and what the
# providers gained agree, and its wallet gets the rest back after the window.
NG=$(W ng address 2>/dev/null)
W op deposit $DEP --to "$NG" $L >/dev/null 2>&1
before=$(( $(micro "$(bal p1)") + $(micro "$(bal p2)") ))
"$BIN" node --home "$TMP/ng" --model "$M" --layers 0:3 --bootstrap "$BS" $L --refresh-ms 1000 --stale-ms 3000 \
  --api 127.0.0.1:0 --pay --budget 5 --log-level info >"$TMP/ng.out" 2>"$TMP/ng.err" &
NG_PID=$!
pids+=($NG_PID)
NU=""
for _ in $(seq 200); do NU=$(grep -o 'http://127.0.0.1:[0-9]*/v1' "$TMP/ng.out" 2>/dev/null | head -1); [ -n "$NU" ] && break; sleep 0.1; done
for _ in $(seq 150); do
  curl -s "${NU%/v1}/api/status" | python3 -c 'import json,sys; s=json.dumps(json.load(sys.stdin)); sys.exit(0 if "\"layers_covered\": 5" in s else 1)' 2>/dev/null && break
  sleep 0.1
done
st=$(curl -s -m 60 -o "$TMP/n1.json" -w '%{http_code}' "$NU/chat/completions" -H 'Content-Type: application/json' -d "$(body)")
[ "$st" = 200 ] && [ "$(content "$TMP/n1.json")" = "$want" ] && ok "chat completion through the paying gateway of a node: 200, the same text" \
  || fail "node gateway: $st $(head -c 300 "$TMP/n1.json") $(grep -i 'pay\|channel' "$TMP/ng.err" | tail -3)"
for _ in $(seq 300); do [ "$(settled "$TMP/p2.log")" -ge 3 ] && break; sleep 0.1; done
after=$(( $(micro "$(bal p1)") + $(micro "$(bal p2)") ))
for _ in $(seq 100); do SN=$(curl -s "${NU%/v1}/api/status" | jget spend); [ "$SN" = $((after - before)) ] && break; sleep 0.1; done
nst=$("$BIN" peers --home "$TMP/ng" --status 2>&1)
[ "${SN:-0}" -gt 0 ] && [ $((after - before)) = "$SN" ] && echo "$nst" | grep -q "\"spent\":$SN\b" \
  && ok "node gateway: providers gained $(fmt $((after - before))) = its /api/status spend = the node's \"spent\"" \
  || fail "node gateway: providers gained $((after - before)), spend '$SN', node status ${nst:0:200}"
ok_after=0
for _ in $(seq $((WIN * 10 + 200))); do
  ngo=$(W ng balance $L 2>/dev/null)
  [ "$(echo "$ngo" | awk '{print $6}')" = "0.000000" ] && { ok_after=1; break; }
  sleep 0.1
done
[ $ok_after = 1 ] && [ "$ngo" = "balance $(fmt $((DEP * 1000000 - SN)))  stake 0.000000  reserved 0.000000" ] \
  && ok "node gateway's wallet after the window: $ngo" || fail "node gateway wallet: '$ngo', spend $SN"
kill -TERM $NG_PID; wait $NG_PID 2>/dev/null

kill -TERM $GW_PID
for _ in $(seq 100); do kill -0 $GW_PID 2>/dev/null || break; sleep 0.1; done
wait $GW_PID 2>/dev/null
st=$?
[ "$st" = 0 ] && ok "the paying gateway stops cleanly on SIGTERM" || fail "gateway exit status $st: $(tail -3 "$TMP/gw.err")"

kill -TERM $LEDGER_PID; wait $LEDGER_PID 2>/dev/null
out=$(W op audit --ledger "$TMP/ledger.db" 2>"$TMP/err")
echo "$out" | grep -q "^audit ok: deposits $((2 * DEP)).000000 .* redeemed $(fmt $((SPEND + ${SN:-0})))" && ok "ledger audit: ${out:0:80}..." \
  || fail "audit: '$out' $(cat "$TMP/err")"
finish

#!/usr/bin/env bash
# test_pay.sh - a paid generation end to end: a ledger node, a shard node that
# serves every layer of stories260K at a price and requires payment, and a
# buyer whose wallet the operator funded. `colony run --swarm --pay` gives the
# single-process text; when the session ends the provider redeems the last
# voucher and is paid exactly the charge of the counted tokens (ceil of each
# count x price / 1M); the buyer's balance + reserved budget adds up; the
# ledger audits; an unpaid run is refused with "payment required". Every
# chunk's receipt from the provider matched the buyer's own count. A buyer
# whose channel lives at another ledger (so the provider's ledger does not
# know it) is refused: the provider checks the channel before serving.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"

PIN=1500000 POUT=2500000 CHUNK=16 N=48 DEP=100
P="Once upon a time"
OP=$(W op address 2>/dev/null) BUYER=$(W buyer address 2>/dev/null) PROV=$(W prov address 2>/dev/null)


start_ledger_node "$OP"
ok "ledger node up on port $LP"

out=$(W op deposit $DEP --to "$BUYER" $L 2>"$TMP/err")
[ "$out" = "balance $DEP.000000  stake 0.000000  reserved 0.000000" ] && ok "operator deposit to the buyer" \
  || fail "deposit: '$out' $(cat "$TMP/err")"

"$BIN" node --home "$TMP/prov" --model "$M" --layers 0:5 --price-in $PIN --price-out $POUT --pay-chunk $CHUNK \
  --require-payment $L --log-level info >"$TMP/prov.log" 2>&1 &
pids+=($!)
wait_log "$TMP/prov.log" "DHT port" || { fail "shard node did not start: $(head -c 600 "$TMP/prov.log")"; finish; exit 1; }
BS=127.0.0.1:$(grep -o "DHT port [0-9]*" "$TMP/prov.log" | head -1 | awk '{print $3}')
ok "paid shard node up (DHT $BS)"

want=$("$BIN" run -m "$M" -p "$P" -n $N --temp 0 --ignore-eos 2>/dev/null)

# Unpaid: refused, and the error says why.
"$BIN" run -m "$M" --swarm "$BS" -p "$P" -n $N --temp 0 --ignore-eos --timeout-ms 3000 >"$TMP/free.out" 2>"$TMP/free.err"
rc=$?
[ $rc != 0 ] && grep -q "payment required" "$TMP/free.err" && ok "unpaid run refused: payment required (exit $rc)" \
  || fail "unpaid run: exit $rc, $(tail -c 400 "$TMP/free.err")"

# Paid.
got=$("$BIN" run -m "$M" --swarm "$BS" -p "$P" -n $N --temp 0 --ignore-eos --pay $L --wallet-home "$TMP/buyer" \
  --budget 5 2>"$TMP/pay.err")
rc=$?
[ $rc = 0 ] && [ "$got" = "$want" ] && ok "paid swarm run: same text as one process" \
  || fail "paid run: exit $rc [$got] vs [$want] $(tail -c 600 "$TMP/pay.err")"
line=$(grep "paid provider $PROV" "$TMP/pay.err")
[ -n "$line" ] && ok "paid line: ${line#colony: }" || fail "no paid line: $(tail -c 400 "$TMP/pay.err")"
NP=$(grep -o "prompt [0-9]* tokens" "$TMP/pay.err" | awk '{print $2}')
tin=$(echo "$line" | grep -o "[0-9]* tokens in" | awk '{print $1}')
tout=$(echo "$line" | grep -o "[0-9]* out" | awk '{print $1}')
paid=$(echo "$line" | grep -o "([0-9]* micro-units" | tr -d '(' | awk '{print $1}')
[ "$tin" = "$NP" ] && [ "$tout" = $((N - 1)) ] && ok "counted $tin in (the prompt), $tout out (n - 1 forwarded)" \
  || fail "counts: in '$tin' (prompt $NP), out '$tout'"
charge=$(( (tin * PIN + 999999) / 1000000 + (tout * POUT + 999999) / 1000000 ))
[ "$paid" = "$charge" ] && ok "last voucher carries the charge: $charge micro-units" || fail "voucher $paid, charge $charge"
# One receipt per whole chunk served (the prompt is one FORWARD, shorter than a chunk).
nr=$(grep -o "[0-9]* receipts from the provider matched our count" "$TMP/pay.err" | awk '{print $1}')
[ "$NP" -lt $CHUNK ] && [ "$nr" = $(( (tin + tout) / CHUNK )) ] && ok "$nr receipts checked against our count" \
  || fail "receipts: '$nr' for $((tin + tout)) tokens, chunk $CHUNK: $(grep -i receipt "$TMP/pay.err" | tail -2)"

# The provider redeems when the session ends.
wait_log "$TMP/prov.log" "paid session settled" && ok "provider settled: $(grep -o 'paid session settled.*' "$TMP/prov.log" | head -1)" \
  || fail "no settlement: $(grep -i 'redeem\|pay' "$TMP/prov.log" | tail -3)"
fmt() { python3 -c "import sys; v=int(sys.argv[1]); print('%d.%06d' % (v // 1000000, v % 1000000))" "$1"; }
out=$(W prov balance $L 2>/dev/null)
[ "$out" = "balance $(fmt $charge)  stake 0.000000  reserved 0.000000" ] && ok "provider balance = charge ($out)" \
  || fail "provider: '$out', charge $(fmt $charge)"
# The node reports what it has earned on its control socket.
st=$("$BIN" peers --home "$TMP/prov" --status 2>&1)
echo "$st" | grep -q "\"earned\":$charge\b" && ok "node status: earned $charge micro-units" \
  || fail "node status has no earned $charge: ${st:0:300}"
out=$(W buyer balance $L 2>/dev/null)
bal=$(echo "$out" | awk '{print $2}') res=$(echo "$out" | awk '{print $6}')
sum=$(python3 -c "print('%.6f' % (float('$bal') + float('$res') + $charge / 1e6))")
[ "$sum" = "$DEP.000000" ] && ok "buyer balance + reserved + paid = deposit ($out)" || fail "buyer: '$out' (+ $charge)"

# A channel the provider's ledger does not know: reserved at a second ledger.
"$BIN" node --home "$TMP/lh2" --ledger "$TMP/ledger2.db" --ledger-operator "$OP" --log-level info >"$TMP/ledger2.log" 2>&1 &
pids+=($!)
wait_log "$TMP/ledger2.log" "transport 127.0.0.1:[0-9]" || { fail "second ledger did not start"; finish; exit 1; }
L2="--ledger-peer 127.0.0.1:$(grep -o "transport 127.0.0.1:[0-9]*" "$TMP/ledger2.log" | head -1 | cut -d: -f2)"
W op deposit $DEP --to "$BUYER" $L2 >/dev/null 2>&1
"$BIN" run -m "$M" --swarm "$BS" -p "$P" -n 8 --temp 0 --ignore-eos --pay $L2 --wallet-home "$TMP/buyer" \
  --budget 5 --timeout-ms 5000 >/dev/null 2>"$TMP/nochan.err"
rc=$?
[ $rc != 0 ] && grep -q "no such channel at the ledger" "$TMP/nochan.err" \
  && ok "a channel unknown to the provider's ledger: refused (exit $rc)" \
  || fail "unknown channel: exit $rc, $(tail -c 500 "$TMP/nochan.err")"
[ "$(grep -c 'paid session settled' "$TMP/prov.log")" = 1 ] && ok "nothing served or redeemed for it" \
  || fail "provider settled $(grep -c 'paid session settled' "$TMP/prov.log") sessions"

kill -TERM $LEDGER_PID; wait $LEDGER_PID 2>/dev/null
out=$(W op audit --ledger "$TMP/ledger.db" 2>"$TMP/err")
echo "$out" | grep -q "^audit ok: deposits $DEP.000000 .* redeemed $(fmt $charge)" && ok "ledger audit: ${out:0:60}..." \
  || fail "audit: '$out' $(cat "$TMP/err")"
finish

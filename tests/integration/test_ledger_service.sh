#!/usr/bin/env bash
# test_ledger_service.sh - the ledger as a network service: a ledger node
# (`colony node --ledger`), wallets of an operator, a buyer, a provider and an
# outsider talking to it with `colony wallet --ledger-peer`. Deposits only by
# the operator, a channel reserved, vouchers redeemed and closed with exact
# balances; requests signed by the wrong wallet and a replayed request are
# refused; the ledger node is SIGKILLed in the middle of a burst of redeems,
# restarted on the same database, and every balance reconciles (ledger audit)
# with no voucher paid twice.
. "$(dirname "$0")/lib.sh"

DB=$TMP/ledger.db
LH=$TMP/ledger-home
NODE_PID=
cleanup_node() { [ -n "$NODE_PID" ] && kill -KILL "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null; NODE_PID=; }
trap 'cleanup_node; rm -rf "$TMP"' EXIT

OP=$(W op address 2>/dev/null) BUYER=$(W buyer address 2>/dev/null)
PROV=$(W prov address 2>/dev/null) EVE=$(W eve address 2>/dev/null)

# start_node LOG: runs the ledger node, sets PORT from its log.
start_node() {
  "$BIN" node --home "$LH" --ledger "$DB" --ledger-operator "$OP" --log-level info >"$1" 2>&1 &
  NODE_PID=$!
  PORT=
  for _ in $(seq 100); do
    PORT=$(grep -o "transport 127.0.0.1:[0-9]*" "$1" 2>/dev/null | head -1 | cut -d: -f2)
    [ -n "$PORT" ] && break
    sleep 0.1
  done
  if [ -z "$PORT" ]; then fail "ledger node did not start: $(head -c 600 "$1")"; finish; exit 1; fi
  L="--ledger-peer 127.0.0.1:$PORT --timeout-ms 5000"
}
start_node "$TMP/node1.log"
ok "ledger node up on port $PORT"

# Money in: only the operator's signature moves it.
out=$(W op deposit 100 --to "$BUYER" $L 2>"$TMP/err")
[ "$out" = "balance 100.000000  stake 0.000000  reserved 0.000000" ] && ok "operator deposit to the buyer" \
  || fail "operator deposit: '$out' $(cat "$TMP/err")"
expect_exit 1 "the buyer cannot deposit to itself" W buyer deposit 5 $L
grep -q "not authorized" "$TMP/err" && ok "says: not authorized" || fail "message: $(cat "$TMP/err")"
expect_exit 1 "the buyer cannot withdraw (operator only)" W buyer withdraw 1 $L
expect_exit 1 "an outsider cannot read the buyer's account" W eve balance "$BUYER" $L

# A channel buyer -> provider.
CH=$(W buyer reserve "$PROV" 10 --expiry 3600 $L 2>"$TMP/err")
[[ "$CH" =~ ^[0-9a-f]{64}$ ]] && ok "reserve returns a channel id" || fail "reserve: '$CH' $(cat "$TMP/err")"
out=$(W buyer balance $L 2>/dev/null)
[ "$out" = "balance 90.000000  stake 0.000000  reserved 10.000000" ] && ok "budget left the buyer's balance" \
  || fail "buyer after reserve: '$out'"
expect_exit 0 "the provider reads the channel" W prov channel "$CH" $L
expect_exit 1 "an outsider cannot read the channel" W eve channel "$CH" $L
expect_exit 1 "an outsider cannot close the channel as its buyer" W eve close "$CH" --as buyer $L
expect_exit 1 "the buyer cannot close as the provider" W buyer close "$CH" --as provider $L

# Replay: the same signed bytes a second time.
expect_exit 4 "a replayed request is refused" W buyer balance $L --resend
grep -q "replayed or stale" "$TMP/out" && ok "says: replayed" || fail "replay message: $(cat "$TMP/out") $(cat "$TMP/err")"

# Vouchers signed by the buyer (the voucher code, offline), 0.01 each, cumulative.
N=300
W buyer voucher "$CH" 0.01 --count $N >"$TMP/v.txt" 2>/dev/null
[ "$(wc -l <"$TMP/v.txt")" = $N ] && ok "$N vouchers signed" || fail "voucher count $(wc -l <"$TMP/v.txt")"
head -5 "$TMP/v.txt" >"$TMP/v5.txt"
W prov redeem "$TMP/v5.txt" $L >"$TMP/r0.txt" 2>"$TMP/err"
[ "$(awk '{print $4}' "$TMP/r0.txt" | sort -u)" = "0.010000" ] && ok "first 5 vouchers pay 0.01 each" \
  || fail "first redeems: $(cat "$TMP/r0.txt" "$TMP/err")"
out=$(W prov redeem "$TMP/v5.txt" $L 2>/dev/null | awk '{print $4}' | sort -u)
[ "$out" = "0.000000" ] && ok "the same vouchers again pay nothing" || fail "second redeem paid '$out'"
# A voucher forged by another wallet for this channel pays nothing.
W eve voucher "$CH" 9 --seq 1000 >"$TMP/forged.txt" 2>/dev/null
expect_exit 1 "a voucher not signed by the buyer is refused" W prov redeem "$TMP/forged.txt" $L

# The burst, and SIGKILL of the ledger in the middle of it.
tail -n +6 "$TMP/v.txt" >"$TMP/vrest.txt"
W prov redeem "$TMP/vrest.txt" $L >"$TMP/r1.txt" 2>"$TMP/r1.err" &
RP=$!
for _ in $(seq 200); do [ "$(wc -l <"$TMP/r1.txt")" -ge 20 ] && break; sleep 0.02; done
kill -KILL "$NODE_PID"; wait "$NODE_PID" 2>/dev/null; NODE_PID=
wait $RP; rrc=$?
done1=$(wc -l <"$TMP/r1.txt")
if [ "$rrc" != 0 ] && [ "$done1" -lt $((N - 5)) ]; then ok "ledger killed after $done1 of $((N - 5)) redeems (client: $(head -c 120 "$TMP/r1.err"))"
else fail "the kill did not interrupt the burst (exit $rrc, $done1 done)"; fi

start_node "$TMP/node2.log"
ok "ledger node restarted on the same database (port $PORT)"
W prov redeem "$TMP/vrest.txt" $L >"$TMP/r2.txt" 2>"$TMP/err" && ok "all vouchers presented again" \
  || fail "redeem after restart: $(cat "$TMP/err")"
# Paid in total, as the provider saw it: every payment but at most the one
# whose answer the kill swallowed; never more than the top voucher.
seen=$(cat "$TMP/r0.txt" "$TMP/r1.txt" "$TMP/r2.txt" | awk '{s += $4 * 1000000} END {printf "%d", s + 0.5}')
top=$((N * 10000))
if [ "$seen" -le "$top" ] && [ "$seen" -ge $((top - 10000)) ]; then ok "payments seen $seen of $top micro-units (no double pay)"
else fail "payments seen $seen, top voucher $top"; fi
out=$(W prov channel "$CH" $L 2>/dev/null)
echo "$out" | grep -q "redeemed 3.000000 .*last_seq $N " && ok "channel redeemed exactly the top voucher" \
  || fail "channel: '$out'"
out=$(W prov balance $L 2>/dev/null)
[ "$out" = "balance 3.000000  stake 0.000000  reserved 0.000000" ] && ok "provider paid 3.000000" || fail "provider: '$out'"

# Close by the provider settles at once: the rest goes back to the buyer.
out=$(W prov close "$CH" --as provider $L 2>"$TMP/err")
echo "$out" | grep -q "closed  budget 10.000000  redeemed 3.000000  refunded 7.000000" && ok "provider close refunds 7" \
  || fail "close: '$out' $(cat "$TMP/err")"
out=$(W buyer balance $L 2>/dev/null)
[ "$out" = "balance 97.000000  stake 0.000000  reserved 0.000000" ] && ok "buyer balance 97" || fail "buyer: '$out'"
expect_exit 0 "operator withdraws 1 for the provider" W op withdraw 1 --to "$PROV" $L
out=$(W op balance "$PROV" $L 2>/dev/null)
[ "$out" = "balance 2.000000  stake 0.000000  reserved 0.000000" ] && ok "provider balance 2 after withdrawal" \
  || fail "provider: '$out'"

kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null; NODE_PID=
out=$(W op audit --ledger "$DB" 2>"$TMP/err")
echo "$out" | grep -q "^audit ok: deposits 100.000000 withdrawals 1.000000 balances 99.000000 stakes 0.000000 reserved 0.000000 redeemed 3.000000 refunded 7.000000" \
  && ok "audit: conservation holds, every channel adds up" || fail "audit: '$out' $(cat "$TMP/err")"
finish

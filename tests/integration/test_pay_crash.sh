#!/usr/bin/env bash
# test_pay_crash.sh - paid sessions survive SIGKILL of the ledger, the buyer
# and the provider. A ledger node (short challenge window), a paid shard node
# (stories260K, payment required) and a funded buyer. Each round starts a
# paid `colony run --swarm --pay`, SIGKILLs one of {ledger, provider, buyer}
# (cycled) after a random delay (the seed is printed; COLONY_CRASH_SEED
# repeats a run), restarts what died (the ledger on the same database and
# port, the provider on the same homes and ports), waits until the provider
# has redeemed every voucher it stored, has the buyer reclaim its channels
# (colony wallet reclaim: a close, then after the window a close that
# refunds), and checks:
#   - the ledger audits (conservation, each channel's payments add up to
#     its highest redeemed voucher) and nothing stays reserved;
#   - buyer balance + provider balance == the deposit;
#   - per channel: redeemed at the ledger == the best voucher the provider
#     stored (0 if none), <= budget, and the channel is closed;
#   - every channel at the ledger is in the buyer's channels.db, closed;
#   - the provider's balance == the sum of its stored best vouchers;
#   - presenting every stored voucher again pays nothing (redeem is
#     idempotent: no (channel, seq) pays twice).
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"

SEED=${COLONY_CRASH_SEED:-$(( $(date +%s) % 32768 ))}
RANDOM=$SEED
ROUNDS=${COLONY_CRASH_ROUNDS:-15}
WIN=5 PIN=1500000 POUT=2500000 CHUNK=8 N=600 DEP=100 BUDGET=1
# Under a sanitizer everything is several times slower: shorter runs, fewer rounds.
if [ -n "${COLONY_SANITIZED:-}" ]; then N=300 ROUNDS=${COLONY_CRASH_ROUNDS:-6} WIN=8; fi
P="Once upon a time"
echo "# seed $SEED, $ROUNDS rounds, challenge window $WIN s${KEEP:+, files in $TMP}"
OP=$(W op address 2>/dev/null) BUYER=$(W buyer address 2>/dev/null) PROV=$(W prov address 2>/dev/null)

WAIT_LOG_S=30
alive() { kill -0 "$1" 2>/dev/null; }

nl=0 np=0 LP=0 PP=0 PD=0
start_ledger() {
  nl=$((nl + 1))
  "$BIN" node --home "$TMP/lh" --port "$LP" --ledger "$TMP/ledger.db" --ledger-operator "$OP" --ledger-window $WIN \
    --log-level info >"$TMP/ledger.$nl.log" 2>&1 &
  LEDGER_PID=$!
  pids+=($LEDGER_PID)
  wait_log "$TMP/ledger.$nl.log" "transport 127.0.0.1:[0-9]" || return 1
  LP=$(grep -o "transport 127.0.0.1:[0-9]*" "$TMP/ledger.$nl.log" | head -1 | cut -d: -f2)
}
start_prov() {
  np=$((np + 1))
  "$BIN" node --home "$TMP/prov" --port "$PP" --dht-port "$PD" --model "$M" --layers 0:5 --price-in $PIN \
    --price-out $POUT --pay-chunk $CHUNK --require-payment --ledger-peer "127.0.0.1:$LP" --log-level info \
    >"$TMP/prov.$np.log" 2>&1 &
  PROV_PID=$!
  pids+=($PROV_PID)
  wait_log "$TMP/prov.$np.log" "DHT port" || return 1
  PP=$(grep -o "transport 127.0.0.1:[0-9]*" "$TMP/prov.$np.log" | head -1 | cut -d: -f2)
  PD=$(grep -o "DHT port [0-9]*" "$TMP/prov.$np.log" | head -1 | awk '{print $3}')
}

start_ledger || { fail "ledger node did not start: $(head -c 600 "$TMP/ledger.1.log")"; finish; exit 1; }
L="--ledger-peer 127.0.0.1:$LP"
out=$(W op deposit $DEP --to "$BUYER" $L 2>"$TMP/err")
[ "$out" = "balance $DEP.000000  stake 0.000000  reserved 0.000000" ] && ok "ledger on port $LP, buyer funded" \
  || { fail "deposit: '$out' $(cat "$TMP/err")"; finish; exit 1; }
start_prov || { fail "shard node did not start: $(head -c 600 "$TMP/prov.1.log")"; finish; exit 1; }
BS=127.0.0.1:$PD
ok "paid shard node up (transport $PP, DHT $PD)"

# micro-units from "X.YYYYYY"
mu() { local a=${1%.*} b=${1#*.}; echo $(( 10#$a * 1000000 + 10#$b )); }

# A first run without crashes gives the duration the kill delays are drawn from.
t0=$(date +%s%N)
"$BIN" run -m "$M" --swarm "$BS" -p "$P" -n $N --temp 0 --ignore-eos --pay $L --wallet-home "$TMP/buyer" \
  --budget $BUDGET >/dev/null 2>"$TMP/run.0.err" || { fail "paid run: $(tail -c 600 "$TMP/run.0.err")"; finish; exit 1; }
RUN_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
TPS=$(grep -o "generation [0-9]* tokens, [0-9]*" "$TMP/run.0.err" | awk '{print $4}')
GEN_MS=$(( N * 1000 / (${TPS:-1000} > 0 ? ${TPS:-1000} : 1000) ))
grep -q "closing:" "$TMP/run.0.err" && ok "paid run of $N tokens: $RUN_MS ms ($GEN_MS generating), its channel closed by the buyer" \
  || fail "no close after the run: $(tail -c 400 "$TMP/run.0.err")"

# Odd rounds kill at a random time from the start of the run (start-up,
# reserve, channel check, session); even rounds wait until the provider has
# stored the round's first voucher and kill during generation.
victims=(ledger provider buyer)
nvouchers() { W prov vouchers 2>/dev/null | grep -c "^channel"; }
pb_last=$(mu "$(W prov balance $L 2>/dev/null | awk '{print $2}')")
FULL=$pb_last
for r in $(seq 1 "$ROUNDS"); do
  v=${victims[$(( (r - 1) % 3 ))]}
  nv0=$(nvouchers)
  "$BIN" run -m "$M" --swarm "$BS" -p "$P" -n $N --temp 0 --ignore-eos --pay $L --wallet-home "$TMP/buyer" \
    --budget $BUDGET --timeout-ms 1500 >/dev/null 2>"$TMP/run.$r.err" &
  BUYER_PID=$!
  pids+=($BUYER_PID)
  if [ $((r % 2)) = 1 ]; then
    delay=$(( RANDOM % RUN_MS )) when="after $delay ms"
  else
    for _ in $(seq 100); do [ "$(nvouchers)" -gt "$nv0" ] && break; alive $BUYER_PID || break; sleep 0.02; done
    delay=$(( RANDOM % (GEN_MS * 3 / 4 + 1) )) when="$delay ms into the session"
  fi
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  case $v in
    ledger) kill -KILL $LEDGER_PID; wait $LEDGER_PID 2>/dev/null; start_ledger || fail "round $r: ledger restart" ;;
    provider) kill -KILL $PROV_PID; wait $PROV_PID 2>/dev/null; start_prov || fail "round $r: provider restart" ;;
    buyer) kill -KILL $BUYER_PID ;;
  esac
  # The buyer ends (done, or failed for want of a ledger or a provider).
  for _ in $(seq 300); do alive $BUYER_PID || break; sleep 0.1; done
  alive $BUYER_PID && { fail "round $r: the buyer hangs"; kill -KILL $BUYER_PID; }
  wait $BUYER_PID 2>/dev/null
  rc=$?
  # The provider redeems what it stored (at start after its crash; retried after a ledger crash).
  for _ in $(seq 200); do
    W prov vouchers >"$TMP/v" 2>/dev/null && ! grep -q " pending " "$TMP/v" && break; sleep 0.1
  done
  grep -q " pending " "$TMP/v" && fail "round $r: vouchers still pending: $(grep pending "$TMP/v" | cut -c1-120)"
  # The buyer closes what is open, waits out the window, and gets the rest back.
  W buyer reclaim $L >"$TMP/rc1" 2>"$TMP/err" || fail "round $r: reclaim: $(cat "$TMP/err")"
  if ! grep -q " 0 closing" "$TMP/rc1"; then
    # Until the last window ends (the ledger runs on this machine's clock).
    end=$(grep -o "close_at [0-9]*" "$TMP/rc1" | awk '{print $2}' | sort -n | tail -1)
    left=$(( ${end:-0} - $(date +%s) + 1 ))
    sleep $(( left < 1 ? 1 : left > WIN + 1 ? WIN + 1 : left ))
    W buyer reclaim $L >"$TMP/rc2" 2>"$TMP/err" || fail "round $r: reclaim: $(cat "$TMP/err")"
    grep -q " 0 closing, .* 0 failed" "$TMP/rc2" || fail "round $r: second reclaim: $(tail -1 "$TMP/rc2")"
  fi

  # Checks.
  bad=0
  audit=$(W op audit --ledger "$TMP/ledger.db" 2>"$TMP/err") || { fail "round $r: audit: $(cat "$TMP/err")"; bad=1; }
  reserved=$(echo "$audit" | grep -o "reserved [0-9.]*" | awk '{print $2}')
  [ "$reserved" = "0.000000" ] || { fail "round $r: still reserved: $audit"; bad=1; }
  bb=$(mu "$(W buyer balance $L 2>/dev/null | awk '{print $2}')")
  pb=$(mu "$(W prov balance $L 2>/dev/null | awk '{print $2}')")
  [ $((bb + pb)) = $((DEP * 1000000)) ] || { fail "round $r: buyer $bb + provider $pb != deposit"; bad=1; }
  W prov vouchers >"$TMP/v" 2>/dev/null
  stored=0
  while read -r _ ch _ _ _ amt _; do stored=$((stored + $(mu "$amt"))); done <"$TMP/v"
  [ "$stored" = "$pb" ] || { fail "round $r: provider balance $pb != stored vouchers $stored"; bad=1; }
  W buyer channels >"$TMP/ch" 2>/dev/null
  nch=0
  while read -r _ id st _; do
    [ "$st" = gone ] && continue
    nch=$((nch + 1))
    [ "$st" = closed ] || [ "$st" = reserving ] || { fail "round $r: channel ${id:0:16} is $st"; bad=1; }
    [ "$st" = reserving ] && continue   # never reached the ledger
    line=$(W buyer channel "$id" $L 2>/dev/null)
    red=$(mu "$(echo "$line" | grep -o "redeemed [0-9.]*" | awk '{print $2}')")
    bud=$(mu "$(echo "$line" | grep -o "budget [0-9.]*" | awk '{print $2}')")
    best=$(awk -v c="$id" '$2 == c {print $6}' "$TMP/v")
    best=$(mu "${best:-0.000000}")
    [ "$red" = "$best" ] && [ "$red" -le "$bud" ] || { fail "round $r: channel ${id:0:16}: redeemed $red, stored $best, budget $bud"; bad=1; }
  done <"$TMP/ch"
  # Every channel the ledger has is one the buyer recorded (before reserving it) and closed.
  nled=$(echo "$audit" | grep -o "channels [0-9]*" | awk '{print $2}')
  nclosed=$(grep -c "  closed  " "$TMP/ch")
  [ "$nled" = "$nclosed" ] || { fail "round $r: the ledger has $nled channels, the buyer closed $nclosed"; bad=1; }
  awk '{print $NF}' "$TMP/v" >"$TMP/vhex"
  if [ -s "$TMP/vhex" ]; then
    W prov redeem "$TMP/vhex" $L >"$TMP/again" 2>"$TMP/err" || { fail "round $r: redeem again: $(cat "$TMP/err")"; bad=1; }
    grep -qv "paid 0.000000$" "$TMP/again" && { fail "round $r: a voucher paid twice: $(grep -v 'paid 0.000000' "$TMP/again")"; bad=1; }
  fi
  # What the buyer signed (its log, when it lived to write it) against what the
  # provider was paid this round: a ledger crash loses nothing; a provider
  # crash loses at most the voucher in flight when it died (one chunk's charge
  # per channel), since every voucher it accepted was stored first.
  signed=$(grep -o "paid [0-9]* for" "$TMP/run.$r.err" | awk '{s += $2; n++} END {if (n) print s, n}')
  lost=
  if [ -n "$signed" ] && [ $v != buyer ]; then
    lost=$(( ${signed% *} - (pb - pb_last) )) nl_=${signed#* }
    max=$([ $v = ledger ] && echo 0 || echo $(( nl_ * (CHUNK * POUT / 1000000 + 1) )))
    [ $lost -ge 0 ] && [ $lost -le $max ] || { fail "round $r: the buyer signed ${signed% *}, the provider got $((pb - pb_last)) (at most $max may be lost)"; bad=1; }
  fi
  [ $bad = 0 ] && ok "round $r: SIGKILL $v $when (run exit $rc), paid $((pb - pb_last)) of $FULL${lost:+ (signed $((pb - pb_last + lost)))}; $nch channels closed; provider $pb = stored vouchers; buyer $bb; $(echo "$audit" | grep -o 'redemptions [0-9]*'); re-redeem pays 0"
  pb_last=$pb
done
finish

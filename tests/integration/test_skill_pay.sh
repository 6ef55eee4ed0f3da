#!/usr/bin/env bash
# test_skill_pay.sh - paid skill calls between gateways (docs/PROTOCOL.md
# "Paid skill calls"): a ledger node; node A offers the skill "story" at a
# fee per call and a price per 1M output tokens, with a wallet and the
# ledger; node B relays skill calls and pays with its wallet (funded by the
# operator); node C relays too, with an empty wallet.
#  - A answers an unpaid call with 402 payment_required and its terms;
#  - through B, with curl and the openai npm client, whole and streamed: 200,
#    no receipt line reaches the client, the streamed text equals the whole
#    one; every call is settled by A at the ledger;
#  - the channel at the ledger, A's balance and B's balance + reserved all
#    show calls x fee + ceil(tokens x price / 1e6), tokens being the usage the
#    clients saw; so do A's /api/status earnings, B's spend and B's node
#    status; B's channels.db has the channel, A's vouchers.db its best voucher,
#    redeemed; the ledger audits;
#  - a voucher signed by another wallet is refused with 402; C's call gets a
#    clear 402 (its wallet cannot reserve a channel);
#  - a client that pays a call's first voucher and then no receipt gets one
#    chunk of tokens and finish_reason "payment_required" (`colony wallet
#    voucher` signs its one voucher).
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"
NODEDIR="${COLONY_SRC:-$(dirname "$0")/../..}/tests/node"
T0=$(date +%s.%N)

FEE=1000 PRICE=2222222 CHUNK=8 N=40 DEP=100
U="Tell me a story."
OP=$(W op address 2>/dev/null) BUYER=$(W b address 2>/dev/null) PROV=$(W a address 2>/dev/null)
W mal address >/dev/null 2>&1
url_of() { grep -o 'http://127.0.0.1:[0-9]*/v1' "$1" 2>/dev/null | head -1; }

start_ledger_node "$OP"
out=$(W op deposit $DEP --to "$BUYER" $L 2>"$TMP/err")
[ "$out" = "balance $DEP.000000  stake 0.000000  reserved 0.000000" ] && ok "ledger up (port $LP), $DEP deposited for B's wallet" \
  || fail "deposit: '$out' $(cat "$TMP/err")"

COMMON=(--model "$M" --refresh-ms 1000 --stale-ms 3000 --log-level info $L)
printf 'You are a storyteller. Every story is about a little cat.\n' >"$TMP/story.txt"
"$BIN" node --home "$TMP/a" "${COMMON[@]}" --api 127.0.0.1:0 --skill story="$TMP/story.txt" \
  --skill-price $FEE:$PRICE --pay-chunk $CHUNK >"$TMP/a.out" 2>"$TMP/a.err" &
pids+=($!)
wait_log "$TMP/a.err" "DHT port" || { fail "A did not start: $(tail -5 "$TMP/a.err")"; finish; exit 1; }
BS=(--bootstrap "127.0.0.1:$(grep -o 'DHT port [0-9]*' "$TMP/a.err" | head -1 | awk '{print $3}')")
"$BIN" node --home "$TMP/b" "${COMMON[@]}" "${BS[@]}" --api 127.0.0.1:0 >"$TMP/b.out" 2>"$TMP/b.err" &
pids+=($!)
"$BIN" node --home "$TMP/c" "${COMMON[@]}" "${BS[@]}" --api 127.0.0.1:0 >"$TMP/c.out" 2>"$TMP/c.err" &
pids+=($!)
A="" B="" C=""
for _ in $(seq 200); do
  A=$(url_of "$TMP/a.out"); B=$(url_of "$TMP/b.out"); C=$(url_of "$TMP/c.out")
  [ -n "$A" ] && [ -n "$B" ] && [ -n "$C" ] && break
  sleep 0.1
done
[ -n "$A" ] && [ -n "$B" ] && [ -n "$C" ] && ok "gateways up: A $A (paid skill), B $B, C $C" \
  || { fail "no gateway URL: $(tail -3 "$TMP/a.err" "$TMP/b.err" "$TMP/c.err")"; finish; exit 1; }
for g in "$B" "$C"; do
  for _ in $(seq 150); do curl -s "$g/skills" | grep -q '"skill:story"' && break; sleep 0.1; done
done
curl -s "$B/skills" | grep -q '"skill:story"' && ok "B lists skill:story" || fail "B does not list the skill: $(curl -s "$B/skills")"
# the signed offer names A's wallet: the only one a buyer pays for this skill
curl -s "$B/skills" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; s=[x for x in d if x["id"]=="skill:story"][0]; assert s["wallet"]==sys.argv[1], s' "$PROV" \
  && ok "the skill's signed offer names A's wallet" || fail "skill offer wallet: $(curl -s "$B/skills")"

body() { python3 -c 'import json,sys; d={"model":"skill:story","max_tokens":int(sys.argv[1]),"temperature":0,"seed":7,
"messages":[{"role":"user","content":sys.argv[2]}]}
if sys.argv[3] == "1": d["stream"]=True; d["stream_options"]={"include_usage":True}
print(json.dumps(d))' "$@"; }

# 1. unpaid call straight to A: 402 with the terms
st=$(curl -s -o "$TMP/402.json" -w '%{http_code}' "$A/chat/completions" -H 'Content-Type: application/json' -d "$(body $N "$U" 0)")
python3 - "$TMP/402.json" "$PROV" $FEE $PRICE $CHUNK <<'EOF' && [ "$st" = 402 ] && ok "unpaid call on A: 402 payment_required with A's wallet, prices and chunk" || fail "unpaid call: $st $(cat "$TMP/402.json")"
import json, sys
d = json.load(open(sys.argv[1]))
e, p = d["error"], d["payment"]
assert e["code"] == "payment_required" and e["type"] == "invalid_request_error" and e["message"], e
assert p == {"wallet": sys.argv[2], "fee_call": int(sys.argv[3]), "price_out": int(sys.argv[4]), "chunk": int(sys.argv[5]), "skill": "story"}, p
EOF

# 2. through B, whole and streamed, with curl
CALLS=0 TOKS=0
st=$(curl -s -o "$TMP/whole.json" -w '%{http_code}' "$B/chat/completions" -H 'Content-Type: application/json' -d "$(body $N "$U" 0)")
read -r t1 fin1 < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["usage"]["completion_tokens"], d["choices"][0]["finish_reason"])' "$TMP/whole.json" 2>/dev/null)
[ "$st" = 200 ] && [ -n "$t1" ] && [ "$t1" -gt 0 ] && ok "paid call through B, whole: 200, $t1 tokens, finish $fin1" \
  || fail "paid whole call: $st $(head -c 400 "$TMP/whole.json") $(grep -i 'skill\|pay' "$TMP/b.err" | tail -3)"
CALLS=$((CALLS + 1)) TOKS=$((TOKS + ${t1:-0}))
st=$(curl -s -N -o "$TMP/stream.txt" -w '%{http_code}' "$B/chat/completions" -H 'Content-Type: application/json' -d "$(body $N "$U" 1)")
t2=$(python3 - "$TMP/stream.txt" "$TMP/whole.json" <<'EOF'
import json, sys
text, usage, done = "", None, False
for l in open(sys.argv[1]):
    l = l.rstrip("\n")
    assert not l.startswith(":"), "a comment line reached the client: " + l[:60]
    if l == "data: [DONE]": done = True; continue
    if l.startswith("data: "):
        c = json.loads(l[6:])
        if c.get("usage"): usage = c["usage"]
        if c.get("choices") and c["choices"][0]["delta"].get("content"): text += c["choices"][0]["delta"]["content"]
w = json.load(open(sys.argv[2]))
assert done and usage, (done, usage)
assert text == w["choices"][0]["message"]["content"], (text[:80], w["choices"][0]["message"]["content"][:80])
print(usage["completion_tokens"])
EOF
)
[ "$st" = 200 ] && [ -n "$t2" ] && ok "paid call through B, streamed: same text, $t2 tokens, no receipt line reaches the client" \
  || fail "paid stream: $st $(head -c 600 "$TMP/stream.txt")"
CALLS=$((CALLS + 1)) TOKS=$((TOKS + ${t2:-0}))

# 3. the openai client through B
if command -v node >/dev/null 2>&1 && [ -d "$NODEDIR/node_modules/openai" ]; then
  python3 -c 'import json,sys; json.dump(dict(url=sys.argv[1], skill="skill:story", user=sys.argv[2], n=int(sys.argv[3])), open(sys.argv[4],"w"))' \
    "$B" "$U" $N "$TMP/cfg.json"
  node "$NODEDIR/skill_pay_check.mjs" "$TMP/cfg.json" >"$TMP/node.out" 2>&1
  grep -v '^usage ' "$TMP/node.out"
  passes=$((passes + $(grep -c '^ok ' "$TMP/node.out")))
  fails=$((fails + $(grep -c '^FAIL' "$TMP/node.out")))
  read -r _ nc nt < <(grep '^usage ' "$TMP/node.out")
  CALLS=$((CALLS + ${nc:-0})) TOKS=$((TOKS + ${nt:-0}))
elif [ "${CI:-}" = true ]; then
  fail "node or tests/node/node_modules/openai missing (run npm ci in tests/node)"
else
  echo "SKIP - the openai client check: node or tests/node/node_modules/openai missing"
fi

# 4. every call settled at the ledger, for exactly the formula
WANT=$(( CALLS * FEE + (TOKS * PRICE + 999999) / 1000000 ))
for _ in $(seq 100); do
  [ "$(grep -c 'paid skill call settled' "$TMP/a.err")" -ge $CALLS ] && break
  sleep 0.1
done
ns=$(grep -c 'paid skill call settled' "$TMP/a.err")
[ "$ns" = $CALLS ] && ok "A settled each of the $CALLS calls at the ledger" || fail "A settled $ns of $CALLS calls: $(grep -i 'redeem\|skill' "$TMP/a.err" | tail -3)"
nch=$(grep -c 'reserved channel' "$TMP/b.err")
CH=$(grep -o 'reserved channel [0-9a-f]*' "$TMP/b.err" | head -1 | awk '{print $3}')
[ "$nch" = 1 ] && [[ "$CH" =~ ^[0-9a-f]{64}$ ]] && ok "B reserved one channel and paid every call on it" || fail "B reserved $nch channels: $(grep -i 'skill' "$TMP/b.err" | tail -3)"
fmt() { python3 -c "import sys; v=int(sys.argv[1]); print('%d.%06d' % (v // 1000000, v % 1000000))" "$1"; }
last=$(grep -o 'paid skill call settled.*' "$TMP/a.err" | tail -1)
echo "$last" | grep -q "amount $WANT ($CALLS calls, $TOKS output tokens)" && ok "last voucher: $WANT = $CALLS x $FEE + ceil($TOKS x $PRICE / 1e6)" \
  || fail "last voucher: '$last', want $WANT for $CALLS calls and $TOKS tokens"
W b channel "$CH" $L >"$TMP/ch.txt" 2>&1
grep -q "redeemed $(fmt $WANT)" "$TMP/ch.txt" && ok "the ledger's channel: redeemed $(fmt $WANT)" || fail "channel: $(cat "$TMP/ch.txt")"
out=$(W a balance $L 2>/dev/null)
[ "$out" = "balance $(fmt $WANT)  stake 0.000000  reserved 0.000000" ] && ok "A's wallet: $out" || fail "A: '$out', want $(fmt $WANT)"
out=$(W b balance $L 2>/dev/null)
bal=$(echo "$out" | awk '{print $2}') res=$(echo "$out" | awk '{print $6}')
sum=$(python3 -c "print('%.6f' % (float('$bal') + float('$res') + $WANT / 1e6))")
[ "$sum" = "$DEP.000000" ] && ok "B's wallet: balance + reserved + paid = deposit ($out)" || fail "B: '$out' (+ $WANT)"

# the local stores: B's channel (for `colony wallet reclaim`), A's best voucher, redeemed
W b channels 2>&1 | grep -q "^channel $CH  open " && ok "B's channels.db has the channel (open)" || fail "B's channels: $(W b channels 2>&1)"
W a vouchers 2>&1 | grep "^channel $CH " | grep -q "amount $(fmt $WANT)  redeemed_seq [0-9]*  redeemed $(fmt $WANT)  redeemed" \
  && ok "A's vouchers.db: the best voucher of the channel, redeemed" || fail "A's vouchers: $(W a vouchers 2>&1 | cut -c1-200)"

# the gateways' and B's node's figures
python3 - "${A%/v1}/api/status" "${B%/v1}/api/status" $WANT <<'EOF2' && ok "A's /api/status earnings = B's spend = $WANT" || fail "status figures"
import json, sys, urllib.request
def find(o, k):
    if isinstance(o, dict):
        if k in o: return o[k]
        for v in o.values():
            r = find(v, k)
            if r is not None: return r
    return None
a = json.load(urllib.request.urlopen(sys.argv[1])); b = json.load(urllib.request.urlopen(sys.argv[2]))
assert find(a, "earnings") == int(sys.argv[3]) and find(b, "spend") == int(sys.argv[3]), (find(a, "earnings"), find(b, "spend"))
EOF2
st=$("$BIN" peers --home "$TMP/b" --status 2>&1)
echo "$st" | grep -q "\"spent\":$WANT\b" && ok "B's node status: spent $WANT" || fail "B's node status: ${st:0:300}"

# 5. a voucher signed by another wallet: 402; garbage: 400
FORGED=$(W mal voucher "$CH" 0.005 --seq 1000 2>/dev/null | head -1)
st=$(curl -s -o "$TMP/forged.json" -w '%{http_code}' "$A/pay/voucher" -d "$FORGED")
[ "$st" = 402 ] && grep -q '"code":"payment_required"' "$TMP/forged.json" && ok "a forged voucher is refused: 402 ($(head -c 120 "$TMP/forged.json"))" \
  || fail "forged voucher: $st $(cat "$TMP/forged.json")"
st=$(curl -s -o "$TMP/bad.json" -w '%{http_code}' "$A/pay/voucher" -d 'nothex')
[ "$st" = 400 ] && ok "a malformed voucher: 400" || fail "malformed voucher: $st $(cat "$TMP/bad.json")"

# 6. C's wallet is empty: a clear refusal
st=$(curl -s -o "$TMP/poor.json" -w '%{http_code}' "$C/chat/completions" -H 'Content-Type: application/json' -d "$(body $N "$U" 0)")
python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"]=="payment_required" and "reserve" in e["message"], e' "$TMP/poor.json" \
  && [ "$st" = 402 ] && ok "a buyer without money: 402 ($(head -c 160 "$TMP/poor.json"))" || fail "poor buyer: $st $(cat "$TMP/poor.json")"

# 7. a client that pays for the call but never answers a receipt: one chunk of
# credit, then finish_reason "payment_required" (its one voucher, for the
# call's fee, is signed with B's key by `colony wallet voucher`)
CH2=$(W b reserve "$PROV" 0.01 $L 2>"$TMP/err")
V2=$(W b voucher "$CH2" "$(fmt $FEE)" --in 1 --out 0 2>"$TMP/err")
python3 - "$CH2" "$BUYER" "$A" $N $CHUNK "$V2" <<'EOF2' >"$TMP/stall.txt" 2>&1 \
  && ok "a client that stops paying: $(cat "$TMP/stall.txt")" || fail "stalled client: $(cat "$TMP/stall.txt") $(cat "$TMP/err")"
import json, sys, urllib.request
ch, buyer, url, n, chunk, v = sys.argv[1:7]
req = urllib.request.Request(url + "/chat/completions", data=json.dumps({"model": "skill:story", "max_tokens": int(n),
      "temperature": 0, "messages": [{"role": "user", "content": "Tell me a story."}]}).encode(),
      headers={"Content-Type": "application/json", "X-Colony-Channel": ch, "X-Colony-Buyer": buyer, "X-Colony-Voucher": v})
receipts, finish, usage = 0, None, None
with urllib.request.urlopen(req, timeout=60) as r:
    assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers["Content-Type"]
    for l in r:
        l = l.decode().rstrip("\n")
        if l.startswith(": colony-receipt "): receipts += 1
        elif l.startswith("data: {"):
            c = json.loads(l[6:])
            if c.get("usage"): usage = c["usage"]
            if c.get("choices") and c["choices"][0].get("finish_reason"): finish = c["choices"][0]["finish_reason"]
assert finish == "payment_required" and usage and usage["completion_tokens"] == int(chunk) and receipts >= 1, (finish, usage, receipts)
print(f"{usage['completion_tokens']} tokens (one chunk), {receipts} receipt(s), finish_reason {finish}")
EOF2
PAID=$((WANT + FEE))
for _ in $(seq 100); do [ "$(grep -c 'paid skill call settled' "$TMP/a.err")" -gt $CALLS ] && break; sleep 0.1; done
W a balance $L 2>/dev/null | grep -q "^balance $(fmt $PAID) " && ok "A redeemed the stalled call's fee: $(fmt $PAID) in all" \
  || fail "A after the stalled call: $(W a balance $L 2>&1)"

# 8. the ledger's books balance
kill -TERM $LEDGER_PID; wait $LEDGER_PID 2>/dev/null
out=$(W op audit --ledger "$TMP/ledger.db" 2>"$TMP/err")
echo "$out" | grep -q "^audit ok: deposits $DEP.000000 .* redeemed $(fmt $PAID)" && ok "ledger audit: ${out:0:70}..." \
  || fail "audit: '$out' $(cat "$TMP/err")"
echo "took $(python3 -c "print(f'{$(date +%s.%N) - $T0:.1f}')") s"
finish

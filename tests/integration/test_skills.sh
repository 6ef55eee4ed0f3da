#!/usr/bin/env bash
# Skills: a 4-node stories260K swarm (every node serves all layers; records
# refreshed every second, stale after 3 s). Node A offers the skill "story"
# (--skill story=FILE --skill-price --skill-desc) through its gateway; node B
# runs a gateway without skills.
#  - B's GET /v1/skills lists the skill (name, description, price, model,
#    provider, A's gateway URL) within the freshness bound;
#  - a chat completion with model "skill:story" on A equals the model called
#    with the skill's prompt as system message (the prompt is applied), and
#    through B (relayed to A) it equals the call on A, with curl and with the
#    openai npm client (tests/node/skills_check.mjs), whole and streamed;
#  - an unknown skill is a 404 in OpenAI's shape; a relayed call is never
#    relayed again;
#  - A SIGKILLed: the skill leaves B's list within the staleness bound.
# Forged and oversized records are covered by tests/unit/test_ann.c.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"
NODEDIR="${COLONY_SRC:-$(dirname "$0")/../..}/tests/node"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
T0=$(date +%s.%N)
COMMON=(--model "$M" --refresh-ms 1000 --stale-ms 3000)

"$BIN" node --home "$TMP/n1" "${COMMON[@]}" -q >"$TMP/n1.out" 2>"$TMP/n1.err" &
pids+=($!)
BOOT=""
for _ in $(seq 100); do
  BOOT=$(grep -o 'DHT port [0-9]*' "$TMP/n1.err" 2>/dev/null | head -1 | grep -o '[0-9]*$')
  [ -n "$BOOT" ] && break
  sleep 0.1
done
[ -n "$BOOT" ] && ok "bootstrap node up (DHT port $BOOT)" || { fail "no DHT port: $(tail -3 "$TMP/n1.err")"; finish; exit 1; }
BS=(--bootstrap "127.0.0.1:$BOOT")

printf 'You are a storyteller. Every story is about a little cat.\n' >"$TMP/story.txt"
"$BIN" node --home "$TMP/n2" "${COMMON[@]}" "${BS[@]}" -q >"$TMP/n2.out" 2>"$TMP/n2.err" &
pids+=($!)
"$BIN" node --home "$TMP/a" "${COMMON[@]}" "${BS[@]}" -q --api 127.0.0.1:0 \
  --skill story="$TMP/story.txt" --skill-price 2500:1000000 --skill-desc "Short stories about cats" \
  >"$TMP/a.out" 2>"$TMP/a.err" &
apid=$!
pids+=($apid)
"$BIN" node --home "$TMP/b" "${COMMON[@]}" "${BS[@]}" -q --api 127.0.0.1:0 >"$TMP/b.out" 2>"$TMP/b.err" &
pids+=($!)
url_of() { grep -o 'http://127.0.0.1:[0-9]*/v1' "$1" 2>/dev/null | head -1; }
A="" B=""
for _ in $(seq 150); do
  A=$(url_of "$TMP/a.out"); B=$(url_of "$TMP/b.out")
  [ -n "$A" ] && [ -n "$B" ] && break
  sleep 0.1
done
[ -n "$A" ] && [ -n "$B" ] && ok "gateways up: A $A (skill story), B $B" \
  || { fail "no gateway URL: $(tail -3 "$TMP/a.err" "$TMP/b.err")"; finish; exit 1; }

# usage errors
expect_exit 2 "--skill without --api" "$BIN" node --home "$TMP/x" --model "$M" --skill story="$TMP/story.txt"
expect_exit 2 "--skill with a bad name" "$BIN" node --home "$TMP/x" --model "$M" --api 127.0.0.1:0 --skill "Bad Name=$TMP/story.txt"
printf '\xc3\x28\n' >"$TMP/bad.txt"
expect_exit 2 "--skill with a prompt that is not UTF-8" "$BIN" node --home "$TMP/x" --model "$M" --api 127.0.0.1:0 --skill "s=$TMP/bad.txt"

# B lists the skill (A's records reach B through the DHT)
t=$(date +%s.%N)
for _ in $(seq 150); do
  curl -s "$B/skills" | grep -q '"skill:story"' && break
  sleep 0.1
done
dt=$(python3 -c "print(f'{$(date +%s.%N) - $t:.1f}')")
curl -s "$B/skills" >"$TMP/skills.json"
curl -s "$A/models" >"$TMP/models.json"
python3 - "$TMP/skills.json" "$TMP/models.json" "$A" <<'EOF2' && ok "B's /v1/skills lists story with its price, model and A's URL (after ${dt} s)" || fail "skills list: $(cat "$TMP/skills.json")"
import json, sys
s = json.load(open(sys.argv[1])); m = json.load(open(sys.argv[2]))
assert s["object"] == "list", s
d = [x for x in s["data"] if x["id"] == "skill:story"]
assert len(d) == 1, s
x = d[0]
assert x["object"] == "skill" and x["name"] == "story" and x["description"] == "Short stories about cats", x
assert x["price"] == {"fee_per_call": 2500, "per_1m_output_tokens": 1000000}, x
assert x["gateway_url"] == sys.argv[3], (x["gateway_url"], sys.argv[3])
assert x["model"] == m["data"][0]["colony_model_id"], x
assert len(x["provider"]) == 64 and int(x["provider"], 16) >= 0
EOF2

# the same call: direct on A, the prompt by hand on A, relayed through B
U="Tell me a story."
N=32
body() { python3 -c 'import json,sys; m=[{"role":"user","content":sys.argv[3]}]
if sys.argv[4]: m.insert(0,{"role":"system","content":sys.argv[4]})
print(json.dumps({"model":sys.argv[1],"max_tokens":int(sys.argv[2]),"temperature":0,"seed":42,"messages":m}))' "$@"; }
content() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$1" 2>/dev/null; }
curl -s "$A/chat/completions" -H 'Content-Type: application/json' -d "$(body skill:story $N "$U" "")" >"$TMP/direct.json"
curl -s "$A/chat/completions" -H 'Content-Type: application/json' \
  -d "$(body stories260K $N "$U" "$(cat "$TMP/story.txt")")" >"$TMP/byhand.json"
curl -s "$A/chat/completions" -H 'Content-Type: application/json' -d "$(body stories260K $N "$U" "")" >"$TMP/plain.json"
curl -s -D "$TMP/relay.h" "$B/chat/completions" -H 'Content-Type: application/json' -d "$(body skill:story $N "$U" "")" >"$TMP/relay.json"
D=$(content "$TMP/direct.json"); H=$(content "$TMP/byhand.json"); P=$(content "$TMP/plain.json"); R=$(content "$TMP/relay.json")
[ -n "$D" ] && [ "$D" = "$H" ] && ok "skill:story on A = the model with the skill's prompt as system message" \
  || fail "direct '$D' vs by hand '$H': $(head -c 300 "$TMP/direct.json")"
[ "$D" != "$P" ] && ok "the skill's prompt changes the answer" || fail "skill and plain answers are the same: '$P'"
[ -n "$R" ] && [ "$R" = "$D" ] && ok "skill:story through B (relayed) = the direct call on A" \
  || fail "relayed '$R' vs direct '$D': $(head -c 300 "$TMP/relay.json")"
grep -qi '^X-Colony-Skill-Provider: [0-9a-f]\{64\}' "$TMP/relay.h" && ok "the relayed answer names its provider" || fail "no provider header: $(cat "$TMP/relay.h")"
grep -q '"model":"skill:story"' "$TMP/relay.json" && ok "the response names model skill:story" || fail "model: $(head -c 300 "$TMP/relay.json")"

# unknown skill: 404 in OpenAI's shape, on both gateways; a relayed call is not relayed again
for g in "$B" "$A"; do
  st=$(curl -s -o "$TMP/e.json" -w '%{http_code}' "$g/chat/completions" -H 'Content-Type: application/json' -d "$(body skill:nope $N "$U" "")")
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"]=="model_not_found" and e["type"]=="invalid_request_error" and e["param"]=="model" and "message" in e' "$TMP/e.json" \
    && [ "$st" = 404 ] && ok "unknown skill on $g: 404 in OpenAI's shape" || fail "unknown skill: $st $(cat "$TMP/e.json")"
done
st=$(curl -s -o "$TMP/e.json" -w '%{http_code}' "$B/chat/completions" -H 'X-Colony-Skill-Forwarded: 1' -H 'Content-Type: application/json' -d "$(body skill:story $N "$U" "")")
[ "$st" = 404 ] && ok "a relayed call is never relayed again (404 on a gateway without the skill)" || fail "relayed twice: $st"

# the openai client through B
if command -v node >/dev/null 2>&1 && [ -d "$NODEDIR/node_modules/openai" ]; then
  python3 -c 'import json,sys; json.dump(dict(url=sys.argv[1], skill="skill:story", user=sys.argv[2], n=int(sys.argv[3]), want=sys.argv[4]), open(sys.argv[5],"w"))' \
    "$B" "$U" $N "$D" "$TMP/cfg.json"
  node "$NODEDIR/skills_check.mjs" "$TMP/cfg.json" >"$TMP/node.out" 2>&1
  cat "$TMP/node.out"
  passes=$((passes + $(grep -c '^ok ' "$TMP/node.out")))
  fails=$((fails + $(grep -c '^FAIL' "$TMP/node.out")))
  grep -q '^ok ' "$TMP/node.out" || fail "the openai client ran no check: $(tail -5 "$TMP/node.out")"
elif [ "${CI:-}" = true ]; then
  fail "node or tests/node/node_modules/openai missing (run npm ci in tests/node)"
else
  echo "SKIP - the openai client check: node or tests/node/node_modules/openai missing"
fi

# A killed: its skill goes stale and leaves B's list
kill -KILL "$apid"; wait "$apid" 2>/dev/null
t=$(date +%s.%N)
for _ in $(seq 100); do
  curl -s "$B/skills" | grep -q '"skill:story"' || break
  sleep 0.1
done
dt=$(python3 -c "print(f'{$(date +%s.%N) - $t:.1f}')")
curl -s "$B/skills" | grep -q '"skill:story"' && fail "the killed node's skill is still listed after ${dt} s" \
  || ok "A SIGKILLed: its skill left B's list after ${dt} s (records stale 3 s after the last refresh)"
st=$(curl -s -o "$TMP/e.json" -w '%{http_code}' "$B/chat/completions" -H 'Content-Type: application/json' -d "$(body skill:story $N "$U" "")")
[ "$st" = 404 ] && ok "skill:story after its only provider went: 404" || fail "after the provider went: $st $(cat "$TMP/e.json")"
echo "took $(python3 -c "print(f'{$(date +%s.%N) - $T0:.1f}')") s"
finish

#!/usr/bin/env bash
# The OpenAI-compatible HTTP API of `colony swarm --api` (4 nodes: 2 spans x 2
# replicas of stories260K) with a bearer key:
#  - the `openai` npm client (tests/node/api_check.mjs): completions and chat
#    completions, whole and streamed, greedy with a seed; the text equals
#    `colony run` / `colony run --chat`, usage agrees with the tokens it
#    generated; stop strings; 64 concurrent streams all complete;
#  - curl: malformed bodies (truncated JSON, wrong types, huge numbers, 10 MB,
#    invalid UTF-8), unknown model and URL, missing or wrong key, n = 2, each
#    with its status and an error in OpenAI's shape, never a 500;
#  - a client killed mid-stream ends its session: the shards' session count
#    returns to zero long before the generation would have ended.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"
NODEDIR="${COLONY_SRC:-$(dirname "$0")/../..}/tests/node"
KEY=sk-colony-test
SW="$TMP/sw"
swpid=""
cleanup() { [ -n "$swpid" ] && kill -TERM "$swpid" 2>/dev/null && wait "$swpid" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$BIN" swarm -m "$M" --home "$SW" --nodes 4 --replicas 2 --api 127.0.0.1:0 --api-key "$KEY" >"$TMP/api.out" 2>"$TMP/api.err" &
swpid=$!
URL=""
for _ in $(seq 300); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*/v1' "$TMP/api.out" 2>/dev/null | head -1)
  [ -n "$URL" ] && break
  kill -0 "$swpid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$URL" ] && ok "colony swarm --api printed its URL ($URL)" || { fail "no API URL: $(tail -5 "$TMP/api.err")"; finish; exit 1; }
AUTH=(-H "Authorization: Bearer $KEY")
# every layer served by two connected servers
for _ in $(seq 200); do
  curl -s "${AUTH[@]}" "$URL/models" | grep -q '"available":true,.*"replicas":2' && break
  sleep 0.1
done
curl -s "${AUTH[@]}" "$URL/models" | grep -q '"available":true' && ok "/v1/models: the model is available" || fail "models: $(curl -s "${AUTH[@]}" "$URL/models")"

# ---- reference outputs from the local engine, same settings
P="Once upon a time"
CP="Tell me a story about a cat."
N=48
"$BIN" run -m "$M" -p "$P" -n $N --temp 0 --seed 42 >"$TMP/ref.out" 2>"$TMP/ref.err"
"$BIN" run -m "$M" --chat -p "$CP" -n $N --temp 0 --seed 42 >"$TMP/refc.out" 2>"$TMP/refc.err"
python3 - "$TMP" "$URL" "$KEY" "$P" "$CP" $N <<'EOF'
import json, re, sys
tmp, url, key, p, cp, n = sys.argv[1:7]
def ref(name):
    out = open(f"{tmp}/{name}.out", encoding="utf-8").read()
    assert out.endswith("\n")
    err = open(f"{tmp}/{name}.err").read()
    m = re.search(r"prompt (\d+) tokens.*generation (\d+) tokens.*stopped: (\w+)", err)
    finish = "length" if m.group(3) == "length" else "stop"
    return out[:-1], int(m.group(1)), int(m.group(2)), finish
t, pt, ct, f = ref("ref")
assert t.startswith(p)
t = t[len(p):]
c, cpt, cct, cf = ref("refc")
# two stop strings: one within the text, one spanning several tokens
words = t.split()
cfg = dict(url=url, key=key, model="stories260K", prompt=p, chat_prompt=cp, n=int(n), concurrent=64,
           want_completion=t, want_completion_tokens=ct, want_prompt_tokens=pt, want_completion_finish=f,
           want_chat=c, want_chat_tokens=cct, want_chat_prompt_tokens=cpt, want_chat_finish=cf,
           stop_a=words[3], stop_b=" ".join(words[6:9]))
json.dump(cfg, open(f"{tmp}/cfg.json", "w"))
EOF
[ -s "$TMP/cfg.json" ] && ok "reference runs of colony run and colony run --chat" || fail "reference runs failed: $(tail -2 "$TMP/ref.err" "$TMP/refc.err")"

# ---- the openai client
if command -v node >/dev/null 2>&1 && [ -d "$NODEDIR/node_modules/openai" ]; then
  node "$NODEDIR/api_check.mjs" "$TMP/cfg.json" >"$TMP/node.out" 2>&1
  cat "$TMP/node.out"
  passes=$((passes + $(grep -c '^ok ' "$TMP/node.out")))
  fails=$((fails + $(grep -c '^FAIL' "$TMP/node.out")))
  grep -q '^ok ' "$TMP/node.out" || fail "the openai client ran no check: $(tail -5 "$TMP/node.out")"
elif [ "${CI:-}" = true ]; then
  fail "node or tests/node/node_modules/openai missing (run npm ci in tests/node)"
else
  echo "SKIP - the openai client checks: node or tests/node/node_modules/openai missing (npm ci in tests/node)"
fi

# ---- curl: errors in OpenAI's shape with the right status
# expect STATUS DESC [PATTERN] -- CURL ARGS...: the status, an error object, the pattern in the body
expect() {
  local want=$1 desc=$2 pat=$3; shift 4
  local got
  got=$(curl -s -o "$TMP/body" -w '%{http_code}' "$@")
  if [ "$got" != "$want" ]; then fail "$desc: HTTP $got, want $want: $(head -c 300 "$TMP/body")"; return; fi
  if [ "$want" -ge 400 ] && ! python3 -c '
import json,sys; e=json.load(open(sys.argv[1]))["error"]
assert isinstance(e["message"], str) and e["message"] and isinstance(e["type"], str) and "param" in e and "code" in e' "$TMP/body" 2>/dev/null; then
    fail "$desc: HTTP $got but not an OpenAI error: $(head -c 300 "$TMP/body")"; return
  fi
  if [ -n "$pat" ] && ! grep -q -- "$pat" "$TMP/body"; then fail "$desc: body lacks '$pat': $(head -c 300 "$TMP/body")"; return; fi
  ok "$desc (HTTP $got)"
}
C="$URL/completions"
J=(-H "Content-Type: application/json")
expect 401 "no key" invalid_api_key -- "$C" "${J[@]}" -d '{"model":"stories260K","prompt":"x"}'
expect 401 "wrong key" invalid_api_key -- "$C" "${J[@]}" -H "Authorization: Bearer sk-wrong" -d '{"model":"stories260K","prompt":"x"}'
expect 401 "no key on /v1/models" "" -- "$URL/models"
expect 400 "truncated JSON, where it ends" "line 1, column" -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"Once up'
expect 400 "body not an object" "JSON object" -- "$C" "${AUTH[@]}" "${J[@]}" -d '[1,2,3]'
expect 400 "empty body" "" -- -X POST "$C" "${AUTH[@]}" "${J[@]}"
expect 400 "max_tokens as a string" '"param":"max_tokens"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","max_tokens":"10"}'
expect 400 "temperature as a string" '"param":"temperature"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","temperature":"hot"}'
expect 400 "messages as a string" '"param":"messages"' -- "$URL/chat/completions" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","messages":"hi"}'
expect 400 "a message without content" 'messages\[0\].content' -- "$URL/chat/completions" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","messages":[{"role":"user"}]}'
expect 400 "an unknown role" 'messages\[0\].role' -- "$URL/chat/completions" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","messages":[{"role":"wizard","content":"x"}]}'
expect 400 "stream as a string" '"param":"stream"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","stream":"yes"}'
expect 400 "stop as a number" '"param":"stop"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","stop":7}'
expect 400 "huge integer max_tokens" "" -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","max_tokens":99999999999999999999999999}'
expect 400 "max_tokens over the limit" '"param":"max_tokens"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","max_tokens":9223372036854775807}'
expect 400 "max_tokens 1e30" '"param":"max_tokens"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","max_tokens":1e30}'
expect 400 "temperature 1e999" "" -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","temperature":1e999}'
expect 400 "negative max_tokens" '"param":"max_tokens"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","max_tokens":-5}'
expect 400 "n = 2 refused" '"param":"n"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"x","n":2}'
expect 400 "n = 2 refused (chat)" '"param":"n"' -- "$URL/chat/completions" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","messages":[{"role":"user","content":"x"}],"n":2}'
printf '{"model":"stories260K","prompt":"Once \xff\xfe upon"}' >"$TMP/bad-utf8.json"
expect 400 "invalid UTF-8 refused" "UTF-8" -- "$C" "${AUTH[@]}" "${J[@]}" --data-binary @"$TMP/bad-utf8.json"
printf '{"model":"stories260K","prompt":"ok", "user":"\xc0\xaf"}' >"$TMP/bad-utf8b.json"
expect 400 "an overlong UTF-8 sequence refused, in an ignored field too" "UTF-8" -- "$C" "${AUTH[@]}" "${J[@]}" --data-binary @"$TMP/bad-utf8b.json"
python3 -c "import sys; sys.stdout.write('{\"model\":\"stories260K\",\"prompt\":\"' + 'a' * (10 << 20) + '\"}')" >"$TMP/big.json"
expect 413 "10 MB body" request_too_large -- "$C" "${AUTH[@]}" "${J[@]}" --data-binary @"$TMP/big.json"
head -c $((2 << 20)) "$TMP/big.json" >"$TMP/big2.json"
expect 413 "2 MB chunked body (no Content-Length)" request_too_large -- "$C" "${AUTH[@]}" "${J[@]}" -H "Transfer-Encoding: chunked" --data-binary @"$TMP/big2.json"
expect 404 "unknown model" model_not_found -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"gpt-4o","prompt":"x"}'
expect 404 "unknown URL" unknown_url -- "$URL/embeddings" "${AUTH[@]}" "${J[@]}" -d '{}'
expect 405 "GET on /v1/completions" "" -- "$C" "${AUTH[@]}"
expect 200 "unknown fields are ignored" '"finish_reason":"length"' -- "$C" "${AUTH[@]}" "${J[@]}" \
  -d '{"model":"stories260K","prompt":"Once","max_tokens":3,"temperature":0,"user":"u1","foo":{"bar":[1,{"x":null}]},"logit_bias":{}}'
expect 200 "prompt as token ids" '"prompt_tokens":3' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":[1,403,407],"max_tokens":2}'
expect 400 "a token id outside the vocabulary" "vocabulary" -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":[1,5000],"max_tokens":2}'
expect 200 "the model by its 64-hex id" '"object":"text_completion"' -- "$C" "${AUTH[@]}" "${J[@]}" \
  -d "{\"model\":\"$(curl -s "${AUTH[@]}" "$URL/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["colony_model_id"])')\",\"prompt\":\"x\",\"max_tokens\":1}"

# ---- a client killed mid-stream frees its sessions at the shards
shard_sum() { # FIELD: summed over the four shard nodes
  local s=0 v
  for i in 0 1 2 3; do
    v=$("$BIN" peers --home "$SW/n$i" --status 2>/dev/null | python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['$1'])" 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo $s
}
for _ in $(seq 100); do [ "$(shard_sum sessions)" = 0 ] && break; sleep 0.1; done
rows0=$(shard_sum rows)
curl -sN "${AUTH[@]}" "${J[@]}" "$C" -d '{"model":"stories260K","prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}' >"$TMP/killed.out" &
cpid=$!
for _ in $(seq 100); do [ -s "$TMP/killed.out" ] && break; sleep 0.05; done
during=$(shard_sum sessions)
kill -KILL $cpid; wait $cpid 2>/dev/null
t0=$(date +%s.%N)
after=""
for _ in $(seq 100); do after=$(shard_sum sessions); [ "$after" = 0 ] && break; sleep 0.05; done
el=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
rows=$(( $(shard_sum rows) - rows0 ))
[ "$during" -ge 2 ] && [ "$after" = 0 ] && [ "$rows" -lt 3000 ] \
  && ok "client killed mid-stream: shard sessions $during -> 0 in $el s; $rows rows computed of the 4000 a whole run needs" \
  || fail "killed client: sessions during $during, after $after ($el s), rows $rows"
expect 200 "the gateway serves on after that" '"finish_reason"' -- "$C" "${AUTH[@]}" "${J[@]}" -d '{"model":"stories260K","prompt":"Once","max_tokens":4}'

kill -TERM "$swpid"; wait "$swpid"; st=$?; swpid=""
[ "$st" = 0 ] && ok "colony swarm --api stops cleanly on SIGTERM" || fail "swarm exit status $st: $(tail -3 "$TMP/api.err")"
finish

#!/usr/bin/env bash
# The gateway's dashboard, /api/status and /metrics on `colony swarm --api`
# (4 nodes: 2 spans x 2 replicas of stories260K, records refreshed every
# second and stale after 3 s):
#  - /api/status: the schema (types of every field the dashboard reads), the
#    4 nodes with their spans, full coverage with 2 replicas, earnings and
#    spend null; a generation shows in the counters and latencies;
#  - /metrics: Prometheus text format 0.0.4, parsed strictly, the counters
#    agreeing with the requests this script made;
#  - the page in headless Chromium (tests/node/dashboard_check.mjs): no
#    console errors, every node and its span, then one node SIGKILLed (its PID
#    from colony swarm's output) shown down at once and gone within the
#    staleness bound; screenshots kept in $COLONY_TEST_OUT (default: the
#    working folder, ctest's build folder);
#  - with --api-key: /api/status and /metrics want the key, the page asks for
#    it, refuses a wrong one and fills in with the right one.
# Chromium (/usr/bin/chromium, or $CHROMIUM) or playwright-core missing: the
# browser part is skipped (exit 77) outside CI, fails under CI=true.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
M="$FIX/stories260K.gguf"
NODEDIR="${COLONY_SRC:-$(dirname "$0")/../..}/tests/node"
OUT=${COLONY_TEST_OUT:-$PWD}
CHROME=${CHROMIUM:-/usr/bin/chromium}
mkdir -p "$OUT"
swpid=""
stop_swarm() { # ends the swarm; CHECK=1: it must exit 0 (sanitizer builds exit otherwise on an error or a leak)
  [ -n "$swpid" ] || return 0
  kill -TERM "$swpid" 2>/dev/null; wait "$swpid" 2>/dev/null; local st=$?; swpid=""
  if [ "${1:-}" = check ]; then
    [ "$st" = 0 ] && ok "colony swarm --api stops cleanly ($2)" || fail "colony swarm exit status $st ($2): $(tail -5 "$2.err")"
  fi
}
cleanup() { stop_swarm; rm -rf "$TMP"; }
trap cleanup EXIT

browser=1
if [ ! -x "$CHROME" ] || ! command -v node >/dev/null 2>&1 || [ ! -d "$NODEDIR/node_modules/playwright-core" ]; then
  if [ "${CI:-}" = true ]; then
    fail "chromium ($CHROME), node or tests/node/node_modules/playwright-core missing (CI=true)"
  fi
  browser=0
fi

# start_swarm DIR NODES REPLICAS [ARGS...]: sets URL (http://HOST:PORT)
start_swarm() {
  local dir=$1 n=$2 r=$3; shift 3
  "$BIN" swarm -m "$M" --home "$dir" --nodes "$n" --replicas "$r" --api 127.0.0.1:0 --refresh-ms 1000 --stale-ms 3000 "$@" \
    >"$dir.out" 2>"$dir.err" &
  swpid=$!
  URL=""
  for _ in $(seq 300); do
    # the URL, then the end of start-up (coverage reached or not)
    URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$dir.out" 2>/dev/null | head -1)
    [ -n "$URL" ] && grep -q "serves the API at" "$dir.err" && break
    kill -0 "$swpid" 2>/dev/null || break
    sleep 0.1
  done
}

SW="$TMP/sw"
start_swarm "$SW" 4 2
[ -n "$URL" ] && ok "colony swarm --api is up ($URL)" || { fail "no API URL: $(tail -5 "$SW.err")"; finish; exit 1; }
grep -q "coverage reached: 5/5 layers, 2 replicas" "$SW.err" && ok "colony swarm reports coverage reached" \
  || fail "no coverage line: $(grep coverage "$SW.err")"
for _ in $(seq 100); do
  curl -s "$URL/api/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(p["connected"] for p in s["peers"]) == 4 else 1)' 2>/dev/null && break
  sleep 0.1
done

# the nodes: PID (from colony swarm's output), id (from each node's control socket), span
python3 - "$SW" >"$TMP/nodes.json" <<'PY'
import json, re, subprocess, sys, os
sw = sys.argv[1]
nodes = []
for line in open(sw + ".err"):
    m = re.match(r"colony: node (\d+) serves layers \[(\d+), (\d+)\) \(pid (\d+)\)", line)
    if m:
        i, a, b, pid = map(int, m.groups())
        st = subprocess.run([os.environ["COLONY_BIN"], "peers", "--home", f"{sw}/n{i}", "--status"], capture_output=True, text=True).stdout
        nodes.append(dict(index=i, layers=[a, b], pid=pid, id=json.loads(st.splitlines()[0])["id"]))
print(json.dumps(nodes))
PY
[ "$(python3 -c "import json; print(len(json.load(open('$TMP/nodes.json'))))")" = 4 ] && ok "colony swarm printed the 4 node PIDs" \
  || fail "node PIDs: $(cat "$TMP/nodes.json"; grep 'serves layers' "$SW.err")"

# ---- /api/status
curl -s "$URL/v1/completions" -H 'Content-Type: application/json' -d '{"model":"stories260K","prompt":"Once upon a time","max_tokens":16,"temperature":0}' >/dev/null
curl -s -o /dev/null "$URL/v1/nowhere"
sleep 1.5   # the gateway's client re-scores the providers every second
curl -s -D "$TMP/status.h" "$URL/api/status" >"$TMP/status.json"
python3 - "$TMP/status.json" "$TMP/nodes.json" <<'PY' && ok "/api/status: schema, 4 peers with their spans, coverage 5/5 x 2, the generation counted" || fail "/api/status: $(head -c 600 "$TMP/status.json")"
import json, sys
s = json.load(open(sys.argv[1])); nodes = json.load(open(sys.argv[2]))
I, F, S, B, N = int, (int, float), str, bool, type(None)
def typed(o, spec, where):
    for k, t in spec.items():
        assert k in o, f"{where}.{k} missing"
        assert isinstance(o[k], t) and not (t in (I, F) and isinstance(o[k], bool)), f"{where}.{k} is {o[k]!r}"
typed(s, dict(object=S, version=S, time_ms=I, uptime_s=F, gateway=dict, latency=dict, peers=list, models=list, sessions=list, recent=list), "status")
assert s["object"] == "colony.status"
g = s["gateway"]
typed(g, dict(url=S, model=S, model_id=S, key_required=B, context_length=I, requests=I, generations=I, active=I, tokens_in=I,
              tokens_out=I, failovers=I, wire_bytes_in=I, wire_bytes_out=I, errors=dict, earnings=N, spend=I,
              digests_published=I), "gateway")
# not in a node: no earnings known; an unpaid gateway spends nothing and publishes no digest
assert g["spend"] == 0 and g["digests_published"] == 0, g
typed(g["errors"], {"4xx": I, "5xx": I, "400": I, "401": I, "404": I, "413": I, "429": I, "503": I, "cancelled": I}, "errors")
assert g["generations"] >= 1 and g["tokens_out"] == 16 and g["errors"]["404"] >= 1 and g["key_required"] is False, g
assert len(g["model_id"]) == 64 and g["wire_bytes_out"] > 0
lat = s["latency"]
typed(lat, dict(samples=I, ttft_ms_p50=F, ttft_ms_p90=F, tokens_per_second_p50=F, token_ms_p50=F, token_ms_p90=F), "latency")
assert lat["samples"] == 1 and 0 < lat["ttft_ms_p50"] <= lat["ttft_ms_p90"] and lat["token_ms_p50"] <= lat["token_ms_p90"]
assert len(s["peers"]) == 4, s["peers"]
for p in s["peers"]:
    typed(p, dict(id=S, short=S, address=S, model_id=S, layers=list, price=I, throughput_tps=F, free_sessions=I, rtt_ms=(F, N),
                  connected=B, listed=B, last_seen_ms=I, age_ms=I, score=(F, N), digests=I, sessions=I, failures=I,
                  paid=I), "peer")
    # scored from the gateway's own sessions (unpaid: local scores), unknown otherwise
    assert (p["score"] is not None) == (p["sessions"] > 0), p
    assert p["score"] is None or (0 < p["score"] <= 1 and p["failures"] == 0), p
    assert p["paid"] == 0 and p["digests"] == 0, p
    assert p["connected"] and p["listed"] and p["model_id"] == g["model_id"] and p["rtt_ms"] is not None and p["rtt_ms"] >= 0
    assert len(p["id"]) == 64 and p["id"].startswith(p["short"]) and p["address"].startswith("127.0.0.1:")
    assert 0 <= p["age_ms"] < 10000, p
assert sorted((p["id"], p["layers"]) for p in s["peers"]) == sorted((n["id"], n["layers"]) for n in nodes), (s["peers"], nodes)
# the generation's route: one server per span, each with one good session
assert sum(p["sessions"] for p in s["peers"]) == 2, [(p["layers"], p["sessions"]) for p in s["peers"]]
(m,) = s["models"]
typed(m, dict(id=S, model_id=S, layers=I, layers_covered=I, min_replicas=I, available=B, replicas=list, announced=list, missing=list), "model")
assert m["layers"] == 5 and m["layers_covered"] == 5 and m["min_replicas"] == 2 and m["available"] and m["missing"] == []
assert m["replicas"] == [2] * 5 and m["announced"] == [2] * 5
r = s["recent"][-1]
typed(r, dict(id=S, outcome=S, prompt_tokens=I, completion_tokens=I, ttft_ms=F, tokens_per_second=F, seconds=F, failovers=I, end_ms=I), "recent")
assert r["outcome"] == "ok" and r["completion_tokens"] == 16 and r["id"].startswith("cmpl-")
PY
grep -qi '^Content-Type: application/json' "$TMP/status.h" && ok "/api/status is application/json" || fail "status headers: $(cat "$TMP/status.h")"

# a session while it runs: its route (2 hops: [0,2) then [2,5))
curl -sN "$URL/v1/completions" -H 'Content-Type: application/json' -d '{"model":"stories260K","prompt":"Once","max_tokens":1500,"temperature":0,"stream":true}' >/dev/null &
cpid=$!
seen=""
for _ in $(seq 50); do
  seen=$(curl -s "$URL/api/status" | python3 -c '
import json,sys; s=json.load(sys.stdin)
for x in s["sessions"]:
    if x["state"] == "running" and [h["layers"] for h in x["route"]] == [[0,2],[2,5]] and x["completion_tokens"] > 0 and x["stream"]:
        print(x["id"]); break' 2>/dev/null)
  [ -n "$seen" ] && break
  sleep 0.1
done
kill -KILL $cpid 2>/dev/null; wait $cpid 2>/dev/null
[ -n "$seen" ] && ok "/api/status lists the running session with its 2-hop route" || fail "no running session with a route seen"

# ---- /metrics
curl -s -D "$TMP/metrics.h" "$URL/metrics" >"$TMP/metrics.txt"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$TMP/metrics.h" && ok "/metrics: Content-Type text/plain; version=0.0.4" || fail "metrics headers: $(cat "$TMP/metrics.h")"
python3 - "$TMP/metrics.txt" <<'PY' && ok "/metrics: strict exposition format, histograms well formed, counts agree" || fail "/metrics: $(head -c 400 "$TMP/metrics.txt")"
import math, re, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n")
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
fam, types, helps, order, samples = None, {}, {}, [], []
for ln in text.split("\n")[:-1]:
    m = re.fullmatch(r"# (HELP|TYPE) (" + NAME + r") (.+)", ln)
    if m:
        kw, name, rest = m.groups()
        if name not in order:
            order.append(name)
        assert name == order[-1], f"family {name} split"
        d = helps if kw == "HELP" else types
        assert name not in d, f"second {kw} for {name}"
        d[name] = rest
        if kw == "TYPE":
            assert rest in ("counter", "gauge", "histogram"), rest
        continue
    m = re.fullmatch(r"(" + NAME + r")(\{(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\n]|\\[\\\"n])*\",?)*\})? (\S+)", ln)
    assert m, f"bad line {ln!r}"
    name, labels, value = m.groups()
    base = re.sub(r"_(bucket|sum|count)$", "", name) if types.get(re.sub(r"_(bucket|sum|count)$", "", name)) == "histogram" else name
    assert base == order[-1] and base in helps and base in types, f"{name} outside its family"
    v = float(value)
    lab = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
    samples.append((base, name, lab, v))
want = {"colony_requests_total": "counter", "colony_tokens_total": "counter", "colony_request_seconds": "histogram",
        "colony_time_to_first_token_seconds": "histogram", "colony_sessions_active": "gauge", "colony_peers": "gauge",
        "colony_failovers_total": "counter", "colony_wire_bytes_total": "counter"}
assert types == want, types
for h in ("colony_request_seconds", "colony_time_to_first_token_seconds"):
    b = [(float(l["le"]), v) for f, n, l, v in samples if n == h + "_bucket"]
    assert b and b[-1][0] == math.inf and [x for x, _ in b] == sorted(set(x for x, _ in b)), b
    assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1))
    (c,) = [v for f, n, l, v in samples if n == h + "_count"]
    assert c == b[-1][1] and any(n == h + "_sum" for f, n, l, v in samples)
get = lambda n, **kw: [v for f, nn, l, v in samples if nn == n and all(l.get(k) == x for k, x in kw.items())]
# the completion above, and the stream killed meanwhile once the gateway has noticed
assert get("colony_requests_total", endpoint="/v1/completions", status="200") in ([1.0], [2.0]), get("colony_requests_total", endpoint="/v1/completions", status="200")
assert get("colony_requests_total", endpoint="other", status="404") == [1.0]
assert get("colony_requests_total", endpoint="/api/status", status="200")[0] >= 1
assert get("colony_tokens_total", direction="out")[0] >= 16
assert get("colony_peers") == [4.0]
assert get("colony_wire_bytes_total", direction="out")[0] > 0
(ttft,) = get("colony_time_to_first_token_seconds_count")
assert ttft >= 1
PY

# ---- the page, in Chromium
if [ "$browser" = 1 ]; then
  python3 - "$TMP/nodes.json" "$URL" "$CHROME" "$OUT" >"$TMP/dash.json" <<'PY'
import json, sys
nodes = json.load(open(sys.argv[1]))
print(json.dumps(dict(mode="swarm", url=sys.argv[2], chromium=sys.argv[3], out=sys.argv[4], model="stories260K",
                      nodes=nodes, kill=1, layers=5, stale_ms=3000)))
PY
  node "$NODEDIR/dashboard_check.mjs" "$TMP/dash.json" >"$TMP/node.out" 2>&1
  cat "$TMP/node.out"
  passes=$((passes + $(grep -c '^ok ' "$TMP/node.out")))
  fails=$((fails + $(grep -c '^FAIL' "$TMP/node.out")))
  grep -q '^ok ' "$TMP/node.out" || fail "the browser check ran nothing: $(tail -5 "$TMP/node.out")"
  [ -s "$OUT/dashboard-after-kill.png" ] && ok "screenshots kept: $OUT/dashboard-before.png, $OUT/dashboard-after-kill.png" || fail "no screenshot in $OUT"
  # and the status agrees with the page: the killed node is gone from the DHT view
  python3 -c '
import json,sys; s=json.load(sys.stdin); n=json.load(open(sys.argv[1]))[1]
(p,) = [p for p in s["peers"] if p["id"] == n["id"]]
assert not p["connected"] and not p["listed"] and s["models"][0]["replicas"][n["layers"][0]] == 1' "$TMP/nodes.json" \
    < <(curl -s "$URL/api/status") && ok "/api/status: the killed node is neither connected nor listed" || fail "status after the kill: $(curl -s "$URL/api/status" | head -c 400)"
else
  echo "SKIP - the browser checks: chromium ($CHROME), node or tests/node/node_modules/playwright-core missing (apt-get install chromium; npm ci in tests/node)"
fi
stop_swarm check "$SW"

# ---- with an API key
KEY=sk-dash-test
SK="$TMP/sk"
start_swarm "$SK" 1 1 --api-key "$KEY"
[ -n "$URL" ] || { fail "no API URL with --api-key: $(tail -3 "$SK.err")"; finish; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/status")
[ "$code" = 401 ] && ok "/api/status without the key: 401" || fail "/api/status without the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/metrics")
[ "$code" = 401 ] && ok "/metrics without the key: 401" || fail "/metrics without the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$URL/metrics")
[ "$code" = 200 ] && ok "/metrics with the key: 200" || fail "/metrics with the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/")
[ "$code" = 200 ] && ok "the page itself loads without the key (it holds no data)" || fail "GET / without the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/api/status")
[ "$code" = 405 ] && ok "POST /api/status: 405" || fail "POST /api/status: $code"
if [ "$browser" = 1 ]; then
  printf '{"mode":"key","url":"%s","chromium":"%s","out":"%s","key":"%s"}' "$URL" "$CHROME" "$OUT" "$KEY" >"$TMP/dashk.json"
  node "$NODEDIR/dashboard_check.mjs" "$TMP/dashk.json" >"$TMP/nodek.out" 2>&1
  cat "$TMP/nodek.out"
  passes=$((passes + $(grep -c '^ok ' "$TMP/nodek.out")))
  fails=$((fails + $(grep -c '^FAIL' "$TMP/nodek.out")))
fi
stop_swarm check "$SK"
finish || exit 1
[ "$browser" = 1 ] || exit 77

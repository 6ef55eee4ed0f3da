# lib.sh - helpers for integration tests that drive the real colony binary.
# Sourced by tests/integration/test_*.sh; ctest sets COLONY_BIN, COLONY_SRC
# and COLONY_FIXTURES.
set -u
BIN=${COLONY_BIN:?COLONY_BIN is not set}
FIX=${COLONY_FIXTURES:-../shared/fixtures}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/colony-it.XXXXXX")
# Processes a test starts and adds to pids are SIGKILLed when it exits;
# KEEP=1 keeps $TMP for a look. A test may set its own trap instead.
pids=()
lib_cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap lib_cleanup EXIT
fails=0
passes=0

ok()   { passes=$((passes + 1)); echo "ok   - $*"; }
fail() { fails=$((fails + 1)); echo "FAIL - $*"; }

# need_fixture FILE: skip (exit 77) outside CI, fail under CI, when missing.
need_fixture() {
  if [ ! -e "$FIX/$1" ]; then
    if [ "${CI:-}" = true ]; then echo "FAIL - fixture $FIX/$1 missing (CI=true)"; exit 1; fi
    echo "SKIP - fixture $FIX/$1 missing (set COLONY_FIXTURES)"; exit 77
  fi
}

# expect_exit CODE DESC CMD...: runs CMD, checks its exit status.
expect_exit() {
  local want=$1 desc=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  if [ "$got" = "$want" ]; then ok "$desc (exit $got)"; else fail "$desc: exit $got, want $want; stderr: $(head -c 400 "$TMP/err")"; fi
}

# W NAME ARGS...: `colony wallet` with its home in $TMP/NAME.
W() { local h=$1; shift; "$BIN" wallet --home "$TMP/$h" "$@"; }

# wait_log FILE PATTERN: waits up to WAIT_LOG_S seconds (15) for PATTERN in FILE.
wait_log() {
  local i
  for i in $(seq $((${WAIT_LOG_S:-15} * 20))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

# start_ledger_node OPERATOR [ARGS...]: a ledger node with its home in $TMP/lh,
# its database $TMP/ledger.db and its log $TMP/ledger.log; sets LEDGER_PID, LP
# (its transport port) and L (the --ledger-peer option), or ends the test.
start_ledger_node() {
  local op=$1; shift
  "$BIN" node --home "$TMP/lh" --ledger "$TMP/ledger.db" --ledger-operator "$op" "$@" --log-level info \
    >"$TMP/ledger.log" 2>&1 &
  LEDGER_PID=$!
  pids+=($LEDGER_PID)
  if ! wait_log "$TMP/ledger.log" "transport 127.0.0.1:[0-9]"; then
    fail "ledger node did not start: $(head -c 600 "$TMP/ledger.log")"; finish; exit 1
  fi
  LP=$(grep -o "transport 127.0.0.1:[0-9]*" "$TMP/ledger.log" | head -1 | cut -d: -f2)
  L="--ledger-peer 127.0.0.1:$LP"
}

finish() {
  echo "$passes passed, $fails failed"
  [ "$fails" = 0 ]
}

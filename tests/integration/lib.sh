# lib.sh - helpers for integration tests that drive the real colony binary.
# Sourced by tests/integration/test_*.sh; ctest sets COLONY_BIN, COLONY_SRC
# and COLONY_FIXTURES.
set -u
BIN=${COLONY_BIN:?COLONY_BIN is not set}
FIX=${COLONY_FIXTURES:-../shared/fixtures}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/colony-it.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
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

finish() {
  echo "$passes passed, $fails failed"
  [ "$fails" = 0 ]
}

#!/usr/bin/env bash
# test_wallet_cli.sh - `colony wallet`: the address is stable, the key file is
# 0600, a backup (plain and encrypted) restores the same address in another
# home, a wrong passphrase and a second import are refused, and deposits and
# withdrawals against a local ledger are exact to the micro-unit.
. "$(dirname "$0")/lib.sh"

H1=$TMP/h1 H2=$TMP/h2 H3=$TMP/h3
a1=$("$BIN" wallet --home "$H1" address 2>/dev/null)
a1b=$("$BIN" wallet --home "$H1" address 2>/dev/null)
if [[ "$a1" =~ ^[0-9a-f]{64}$ && "$a1" = "$a1b" ]]; then ok "address is 64 hex digits and stable"; else fail "address '$a1' / '$a1b'"; fi
mode=$(stat -c %a "$H1/wallet.key")
[ "$mode" = 600 ] && ok "wallet.key mode 600" || fail "wallet.key mode $mode"
chmod 644 "$H1/wallet.key"
expect_exit 1 "a wallet readable by others is refused" "$BIN" wallet --home "$H1" address
chmod 600 "$H1/wallet.key"

printf 'pass phrase\n' > "$TMP/pw"; printf 'other\n' > "$TMP/pw2"
expect_exit 0 "plain export" "$BIN" wallet --home "$H1" export "$TMP/plain.bak"
expect_exit 1 "export never overwrites" "$BIN" wallet --home "$H1" export "$TMP/plain.bak"
expect_exit 2 "--encrypt without a passphrase" env -u COLONY_PASSPHRASE "$BIN" wallet --home "$H1" export "$TMP/enc.bak" --encrypt
expect_exit 0 "encrypted export" "$BIN" wallet --home "$H1" export "$TMP/enc.bak" --encrypt --passphrase-file "$TMP/pw" --fast-kdf
expect_exit 1 "wrong passphrase" "$BIN" wallet --home "$H3" import "$TMP/enc.bak" --passphrase-file "$TMP/pw2"
grep -q "wrong passphrase" "$TMP/err" && ok "says: wrong passphrase" || fail "message: $(cat "$TMP/err")"
a2=$("$BIN" wallet --home "$H2" import "$TMP/plain.bak" 2>/dev/null)
[ "$a2" = "$a1" ] && ok "plain backup restores the address" || fail "plain import gave '$a2'"
a3=$("$BIN" wallet --home "$H3" import "$TMP/enc.bak" --passphrase-file "$TMP/pw" 2>/dev/null)
[ "$a3" = "$a1" ] && ok "encrypted backup restores the address" || fail "encrypted import gave '$a3'"
expect_exit 1 "a home with a wallet refuses an import" "$BIN" wallet --home "$H3" import "$TMP/plain.bak"
head -c 100 "$TMP/plain.bak" > "$TMP/short.bak"; chmod 600 "$TMP/short.bak"
expect_exit 3 "a truncated backup is a bad file" "$BIN" wallet --home "$TMP/h4" import "$TMP/short.bak"

DB=$TMP/ledger.db
expect_exit 0 "deposit" "$BIN" wallet --home "$H1" deposit 12.000001 --ledger "$DB"
expect_exit 1 "withdraw more than the balance" "$BIN" wallet --home "$H1" withdraw 12.000002 --ledger "$DB"
expect_exit 0 "withdraw" "$BIN" wallet --home "$H1" withdraw 2.5 --ledger "$DB"
bal=$("$BIN" wallet --home "$H1" balance --ledger "$DB" 2>/dev/null)
[ "$bal" = "balance 9.500001  stake 0.000000  reserved 0.000000" ] && ok "balance exact" || fail "balance '$bal'"
expect_exit 2 "an amount with 7 decimals" "$BIN" wallet --home "$H1" deposit 1.0000001 --ledger "$DB"
expect_exit 2 "ledger commands need --ledger" "$BIN" wallet --home "$H1" balance
finish

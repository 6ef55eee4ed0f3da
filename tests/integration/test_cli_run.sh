#!/usr/bin/env bash
# colony run / mkmodel / bench / inspect as a user drives them: real processes,
# real files, exit codes, and the llama.cpp reference text of stories260K.
. "$(dirname "$0")/lib.sh"
need_fixture stories260K.gguf
need_fixture reference.json
M="$FIX/stories260K.gguf"

# Greedy text equals llama.cpp's for both reference prompts.
for i in 0 1; do
  prompt=$(python3 -c "import json,sys;print(json.load(open('$FIX/reference.json'))['cases'][$i]['prompt'],end='')")
  want=$(python3 -c "import json;c=json.load(open('$FIX/reference.json'))['cases'][$i];print(c['prompt']+c['runs']['kv_f32']['generated_text'],end='')")
  for t in 1 2; do
    got=$("$BIN" run -m "$M" -p "$prompt" -n 64 --temp 0 -t $t 2>"$TMP/err")
    if [ "$got" = "$want" ]; then ok "run greedy '$prompt' -t $t equals llama.cpp"; else fail "run greedy '$prompt' -t $t: got [$got]"; fi
  done
  got=$("$BIN" run -m "$M" -p "$prompt" -n 64 --temp 0 --kv f16 --ranges 3 2>/dev/null)
  [ "$got" = "$want" ] && ok "run --kv f16 --ranges 3 equals llama.cpp" || fail "run --kv f16 --ranges 3: [$got]"
done
grep -q "tokens/s" "$TMP/err" && ok "run ends with a tokens/s line" || fail "no tokens/s line: $(cat "$TMP/err")"

# --logits-out writes the 512 raw logits, close to the reference file.
"$BIN" run -m "$M" -p "Once upon a time" -n 1 --temp 0 --logits-out "$TMP/lg.f32" >/dev/null 2>&1
python3 - "$TMP/lg.f32" "$FIX/logits/stories260K_once_kvf32.f32" <<'PY' && ok "--logits-out within 1e-4 of llama.cpp" || fail "--logits-out differs"
import struct, sys
a = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read()
assert len(a) == len(b) == 512 * 4, (len(a), len(b))
fa = struct.unpack('512f', a); fb = struct.unpack('512f', b)
d = max(abs(x - y) for x, y in zip(fa, fb)); print('max diff', d); sys.exit(0 if d < 1e-4 else 1)
PY

# Seeded sampling is reproducible; another seed differs.
a=$("$BIN" run -m "$M" -n 40 --temp 0.9 --seed 7 2>/dev/null)
b=$("$BIN" run -m "$M" -n 40 --temp 0.9 --seed 7 -t 1 2>/dev/null)
c=$("$BIN" run -m "$M" -n 40 --temp 0.9 --seed 8 2>/dev/null)
[ "$a" = "$b" ] && ok "same seed, same text" || fail "same seed gave [$a] and [$b]"
[ "$a" != "$c" ] && ok "other seed, other text" || fail "seeds 7 and 8 gave the same text"

# Context limit: stops cleanly with a reason.
"$BIN" run -m "$M" -n 100 --temp 0 --ctx 16 >/dev/null 2>"$TMP/err"; rc=$?
[ $rc = 0 ] && grep -q "stopped: context" "$TMP/err" && ok "context limit stops cleanly" || fail "context limit: rc $rc $(cat "$TMP/err")"

# Usage errors and bad files.
expect_exit 0 "run --help" "$BIN" run --help
expect_exit 0 "bench --help" "$BIN" bench --help
expect_exit 0 "mkmodel --help" "$BIN" mkmodel --help
expect_exit 0 "inspect --help" "$BIN" inspect --help
expect_exit 0 "colony --help" "$BIN" --help
expect_exit 2 "no command" "$BIN"
expect_exit 2 "unknown command" "$BIN" frobnicate
expect_exit 2 "unknown option" "$BIN" run --frob
expect_exit 2 "bad number" "$BIN" run -m "$M" -n abc
expect_exit 2 "negative temperature" "$BIN" run -m "$M" --temp -1
expect_exit 1 "missing model file" "$BIN" run -m "$TMP/none.gguf"
head -c 1000 "$M" > "$TMP/trunc.gguf"
expect_exit 3 "truncated model file" "$BIN" run -m "$TMP/trunc.gguf"
grep -q "trunc.gguf" "$TMP/err" && ok "error names the file" || fail "error does not name the file: $(cat "$TMP/err")"
printf 'NOTAGGUF%.0s' {1..100} > "$TMP/bad.gguf"
expect_exit 3 "bad magic" "$BIN" run -m "$TMP/bad.gguf"
expect_exit 3 "inspect bad magic" "$BIN" inspect "$TMP/bad.gguf"
expect_exit 0 "inspect stories260K" "$BIN" inspect "$M"
grep -q "GGUF v3" "$TMP/out" && grep -q "tensors: 48" "$TMP/out" && grep -Eq "blk.4.ffn_down.weight +f32 +172 x 64" "$TMP/out" \
  && grep -Eq "llama.block_count +u32 +5" "$TMP/out" && ok "inspect lists metadata and tensors" || fail "inspect output: $(head -5 "$TMP/out")"

# mkmodel -> run -> bench on a synthetic model, per type.
for ty in f16 q8_0 q4_0; do
  expect_exit 0 "mkmodel tiny $ty" "$BIN" mkmodel -q -o "$TMP/s-$ty.gguf" --preset tiny --type $ty
  expect_exit 0 "run synthetic $ty" "$BIN" run -m "$TMP/s-$ty.gguf" -n 8 --temp 0
  expect_exit 0 "bench synthetic $ty" "$BIN" bench -m "$TMP/s-$ty.gguf" -p 16 -n 4 -r 1
done
grep -q "^pp" "$TMP/out" && grep -q "^tg" "$TMP/out" && ok "bench prints pp and tg rows" || fail "bench output: $(cat "$TMP/out")"
expect_exit 0 "mkmodel with copied vocab" "$BIN" mkmodel -q -o "$TMP/v.gguf" --preset tiny --vocab-from "$M"
expect_exit 0 "run with copied vocab" "$BIN" run -m "$TMP/v.gguf" -n 4
expect_exit 2 "mkmodel q4_k needs multiples of 256" "$BIN" mkmodel -q -o "$TMP/k.gguf" --preset tiny --type q4_k
expect_exit 2 "mkmodel without -o" "$BIN" mkmodel --preset tiny
# the same seed writes the same bytes
"$BIN" mkmodel -q -o "$TMP/a.gguf" --preset tiny --seed 5 && "$BIN" mkmodel -q -o "$TMP/b.gguf" --preset tiny --seed 5
cmp -s "$TMP/a.gguf" "$TMP/b.gguf" && ok "mkmodel is deterministic" || fail "mkmodel differs for one seed"

# The main job with nothing outside the repository.
out=$("$BIN" run -n 8 2>"$TMP/err"); rc=$?
[ $rc = 0 ] && grep -q "synthetic" "$TMP/err" && ok "run with no model says it made a synthetic one" || fail "run without -m: rc $rc $(cat "$TMP/err")"
finish

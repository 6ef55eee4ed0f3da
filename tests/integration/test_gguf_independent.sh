#!/usr/bin/env bash
# Files written by `colony mkmodel` are standard GGUF: an independent reader
# (@huggingface/gguf, from the npm registry, installed by scripts/test.sh into
# tests/node) parses them and finds the metadata, types and shapes we wrote.
. "$(dirname "$0")/lib.sh"
SRC=${COLONY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ ! -d "$SRC/tests/node/node_modules/@huggingface/gguf" ] || ! command -v node >/dev/null; then
  if [ "${CI:-}" = true ]; then echo "FAIL - tests/node not installed (run scripts/test.sh)"; exit 1; fi
  echo "SKIP - tests/node/node_modules missing: run (cd tests/node && npm ci)"; exit 77
fi

check() { # FILE TYPE_ID N_VOCAB DIM LAYERS KVDIM FFN
  node "$SRC/tests/node/gguf_check.mjs" "$1" > "$TMP/js" 2>"$TMP/jserr" || { fail "node reader refused $1: $(head -c 300 "$TMP/jserr")"; return; }
  python3 - "$TMP/js" "$@" <<'PY' && ok "independent reader agrees on $(basename "$1") (type $2)" || fail "independent reader disagrees on $(basename "$1")"
import json, sys
j = json.load(open(sys.argv[1]))
_, ty, nv, dim, nl, kvd, ffn = sys.argv[2], *map(int, sys.argv[3:9])
t = {x['name']: x for x in j['tensors']}
m = j['meta']
errs = []
def want(c, msg):
    if not c: errs.append(msg)
want(j['version'] == 3, 'version')
want(j['n_tensors'] == 3 + 9 * nl == len(t), 'tensor count')
want(m['general.architecture'] == 'llama', 'arch')
want(m['llama.embedding_length'] == dim and m['llama.block_count'] == nl, 'shape metadata')
want(m['tokenizer.ggml.tokens']['array'] == nv, 'vocab size')
want(t['token_embd.weight']['shape'] == [dim, nv] and t['token_embd.weight']['type'] == ty, 'token_embd')
want(t['output.weight']['shape'] == [dim, nv], 'output')
for l in range(nl):
    want(t[f'blk.{l}.attn_k.weight']['shape'] == [dim, kvd], f'attn_k {l}')
    want(t[f'blk.{l}.ffn_down.weight']['shape'] == [ffn, dim] and t[f'blk.{l}.ffn_down.weight']['type'] == ty, f'ffn_down {l}')
    want(t[f'blk.{l}.attn_norm.weight']['type'] == 0 and t[f'blk.{l}.attn_norm.weight']['shape'] == [dim], f'norm {l}')
want(all(x['offset'] % 32 == 0 for x in j['tensors']), 'alignment')
if errs: print(errs)
sys.exit(1 if errs else 0)
PY
}

for ty in f16:1 q8_0:8 q4_0:2 bf16:30; do
  "$BIN" mkmodel -q -o "$TMP/m.gguf" --preset tiny --type "${ty%%:*}" || fail "mkmodel ${ty%%:*}"
  check "$TMP/m.gguf" "${ty##*:}" 512 64 2 32 160
done
"$BIN" mkmodel -q -o "$TMP/k.gguf" --preset small --type q4_k || fail "mkmodel q4_k"
check "$TMP/k.gguf" 12 2048 256 4 128 768
if [ -e "$FIX/ggml-vocab-llama-bpe.gguf" ]; then
  "$BIN" mkmodel -q -o "$TMP/bpe.gguf" --preset tiny --type q8_0 --vocab-from "$FIX/ggml-vocab-llama-bpe.gguf" || fail "mkmodel bpe vocab"
  check "$TMP/bpe.gguf" 8 128256 64 2 32 160
fi
finish

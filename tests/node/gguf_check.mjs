// gguf_check.mjs FILE - reads a GGUF with an independent reader
// (@huggingface/gguf) and prints what it found as one JSON line: version,
// tensor count, metadata keys and a few values, and every tensor's name,
// type and shape, so a test can compare them with what colony wrote.
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
const { metadata, tensorInfos } = await gguf(path, { allowLocalFile: true });
const meta = {};
for (const [k, v] of Object.entries(metadata)) {
  if (Array.isArray(v)) meta[k] = { array: v.length, first: v.slice(0, 3) };
  else meta[k] = typeof v === "bigint" ? Number(v) : v;
}
const tensors = tensorInfos.map((t) => ({
  name: t.name,
  type: Number(t.dtype),
  shape: t.shape.map((d) => Number(d)),
  offset: Number(t.offset),
}));
console.log(JSON.stringify({ version: Number(metadata.version), n_tensors: Number(metadata.tensor_count), meta, tensors }));

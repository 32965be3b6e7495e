// Parse a GGUF file with @huggingface/gguf and print what it sees.
// Usage: node gguf_parse.mjs <model.gguf>
// Prints one JSON object: {"metadata": {key: value (arrays: {"count", "first"})},
//  "tensors": [{"name", "shape", "dtype", "offset"}]}.
import { gguf } from "@huggingface/gguf";
import { resolve } from "node:path";

const [path] = process.argv.slice(2);
if (!path) {
  console.error("usage: node gguf_parse.mjs <model.gguf>");
  process.exit(2);
}
const { metadata, tensorInfos } = await gguf(resolve(path), { allowLocalFile: true });
const md = {};
for (const [k, v] of Object.entries(metadata)) {
  if (Array.isArray(v)) md[k] = { count: v.length, first: v.slice(0, 8) };
  else md[k] = typeof v === "bigint" ? Number(v) : v;
}
const tensors = tensorInfos.map((t) => ({
  name: t.name,
  shape: t.shape.map(Number),
  dtype: t.dtype,
  offset: Number(t.offset),
}));
process.stdout.write(JSON.stringify({ metadata: md, tensors }) + "\n");

// Reference encoder for the tokenizer tests.
// Usage: node tokenizer_encode.mjs <model-dir> <texts.json>
//   <model-dir> holds tokenizer.json and tokenizer_config.json;
//   <texts.json> is a JSON array of strings.
// Prints one JSON object: {"results": [{"ids": [...], "decoded": "..."}, ...]}
// where ids come from encode(text, {add_special_tokens: true}) and decoded is
// decode(ids) without skipping special tokens.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

const [dir, textsPath] = process.argv.slice(2);
if (!dir || !textsPath) {
  console.error("usage: node tokenizer_encode.mjs <model-dir> <texts.json>");
  process.exit(2);
}
const tokenizerJSON = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tk = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const results = texts.map((t) => {
  const ids = tk.encode(t, { add_special_tokens: true });
  const decoded = ids.length ? tk.decode(ids, { skip_special_tokens: false }) : "";
  return { ids, decoded };
});
process.stdout.write(JSON.stringify({ results }) + "\n");

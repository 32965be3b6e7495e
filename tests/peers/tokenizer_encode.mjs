// Reference encoder for the tokenizer tests.
// Usage: node tokenizer_encode.mjs <model-dir> <texts.json>
//   <model-dir> holds tokenizer.json and tokenizer_config.json;
//   <texts.json> is a JSON array of strings.
// Prints one JSON object: {"results": [{"ids", "decoded", "decoded_skip"}, ...]}
// where ids come from encode(text, {add_special_tokens: true}), decoded is
// decode(ids) keeping special tokens and decoded_skip skips them (both without
// clean_up_tokenization_spaces).
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
  const opts = { clean_up_tokenization_spaces: false };
  const decoded = ids.length ? tk.decode(ids, { ...opts, skip_special_tokens: false }) : "";
  const decoded_skip = ids.length ? tk.decode(ids, { ...opts, skip_special_tokens: true }) : "";
  return { ids, decoded, decoded_skip };
});
process.stdout.write(JSON.stringify({ results }) + "\n");

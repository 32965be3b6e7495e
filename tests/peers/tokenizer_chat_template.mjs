// Load a model directory's tokenizer files in transformers.js (@lenml/tokenizers)
// and render + encode a conversation through the directory's chat template.
// Usage: node tokenizer_chat_template.mjs <model-dir> <messages.json>
// Prints {"text": rendered prompt, "ids": encode(text, add_special_tokens: false),
//         "eos_token": tokenizer's eos token, "eos_id": its id}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

const [dir, messagesPath] = process.argv.slice(2);
const tokenizerJSON = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tk = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
const messages = JSON.parse(readFileSync(messagesPath, "utf8"));
const text = tk.apply_chat_template(messages, { tokenize: false, add_generation_prompt: false });
const ids = tk.encode(text, { add_special_tokens: false });
const eos = typeof tokenizerConfig.eos_token === "string" ? tokenizerConfig.eos_token : tokenizerConfig.eos_token?.content;
const eosIds = tk.encode(eos, { add_special_tokens: false });
process.stdout.write(JSON.stringify({ text, ids, eos_token: eos, eos_ids: eosIds }) + "\n");

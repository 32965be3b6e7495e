// Several GGUF files through llama.cpp (node-llama-cpp, CPU build) in one
// process, set up for an exact comparison with another engine as
// gguf_llama_generate.mjs is (no repeat penalty, temperature 0, f32 KV cache,
// no flash attention; see shared/PEERS.md).
// Usage: node gguf_llama_batch.mjs <jobs.json>
//   jobs.json: [{"model": path, "prompt": [ids], "n": tokens to generate,
//                "texts": [strings to tokenize]}, ...]
// Prints a JSON array, one object per job: {"tokens": [...] (greedy
// continuation of the prompt, used as given), "tokenized": [[...], ...]
// (model.tokenize(text, true): special tokens in the text recognised, as
// Hugging Face tokenizers do; no BOS added), "bos": id or null, "add_bos":
// model.tokens.shouldPrependBosToken}.
import { readFileSync } from "node:fs";
import { getLlama } from "node-llama-cpp";

const [jobsPath] = process.argv.slice(2);
if (!jobsPath) {
  console.error("usage: node gguf_llama_batch.mjs <jobs.json>");
  process.exit(2);
}
const jobs = JSON.parse(readFileSync(jobsPath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const results = [];
for (const job of jobs) {
  const model = await llama.loadModel({ modelPath: job.model, vocabOnly: job.n === 0 });
  const tokens = [];
  if (job.n > 0) {
    const context = await model.createContext({
      contextSize: 512,
      threads: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: "F32",
      experimentalKvCacheValueType: "F32",
    });
    for await (const t of context.getSequence().evaluate(job.prompt, { temperature: 0, repeatPenalty: false })) {
      tokens.push(t);
      if (tokens.length >= job.n) break;
    }
    await context.dispose();
  }
  const tokenized = (job.texts ?? []).map((t) => Array.from(model.tokenize(t, true)));
  results.push({ tokens, tokenized, bos: model.tokens.bos ?? null, add_bos: model.tokens.shouldPrependBosToken });
  await model.dispose();
}
process.stdout.write(JSON.stringify(results) + "\n");
await llama.dispose();

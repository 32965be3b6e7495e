// Prompt and generation speed of llama.cpp (node-llama-cpp 3.21.1, CPU
// build) on a GGUF file, for bench/run_engine_bench.py.  Greedy, no repeat
// penalty; the prompt is given as token ids.  The prompt time runs from the
// call until the first generated token (the prompt's logits sampled), the
// generation time from there to the last token (n - 1 decode steps).
// Usage: node llamacpp_speed.mjs <peers-dir> <model.gguf> <ids> <n> <threads> <reps>
// Prints one JSON line per repetition: {"prompt_tps", "gen_tps", "tokens"}.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [peers, modelPath, idsArg, nArg, threadsArg, repsArg] = process.argv.slice(2);
if (!peers || !modelPath || !idsArg || !nArg || !threadsArg) {
  console.error("usage: node llamacpp_speed.mjs <peers-dir> <model.gguf> <ids> <n> <threads> [reps]");
  process.exit(2);
}
const { getLlama } = await import(pathToFileURL(join(peers, "node_modules/node-llama-cpp/dist/index.js")).href);
const ids = idsArg.split(",").map(Number);
const n = parseInt(nArg, 10), threads = parseInt(threadsArg, 10), reps = parseInt(repsArg ?? "1", 10);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 512, threads, batchSize: 512, flashAttention: false });
for (let r = 0; r < reps; ++r) {
  const sequence = context.getSequence();
  const out = [];
  const t0 = performance.now();
  let t1 = 0;
  for await (const t of sequence.evaluate(ids, { temperature: 0, repeatPenalty: false })) {
    if (out.length === 0) t1 = performance.now();
    out.push(t);
    if (out.length >= n) break;
  }
  const t2 = performance.now();
  process.stdout.write(JSON.stringify({
    prompt_tps: ids.length / ((t1 - t0) / 1000),
    gen_tps: (out.length - 1) / ((t2 - t1) / 1000),
    tokens: out,
  }) + "\n");
  sequence.dispose();
}
await context.dispose();
await model.dispose();
await llama.dispose();

// Greedy continuation of a prompt by llama.cpp (node-llama-cpp, CPU build),
// set up for an exact comparison with another engine (see shared/PEERS.md):
// BOS first, no repeat penalty, temperature 0, f32 KV cache, no flash
// attention.
// Usage: node gguf_llama_generate.mjs <model.gguf> <ids|text> <n> [--chat "user message"]
//   <ids|text>: "1,403,407" (used as given) or text (tokenized, BOS prepended).
//   --chat: instead, apply the chat template stored in the GGUF to one user
//   message through node-llama-cpp's chat session and print the reply.
// Prints one JSON object: {"tokens": [...], "bos": id, "vocab": n, "text": "..."}.
import { getLlama, LlamaChatSession } from "node-llama-cpp";

const [modelPath, prompt, nArg, flag, chatMsg] = process.argv.slice(2);
if (!modelPath || prompt === undefined || !nArg) {
  console.error("usage: node gguf_llama_generate.mjs <model.gguf> <ids|text> <n> [--chat msg]");
  process.exit(2);
}
const n = parseInt(nArg, 10);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({
  contextSize: 512,
  threads: 1,
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();
if (flag === "--chat") {
  const session = new LlamaChatSession({ contextSequence: sequence });
  const text = await session.prompt(chatMsg, { maxTokens: n, temperature: 0, repeatPenalty: false });
  process.stdout.write(JSON.stringify({ text, wrapper: session.chatWrapper.wrapperName ?? String(session.chatWrapper.constructor.name) }) + "\n");
} else {
  let ids;
  if (/^[0-9]+(,[0-9]+)*$/.test(prompt)) ids = prompt.split(",").map(Number);
  else ids = [model.tokens.bos, ...model.tokenize(prompt)];
  const out = [];
  if (n > 0) {
    for await (const t of sequence.evaluate(ids, { temperature: 0, repeatPenalty: false })) {
      out.push(t);
      if (out.length >= n) break;
    }
  }
  process.stdout.write(JSON.stringify({ tokens: out, prompt: ids, bos: model.tokens.bos, vocab: model.fileInsights.tensorInfo ? undefined : undefined, text: model.detokenize(out) }) + "\n");
}
await context.dispose();
await model.dispose();
await llama.dispose();

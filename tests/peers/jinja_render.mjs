// Reference renderer for the chat_template tests: @huggingface/jinja.
//
// Usage: node jinja_render.mjs cases.json
//   cases.json: [{"template": "...", "context": {...}}, ...]
// Prints a JSON array, one entry per case, in order:
//   {"ok": true, "output": "..."} or {"ok": false, "error": "..."}
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const parsed = new Map();
const results = cases.map(({ template, context }) => {
  try {
    let t = parsed.get(template);
    if (!t) {
      t = new Template(template);
      parsed.set(template, t);
    }
    return { ok: true, output: t.render(context) };
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(results));

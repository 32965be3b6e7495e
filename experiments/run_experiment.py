#!/usr/bin/python3
"""The chat-vector experiment (Huang et al., ACL 2024) in miniature, end to end.

    experiments/run_experiment.py --out WORK [--scale full|ci] [--seeds 0 1 2]

Rebuilds everything from ../shared: data (experiments/build_data.py), the base
model (stories260K converted), and per seed:
  chat     = base fine-tuned on English chat data (chat template + <|end|>)
  cp       = base continually pre-trained on Spanish verses
  cpx      = the same with the vocabulary extended by tokens learned from them
  cp_ft    = cp fine-tuned on the Spanish chat data (the paper's baseline)
  cpx_ft   = cpx fine-tuned on the Spanish chat data
  merges   = cp + r * (chat - base) for r in RATIOS, cp_ft + cv,
             cpx + cv under each --embeddings policy, cpx_ft + cv
Each model is evaluated (chatvec eval) on held-out English and Spanish
instructions and held-out verses.  Writes WORK/results.json, WORK/report.md
(tables, mean +- sample std over seeds) and WORK/*.svg.
The metrics are defined in src/eval/eval.h and were fixed before any run.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SCALES = {
    # steps, batch, seq_len per phase; extension size; eval sizes
    "full": dict(chat_steps=200, cp_steps=150, ft_steps=100, batch=16, cp_seq=128, chat_seq=128, extend=128,
                 lr=2e-3, cp_lr=1e-3, warmup=15, n_eval=15, n_dialogue=10, heldout_lines=150, max_new=40,
                 ratios=[0.5, 1.0], n_instr=1500),
    "ci": dict(chat_steps=4, cp_steps=4, ft_steps=4, batch=4, cp_seq=64, chat_seq=96, extend=16,
               lr=2e-3, cp_lr=1e-3, warmup=2, n_eval=2, n_dialogue=1, heldout_lines=10, max_new=16,
               ratios=[0.5, 1.0], n_instr=60),
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Generation of a 260K-parameter model is too small to gain from threads; on a
# busy machine one thread is much faster (no OpenMP barriers waiting for cores).
EVAL_ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(cmd, quiet=True, env=None):
    t = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}")
    return r, time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--chatvec", default=os.environ.get("CHATVEC_BIN", os.path.join(ROOT, "build", "src", "cli", "chatvec")))
    ap.add_argument("--threads", type=int, default=0, help="training threads (0: OpenMP default)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse trained models and evaluations already in --out (same settings assumed)")
    a = ap.parse_args()
    S = SCALES[a.scale]
    seeds = a.seeds if a.seeds is not None else ([0, 1, 2] if a.scale == "full" else [0])
    cv = a.chatvec
    os.makedirs(a.out, exist_ok=True)
    W = os.path.abspath(a.out)
    data = os.path.join(W, "data")
    t_start = time.time()
    timings = {}

    log("building data")
    run([sys.executable, os.path.join(HERE, "build_data.py"), data, "--shared", a.shared, "--n-eval", str(S["n_eval"]),
         "--n-eval-dialogue", str(S["n_dialogue"]), "--n-instr", str(S["n_instr"])])
    tasks = os.path.join(data, "tasks.jsonl")
    with open(tasks, "w") as f:
        for lang in ("en", "es"):
            f.write(open(os.path.join(data, f"tasks_{lang}.jsonl")).read())
    tpl = os.path.join(data, "chat_template.jinja")

    base = os.path.join(W, "base")
    if os.path.exists(base):
        shutil.rmtree(base)
    run([cv, "convert", "llama2c", os.path.join(a.shared, "models/stories260K/stories260K.bin"), "--tokenizer",
         os.path.join(a.shared, "models/stories260K/tok512.model"), "-o", base])

    threads = ["--threads", str(a.threads)] if a.threads else []

    def train(name, src, data_file, steps, seed, extra):
        out = os.path.join(W, name)
        if a.resume and os.path.exists(os.path.join(out, "model.safetensors")):
            log(f"reusing {name}")
            return out
        cmd = [cv, "-q", "train", src, "--data", data_file, "-o", out, "--steps", str(steps), "--batch", str(S["batch"]),
               "--warmup", str(S["warmup"]), "--seed", str(seed), "--force"] + threads + extra
        _, dt = run(cmd)
        timings[name] = dt
        logs = [json.loads(l) for l in open(os.path.join(out, "train_log.jsonl"))]
        log(f"trained {name}: {steps} steps in {dt:.0f} s, loss {logs[0]['loss']:.3f} -> {logs[-1]['loss']:.3f}")
        return out

    chat_flags = ["--chat-template", tpl, "--add-special", "<|end|>", "--eos-token", "<|end|>"]

    def with_template(src, name):
        """A view of `src` with the chat template installed (for models that have none)."""
        out = os.path.join(W, name)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        for f in os.listdir(src):
            p = os.path.join(src, f)
            if f.endswith(".safetensors"):
                os.symlink(p, os.path.join(out, f))
            elif os.path.isfile(p):
                shutil.copy(p, out)
        tc_path = os.path.join(out, "tokenizer_config.json")
        tc = json.load(open(tc_path)) if os.path.exists(tc_path) else {}
        tc["chat_template"] = open(tpl).read()
        json.dump(tc, open(tc_path, "w"), indent=2)
        return out

    def merge(name, target, chat, ratio, policy=None):
        out = os.path.join(W, name)
        if os.path.exists(out):
            shutil.rmtree(out)
        cmd = [cv, "-q", "merge", "--base", base, "--chat", chat, "--target", target, "--ratio", str(ratio), "-o", out]
        if policy:
            cmd += ["--embeddings", policy]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            return None, (r.stderr.strip().splitlines() or ["failed"])[-1]
        return out, None

    def evaluate(model_dir, tag):
        out = os.path.join(W, "eval", tag + ".json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if a.resume and os.path.exists(out):
            return json.load(open(out))
        _, dt = run([cv, "-q", "eval", model_dir, "--tasks", tasks, "--max-new", str(S["max_new"]),
                     "--lang-data", f"en={data}/en_lid.txt", "--lang-data", f"es={data}/es_lid.txt",
                     "--heldout", f"en={data}/en_heldout.txt", "--heldout", f"es={data}/es_heldout.txt",
                     "--heldout-lines", str(S["heldout_lines"]), "--json", out], env=EVAL_ENV)
        r = json.load(open(out))
        timings["eval:" + tag] = dt
        s = r["summary"]
        log(f"eval {tag}: es f1 {s['es'].get('f1', 0):.3f} es-share {s['es']['lang_share']:.3f} "
            f"en f1 {s['en'].get('f1', 0):.3f} ({dt:.0f} s)")
        return r

    results = {}  # row -> seed -> metrics (or error)
    checks = {}

    def same_files(a_dir, b_dir):
        """Names of the non-weight files that differ (the model card and chatvec.json, which record how
        each output was made -- `apply` or `merge` -- are left aside)."""
        names = sorted(set(os.listdir(a_dir)) | set(os.listdir(b_dir)))
        bad = []
        for n in names:
            if n in ("README.md", "chatvec.json") or n.endswith(".safetensors") or n.endswith(".index.json"):
                continue
            pa, pb = os.path.join(a_dir, n), os.path.join(b_dir, n)
            if not (os.path.isfile(pa) and os.path.isfile(pb)) or open(pa, "rb").read() != open(pb, "rb").read():
                bad.append(n)
        return bad

    def reuse_check(sfx, targets, chat):
        vec = os.path.join(W, "vector" + sfx)
        if os.path.exists(vec):
            shutil.rmtree(vec)
        run([cv, "-q", "extract", "--base", base, "--chat", chat, "--dtype", "f32", "-o", vec])
        out = {}
        for tag, (target, merged_name) in targets.items():
            merged = os.path.join(W, merged_name)
            applied = os.path.join(W, "applied_" + tag + sfx)
            if os.path.exists(applied):
                shutil.rmtree(applied)
            run([cv, "-q", "apply", "--target", target, "--vector", vec, "--ratio", "1.0", "-o", applied])
            d = json.loads(subprocess.run([cv, "diff", applied, merged, "--json"], check=True,
                                          stdout=subprocess.PIPE).stdout)
            differing = same_files(applied, merged)
            out[tag] = {"tensors": len(d["tensors"]), "identical": d["identical"], "files_differing": differing,
                        "equal": d["identical"] == len(d["tensors"]) and not d["only_in_a"] and not d["only_in_b"]
                        and not d["mismatched"] and not differing}
            log(f"extract once, apply to {tag}: {d['identical']}/{len(d['tensors'])} tensors identical to the merge"
                + (f"; files differ: {differing}" if differing else ""))
        return out

    def record(row, seed, r, err=None):
        results.setdefault(row, {})[str(seed)] = {"error": err} if err else metrics(r)

    for seed in seeds:
        log(f"=== seed {seed}")
        sfx = f"_s{seed}"
        chat = train("chat" + sfx, base, f"{data}/chat_en.jsonl", S["chat_steps"], seed,
                     chat_flags + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])
        cp = train("cp" + sfx, base, f"{data}/es_cp.txt", S["cp_steps"], seed,
                   ["--lr", str(S["cp_lr"]), "--seq-len", str(S["cp_seq"])])
        cpx = train("cpx" + sfx, base, f"{data}/es_cp.txt", S["cp_steps"], seed,
                    ["--lr", str(S["cp_lr"]), "--seq-len", str(S["cp_seq"]), "--extend-vocab", str(S["extend"])])
        cp_ft = train("cp_ft" + sfx, cp, f"{data}/chat_es.jsonl", S["ft_steps"], seed,
                      chat_flags + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])
        cpx_ft = train("cpx_ft" + sfx, cpx, f"{data}/chat_es.jsonl", S["ft_steps"], seed,
                       chat_flags + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])

        record("base", seed, evaluate(with_template(base, "base_tpl"), "base" + sfx))
        record("chat (English SFT)", seed, evaluate(chat, "chat" + sfx))
        record("CP", seed, evaluate(with_template(cp, "cp_tpl" + sfx), "cp" + sfx))
        for ratio in S["ratios"]:
            m, err = merge(f"cp_cv{ratio}{sfx}", cp, chat, ratio)
            row = "CP + CV" if ratio == 1.0 else f"CP + {ratio} CV"
            record(row, seed, evaluate(m, f"cp_cv{ratio}{sfx}") if m else None, err)
        record("CP→FT", seed, evaluate(cp_ft, "cp_ft" + sfx))
        m, err = merge("cp_ft_cv" + sfx, cp_ft, chat, 1.0)
        record("CP→FT + CV", seed, evaluate(m, "cp_ft_cv" + sfx) if m else None, err)
        # Extended vocabulary (Table 7 analogue)
        record("CPx", seed, evaluate(with_template(cpx, "cpx_tpl" + sfx), "cpx" + sfx))
        for policy in ("full", "shared", "align", "skip"):  # auto resolves to shared here
            m, err = merge(f"cpx_cv_{policy}{sfx}", cpx, chat, 1.0, policy)
            record(f"CPx + CV [{policy}]", seed, evaluate(m, f"cpx_cv_{policy}{sfx}") if m else None, err)
        record("CPx→FT", seed, evaluate(cpx_ft, "cpx_ft" + sfx))
        m, err = merge("cpx_ft_cv" + sfx, cpx_ft, chat, 1.0)
        record("CPx→FT + CV", seed, evaluate(m, "cpx_ft_cv" + sfx) if m else None, err)
        # A reusable vector: extracted once (f32, exact), applied to CP and to
        # CP->FT, it must give what the three-model merges gave (the chat model
        # added <|end|>: its row travels in the vector).
        checks.setdefault("extract_apply_equals_merge", {})[str(seed)] = reuse_check(
            sfx, {"cp": (cp, "cp_cv1.0" + sfx), "cp_ft": (cp_ft, "cp_ft_cv" + sfx)}, chat)
        json.dump({"scale": a.scale, "config": S, "seeds": seeds, "results": results, "checks": checks,
                   "timings": timings}, open(os.path.join(W, "results.json"), "w"), indent=1)

    total = time.time() - t_start
    json.dump({"scale": a.scale, "config": S, "seeds": seeds, "results": results, "checks": checks,
               "timings": timings, "total_seconds": total}, open(os.path.join(W, "results.json"), "w"), indent=1)
    write_report(W, results, S, seeds, total)
    log(f"done in {total / 60:.1f} min; report: {os.path.join(W, 'report.md')}")


def metrics(r):
    s, h = r["summary"], r["heldout"]
    out = {}
    for lang in ("es", "en"):
        out[f"{lang}_exact"] = s[lang].get("exact", 0.0)
        out[f"{lang}_f1"] = s[lang].get("f1", 0.0)
        out[f"{lang}_eos"] = s[lang]["eos"]
        out[f"{lang}_share"] = s[lang]["lang_share"]
        out[f"{lang}_bpb"] = h[lang]["bits_per_byte"]
        out[f"{lang}_tokens"] = s[lang]["mean_tokens"]  # mean answer length (descriptive)
    for k, v in r["by_type"].items():
        if "f1" in v:
            out[f"{k}_f1"] = v["f1"]
    return out


COLUMNS = [("es_exact", "es exact"), ("es_f1", "es F1"), ("es_eos", "es EOS"), ("es_share", "es share"),
           ("en_exact", "en exact"), ("en_f1", "en F1"), ("en_eos", "en EOS"), ("en_share", "en share"),
           ("es_bpb", "es bits/byte"), ("en_bpb", "en bits/byte"), ("es_tokens", "es answer tokens")]
TABLE1 = ["base", "chat (English SFT)", "CP", "CP + CV", "CP + 0.5 CV", "CP→FT", "CP→FT + CV"]
TABLE7 = ["CPx", "CPx + CV [full]", "CPx + CV [shared]", "CPx + CV [align]", "CPx + CV [skip]",
          "CPx→FT", "CPx→FT + CV"]


def agg(results, row, key):
    vals = [m[key] for m in results.get(row, {}).values() if "error" not in m and key in m]
    if not vals:
        return None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def table(results, rows):
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS) + "\n"
    lines = []
    for row in rows:
        if row not in results:
            continue
        errs = [m["error"] for m in results[row].values() if "error" in m]
        if errs and len(errs) == len(results[row]):
            lines.append(f"| {row} | not produced: `{errs[0][:120]}` |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for key, _ in COLUMNS:
            v = agg(results, row, key)
            cells.append("–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def svg_bars(path, title, rows, series, results):
    """Grouped bars (mean) with error bars (std) per row, hand-written SVG."""
    W_, H_ = 860, 380
    left, bottom, top = 60, 110, 40
    n, k = len(rows), len(series)
    gw = (W_ - left - 20) / max(1, n)
    bw = gw * 0.8 / max(1, k)
    colors = ["#3b6fb6", "#e08a2c", "#4a9a4a", "#b04a4a"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W_}" height="{H_}" fill="white"/>',
           f'<text x="{W_ / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    ph = H_ - bottom - top
    for i in range(0, 11, 2):
        y = top + ph * (1 - i / 10)
        out.append(f'<line x1="{left}" x2="{W_ - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{i / 10:.1f}</text>')
    for ri, row in enumerate(rows):
        x0 = left + ri * gw + gw * 0.1
        for si, (key, label) in enumerate(series):
            v = agg(results, row, key)
            if v is None:
                continue
            m, sd = v
            x = x0 + si * bw
            h = ph * max(0.0, min(1.0, m))
            out.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="{colors[si]}"/>')
            if sd > 0:
                yl, yh = top + ph * (1 - max(0, m - sd)), top + ph * (1 - min(1, m + sd))
                xc = x + (bw - 2) / 2
                out.append(f'<line x1="{xc:.1f}" x2="{xc:.1f}" y1="{yl:.1f}" y2="{yh:.1f}" stroke="black"/>')
        lx, ly = left + ri * gw + gw / 2, H_ - bottom + 14
        out.append(f'<text transform="translate({lx:.1f},{ly:.1f}) rotate(30)" text-anchor="start">{row}</text>')
    for si, (key, label) in enumerate(series):
        out.append(f'<rect x="{left + 10 + si * 150}" y="26" width="10" height="10" fill="{colors[si]}"/>')
        out.append(f'<text x="{left + 24 + si * 150}" y="35">{label}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def svg_ratio(path, results, ratios):
    """Spanish instruction F1 and Spanish share against the chat-vector ratio (0 = CP)."""
    pts = [(0.0, "CP")] + [(r, "CP + CV" if r == 1.0 else f"CP + {r} CV") for r in ratios]
    W_, H_, left, top, ph, pw = 520, 340, 60, 40, 240, 420
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W_}" height="{H_}" fill="white"/>',
           f'<text x="{W_ / 2}" y="18" text-anchor="middle" font-size="14">Chat-vector ratio (mean ± std over seeds)</text>']
    for i in range(0, 11, 2):
        y = top + ph * (1 - i / 10)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{i / 10:.1f}</text>')
    for r, _ in pts:
        x = left + pw * r
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{r:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 34}" text-anchor="middle">ratio</text>')
    for ci, (key, label, color) in enumerate([("es_f1", "es instruction F1", "#3b6fb6"),
                                             ("es_share", "share of answer in Spanish", "#e08a2c"),
                                             ("es_eos", "es EOS rate", "#4a9a4a")]):
        prev = None
        for r, row in pts:
            v = agg(results, row, key)
            if v is None:
                continue
            x, y = left + pw * r, top + ph * (1 - v[0])
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
            if v[1] > 0:
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph * (1 - v[0] + v[1]):.1f}" '
                           f'y2="{top + ph * (1 - v[0] - v[1]):.1f}" stroke="{color}"/>')
            if prev:
                out.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="{color}"/>')
            prev = (x, y)
        out.append(f'<rect x="{left + 10 + ci * 150}" y="26" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + 24 + ci * 150}" y="35">{label}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def write_report(W, results, S, seeds, total):
    rep = [f"# Chat-vector reproduction: results ({len(seeds)} seed(s): {seeds}; {total / 60:.1f} min)\n",
           "Mean ± sample standard deviation over seeds.  es/en: held-out Spanish/English tasks.\n",
           "## Table 1 analogue\n", table(results, TABLE1),
           "\n## Table 7 analogue (extended vocabulary, embedding policies)\n", table(results, TABLE7)]
    ratio_rows = [f"CP + {r} CV" for r in S["ratios"] if r != 1.0]
    if ratio_rows:
        rep += ["\n## Ratio sweep\n", table(results, ["CP"] + ratio_rows + ["CP + CV"])]
    types = ["repeat", "first_word", "last_word", "continue"]
    rep.append("\n## Spanish instruction F1 by task type\n")
    rep.append("| model | " + " | ".join(types) + " |\n|---|" + "---:|" * len(types))
    for row in TABLE1 + TABLE7:
        if row not in results:
            continue
        cells = []
        for t in types:
            v = agg(results, row, f"es/{t}_f1")
            cells.append("–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}")
        rep.append(f"| {row} | " + " | ".join(cells) + " |")
    open(os.path.join(W, "report.md"), "w").write("\n".join(rep))
    svg_bars(os.path.join(W, "spanish_tasks.svg"), "Held-out Spanish instructions (mean ± std over seeds)",
             [r for r in TABLE1 + TABLE7 if r in results and r != "base"],
             [("es_f1", "instruction F1"), ("es_eos", "EOS within budget"), ("es_share", "share in Spanish")], results)
    svg_ratio(os.path.join(W, "ratio.svg"), results, S["ratios"])


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The chat-vector experiment (Huang et al., ACL 2024) in miniature, end to end.

    experiments/run_experiment.py --out WORK [--scale full|ci] [--seeds 0 1 2] [--table7]

Rebuilds everything from ../shared: data (experiments/build_data.py), the base
model (stories260K converted), and per seed the models of ARMS below:
  chat[lr]  = base fine-tuned on English chat data, faithful template
              ([INST] ... [/INST], the tokenizer's own </s> ends the turn, no
              token added), at each chat-SFT strength of STRENGTHS (the size
              of the chat vector is the variable)
  chat_end  = the first run's chat model (User:/Assistant: + a new <|end|>)
  cp        = base continually pre-trained on Spanish verses
  cp_ft     = cp fine-tuned on the Spanish chat data (faithful template)
  cp_ft_end = the same with the first run's template
  merges    = every row of ARMS: target + r * (chat - base) with the flags
              of its entry (ratio sweep, embeddings skipped, attention/MLP
              only, ...), for every strength
  --table7: also the extended-vocabulary arms of the first run (CPx).
Each model is evaluated (chatvec eval) on held-out English and Spanish
instructions and held-out verses, and diagnosed (experiments/diagnose.py:
end-of-turn probability mass, row norms, bits/byte with it masked, greedy
answers with it masked; float64 reference forward).  Writes
WORK/results.json, WORK/report.md (tables, mean +- sample std over seeds) and
WORK/*.svg.  The metrics are fixed in docs/reproduction.md and
src/eval/eval.h, written before the runs.
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
    # steps, batch, seq_len per phase; extension size; eval sizes; chat-SFT strengths (label, lr, steps), the
    # first is the first run's and the one the Table-1 rows use
    "full": dict(chat_steps=200, cp_steps=150, ft_steps=100, batch=16, cp_seq=128, chat_seq=128, extend=128,
                 lr=2e-3, cp_lr=1e-3, warmup=15, n_eval=15, n_dialogue=10, heldout_lines=150, max_new=40,
                 n_instr=1500, diag_lines=60, diag_tasks=5,
                 strengths=[("lr 2e-3", 2e-3, 200), ("lr 5e-4", 5e-4, 200), ("lr 1e-4", 1e-4, 200)],
                 sweep=[0.25, 0.5, 0.75, 1.0, 1.25], size_ratios=[0.5, 1.0]),
    "ci": dict(chat_steps=4, cp_steps=4, ft_steps=4, batch=4, cp_seq=64, chat_seq=96, extend=16,
               lr=2e-3, cp_lr=1e-3, warmup=2, n_eval=2, n_dialogue=1, heldout_lines=10, max_new=16,
               n_instr=60, diag_lines=10, diag_tasks=1,
               strengths=[("lr 2e-3", 2e-3, 4), ("lr 1e-4", 1e-4, 4)],
               sweep=[0.5, 1.0, 1.25], size_ratios=[0.5, 1.0]),
}

# Chat families: the template, the train flags, the end-of-turn token.
FAMILIES = {
    "inst": dict(template="chat_template_inst.jinja", flags=["--eos-token", "</s>"], eot=["</s>"]),
    "end": dict(template="chat_template.jinja", flags=["--add-special", "<|end|>", "--eos-token", "<|end|>"],
                eot=["<|end|>"]),
}


def arms(S, table7):
    """Every evaluated row, as data.  A model row: {"row", "model"}; a merge
    row: {"row", "merge": {"target", "chat", "ratio", "flags"}}.  "group"
    places the row in the report, "family" says which end-of-turn token the
    diagnosis follows, "size"/"ratio" place it in the plots, "greedy" asks for
    the EOT-masked greedy answers.  New operations are new entries here."""
    main = S["strengths"][0][0]
    out = [
        dict(row="base", model="base", template="inst", family="inst", group="t1"),
        dict(row="chat (English SFT)", model=f"chat[{main}]", family="inst", group="t1", size=main, greedy=True),
        dict(row="CP", model="cp", template="inst", family="inst", group="t1", ratio=0.0),
    ]
    for r in S["size_ratios"]:
        out.append(dict(row=cv_row("CP", r), merge=dict(target="cp", chat=f"chat[{main}]", ratio=r), family="inst",
                        group="t1", size=main, ratio=r, greedy=True))
    out += [
        dict(row="CP→FT", model="cp_ft", family="inst", group="t1", greedy=True),
        dict(row="CP→FT + CV", merge=dict(target="cp_ft", chat=f"chat[{main}]", ratio=1.0), family="inst", group="t1",
             size=main, ratio=1.0, target="cp_ft", greedy=True),
    ]
    # The chat vector's size: every other strength, its chat model and merges.
    for lab, _, _ in S["strengths"][1:]:
        out.append(dict(row=f"chat (English SFT) [{lab}]", model=f"chat[{lab}]", family="inst", group="size", size=lab,
                        greedy=True))
        for r in S["size_ratios"]:
            out.append(dict(row=cv_row("CP", r, lab), merge=dict(target="cp", chat=f"chat[{lab}]", ratio=r),
                            family="inst", group="size", size=lab, ratio=r, greedy=True))
        out.append(dict(row=f"CP→FT + CV [{lab}]", merge=dict(target="cp_ft", chat=f"chat[{lab}]", ratio=1.0),
                        family="inst", group="size", size=lab, ratio=1.0, target="cp_ft", greedy=True))
    # The ratio sweep (0 is CP itself; 0.5 and 1 are Table-1 rows).
    for r in S["sweep"]:
        if r not in S["size_ratios"]:
            out.append(dict(row=cv_row("CP", r), merge=dict(target="cp", chat=f"chat[{main}]", ratio=r),
                            family="inst", group="sweep", size=main, ratio=r))
    # Operations on the faithful arm (the chat vector of the main strength).
    # "{r}" in a flag is the entry's ratio, "{seed}" the seed (DARE's).
    ops = [("embeddings skipped", ["--embeddings", "skip"]),
           ("attention only", ["--include", r"self_attn\."]),
           ("MLP only", ["--include", r"mlp\."]),
           # per-layer schedule: 0 at layer 0 (and the embedding) rising linearly to r at the last layer
           ("schedule 0→r by layer", ["--ratio", "0,{r}"]),
           # DARE at density 0.25: drop 75 % of the vector's elements, rescale the rest by 4
           ("DARE 0.25", ["--dare", "0.75", "--seed", "{seed}"])]
    for label, flags in ops:
        for r in (1.0, 0.5):
            out.append(dict(row=cv_row("CP", r, label), merge=dict(target="cp", chat=f"chat[{main}]", ratio=r,
                                                                   flags=flags),
                            family="inst", group="ops", size=main, ratio=r, op=label))
    # The first run's arms: a new <|end|> token (contrast).
    out += [
        dict(row="chat (English SFT) [<|end|>]", model="chat_end", family="end", group="end", greedy=True),
        dict(row="CP [<|end|> template]", model="cp", template="end", family="end", group="end"),
        dict(row="CP + CV [<|end|>]", merge=dict(target="cp", chat="chat_end", ratio=1.0), family="end", group="end",
             ratio=1.0, greedy=True),
        dict(row="CP + 0.5 CV [<|end|>]", merge=dict(target="cp", chat="chat_end", ratio=0.5), family="end",
             group="end", ratio=0.5, greedy=True),
        dict(row="CP→FT [<|end|>]", model="cp_ft_end", family="end", group="end", greedy=True),
        dict(row="CP→FT + CV [<|end|>]", merge=dict(target="cp_ft_end", chat="chat_end", ratio=1.0), family="end",
             group="end", ratio=1.0, greedy=True),
    ]
    if table7:
        out.append(dict(row="CPx", model="cpx", template="end", family="end", group="t7"))
        for policy in ("full", "shared", "align", "skip"):  # auto resolves to shared here
            out.append(dict(row=f"CPx + CV [{policy}]",
                            merge=dict(target="cpx", chat="chat_end", ratio=1.0, flags=["--embeddings", policy]),
                            family="end", group="t7"))
        out += [dict(row="CPx→FT", model="cpx_ft", family="end", group="t7"),
                dict(row="CPx→FT + CV", merge=dict(target="cpx_ft", chat="chat_end", ratio=1.0), family="end",
                     group="t7")]
    return out


def cv_row(target, r, label=None):
    s = f"{target} + CV" if r == 1.0 else f"{target} + {r:g} CV"
    return s + (f" [{label}]" if label else "")


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


def slug(row):
    out = "".join(c if c.isalnum() or c in ".-" else "_" for c in row.replace("→FT", "_ftFT").replace("→", "_to_").replace("+", "p"))
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--chatvec", default=os.environ.get("CHATVEC_BIN", os.path.join(ROOT, "build", "src", "cli", "chatvec")))
    ap.add_argument("--threads", type=int, default=0, help="training threads (0: OpenMP default)")
    ap.add_argument("--table7", action="store_true", help="also the first run's extended-vocabulary arms (CPx)")
    ap.add_argument("--no-diagnose", action="store_true", help="skip experiments/diagnose.py")
    ap.add_argument("--report-only", action="store_true", help="rewrite report.md and the plots from --out's results.json")
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
    ARMS = arms(S, a.table7)
    if a.report_only:
        doc = json.load(open(os.path.join(W, "results.json")))
        write_report(W, doc["results"], S, doc["seeds"], doc.get("total_seconds", 0.0), ARMS)
        return

    log("building data")
    run([sys.executable, os.path.join(HERE, "build_data.py"), data, "--shared", a.shared, "--n-eval", str(S["n_eval"]),
         "--n-eval-dialogue", str(S["n_dialogue"]), "--n-instr", str(S["n_instr"])])
    tasks = os.path.join(data, "tasks.jsonl")
    with open(tasks, "w") as f:
        for lang in ("en", "es"):
            f.write(open(os.path.join(data, f"tasks_{lang}.jsonl")).read())
    diag_held = os.path.join(data, "es_heldout_diag.txt")
    with open(diag_held, "w") as f:
        f.writelines(open(os.path.join(data, "es_heldout.txt")).readlines()[: S["diag_lines"]])

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

    def chat_flags(family):
        return ["--chat-template", os.path.join(data, FAMILIES[family]["template"])] + FAMILIES[family]["flags"]

    def with_template(src, name, family):
        """A view of `src` with a chat template installed (for models that have none)."""
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
        tc["chat_template"] = open(os.path.join(data, FAMILIES[family]["template"])).read()
        json.dump(tc, open(tc_path, "w"), indent=2)
        return out

    def merge(name, target, chat, ratio, flags):
        out = os.path.join(W, name)
        if os.path.exists(out):
            shutil.rmtree(out)
        cmd = [cv, "-q", "merge", "--base", base, "--chat", chat, "--target", target, "-o", out]
        if "--ratio" not in flags:  # an entry's own --ratio (a schedule) replaces the scalar
            cmd += ["--ratio", str(ratio)]
        r = subprocess.run(cmd + list(flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        log(f"eval {tag}: es f1* {s['es'].get('f1_strict', 0):.3f} es eos* {s['es']['eos_strict']:.3f} "
            f"tokens {s['es']['mean_tokens']:.1f} en f1* {s['en'].get('f1_strict', 0):.3f} "
            f"es bpb {r['heldout']['es']['bits_per_byte']:.3f} ({dt:.0f} s)")
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
        for tag, (target, merged) in targets.items():
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
            shutil.rmtree(applied)
        shutil.rmtree(vec)
        return out

    def save(total=None):
        meta = {arm["row"]: {k: v for k, v in arm.items() if k not in ("row", "merge", "model")} for arm in ARMS}
        doc = {"scale": a.scale, "config": S, "seeds": seeds, "arms": meta, "results": results, "checks": checks,
               "timings": timings}
        if total is not None:
            doc["total_seconds"] = total
        tmp = os.path.join(W, "results.json.tmp")
        json.dump(doc, open(tmp, "w"), indent=1, ensure_ascii=False)
        os.replace(tmp, os.path.join(W, "results.json"))

    for seed in seeds:
        log(f"=== seed {seed}")
        sfx = f"_s{seed}"
        models = {"base": base}
        for lab, lr, steps in S["strengths"]:
            models[f"chat[{lab}]"] = train(f"chat_{slug(lab)}{sfx}", base, f"{data}/chat_en.jsonl", steps, seed,
                                           chat_flags("inst") + ["--lr", str(lr), "--seq-len", str(S["chat_seq"])])
        models["chat_end"] = train("chat_end" + sfx, base, f"{data}/chat_en.jsonl", S["chat_steps"], seed,
                                   chat_flags("end") + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])
        models["cp"] = train("cp" + sfx, base, f"{data}/es_cp.txt", S["cp_steps"], seed,
                             ["--lr", str(S["cp_lr"]), "--seq-len", str(S["cp_seq"])])
        models["cp_ft"] = train("cp_ft" + sfx, models["cp"], f"{data}/chat_es.jsonl", S["ft_steps"], seed,
                                chat_flags("inst") + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])
        models["cp_ft_end"] = train("cp_ft_end" + sfx, models["cp"], f"{data}/chat_es.jsonl", S["ft_steps"], seed,
                                    chat_flags("end") + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])
        if a.table7:
            models["cpx"] = train("cpx" + sfx, base, f"{data}/es_cp.txt", S["cp_steps"], seed,
                                  ["--lr", str(S["cp_lr"]), "--seq-len", str(S["cp_seq"]), "--extend-vocab",
                                   str(S["extend"])])
            models["cpx_ft"] = train("cpx_ft" + sfx, models["cpx"], f"{data}/chat_es.jsonl", S["ft_steps"], seed,
                                     chat_flags("end") + ["--lr", str(S["lr"]), "--seq-len", str(S["chat_seq"])])

        evaluated = {}  # row -> model dir
        for arm in ARMS:
            row, tag = arm["row"], slug(arm["row"]) + sfx
            if "model" in arm:
                d = models[arm["model"]]
                if arm.get("template"):
                    d = with_template(d, f"{arm['model']}_tpl_{arm['template']}{sfx}", arm["template"])
                err = None
            else:
                m = arm["merge"]
                flags = [f.replace("{r}", f"{m['ratio']:g}").replace("{seed}", str(seed)) for f in m.get("flags", [])]
                d, err = merge(tag, models[m["target"]], models[m["chat"]], m["ratio"], flags)
            if err:
                results.setdefault(row, {})[str(seed)] = {"error": err}
                log(f"{row}: not produced: {err}")
                continue
            results.setdefault(row, {})[str(seed)] = metrics(evaluate(d, tag))
            evaluated[row] = d
        # The chat vector extracted once (f32, exact) and applied to CP and
        # CP->FT must give what the three-model merges gave, for both families
        # (the <|end|> chat model added a token: its row travels in the vector).
        main = S["strengths"][0][0]
        checks.setdefault("extract_apply_equals_merge", {})[str(seed)] = reuse_check(
            sfx, {"cp": (models["cp"], evaluated["CP + CV"]), "cp_ft": (models["cp_ft"], evaluated["CP→FT + CV"])},
            models[f"chat[{main}]"])
        checks.setdefault("extract_apply_equals_merge_end", {})[str(seed)] = reuse_check(
            sfx + "_end", {"cp": (models["cp"], evaluated["CP + CV [<|end|>]"]),
                           "cp_ft": (models["cp_ft_end"], evaluated["CP→FT + CV [<|end|>]"])}, models["chat_end"])
        if not a.no_diagnose:
            diagnose(W, cv, seed, sfx, S, ARMS, evaluated, models, base, tasks, diag_held, results, checks, timings,
                     a.resume)
        save()

    total = time.time() - t_start
    save(total)
    write_report(W, results, S, seeds, total, ARMS)
    log(f"done in {total / 60:.1f} min; report: {os.path.join(W, 'report.md')}")


def diagnose(W, cv, seed, sfx, S, ARMS, evaluated, models, base, tasks, diag_held, results, checks, timings,
             resume=False):
    """experiments/diagnose.py on every evaluated model of this seed; the
    reference's bits/byte is checked against chatvec's engine on the same
    verses (`chatvec perplexity --lines`)."""
    out = os.path.join(W, "diag", f"diag{sfx}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    jobs = {"base": base, "heldout": diag_held, "lines": S["diag_lines"], "tasks": tasks,
            "greedy_tasks_per_type": S["diag_tasks"], "max_new": S["max_new"], "models": [], "norms": []}
    done = {}
    if resume and os.path.exists(out):
        done = json.load(open(out))
    for arm in ARMS:
        if arm["row"] in evaluated and arm["row"] not in done.get("models", {}):
            eot = FAMILIES[arm["family"]]["eot"]
            jobs["models"].append({"tag": arm["row"], "dir": evaluated[arm["row"]], "eot": eot,
                                   "greedy": bool(arm.get("greedy"))})
    for lab, _, _ in S["strengths"]:
        jobs["norms"].append({"tag": f"chat[{lab}]", "dir": models[f"chat[{lab}]"]})
    for name in ("chat_end", "cp", "cp_ft", "cp_ft_end"):
        jobs["norms"].append({"tag": name, "dir": models[name]})
    jf = os.path.join(W, "diag", f"jobs{sfx}.json")
    json.dump(jobs, open(jf, "w"), indent=1)
    _, dt = run([sys.executable, os.path.join(HERE, "diagnose.py"), jf, out])
    timings["diagnose" + sfx] = dt
    D = json.load(open(out))
    if done:  # --resume: the models diagnosed before, and the new ones
        D["models"] = {**done["models"], **D["models"]}
        json.dump(D, open(out, "w"), indent=1, ensure_ascii=False)
    nbytes = sum(len(l.rstrip("\n").encode("utf-8")) for l in open(diag_held, encoding="utf-8"))
    worst = 0.0
    per = {}
    D["models"] = {row: d for row, d in D["models"].items() if row in evaluated}
    for row, d in D["models"].items():
        r, _ = run([cv, "-q", "perplexity", evaluated[row], "--file", diag_held, "--lines"])
        eng = json.loads(r.stdout)["nll"] / math.log(2) / nbytes
        per[row] = {"reference": d["bpb_ref"], "engine": eng}
        worst = max(worst, abs(eng - d["bpb_ref"]) / d["bpb_ref"])
        m = results[row][str(seed)]
        m["diag"] = d
        for k in ("eot_mass", "bpb_ref", "bpb_masked"):
            if k in d:
                m[k] = d[k]
        for k, v in d.get("eot_mass_by_position", {}).items():
            m[f"eot_mass_{k}"] = v
        if d.get("eot_row_norm"):
            m["eot_row_norm"] = d["eot_row_norm"][0]
            m["other_row_norm_mean"] = d["other_row_norm"]["mean"]
        if "greedy_masked" in d:
            m["masked_f1"] = d["greedy_masked"]["f1"]
            m["masked_prefix_f1"] = d["greedy_masked"]["prefix_f1"]
            m["masked_valid"] = d["greedy_masked"]["valid"]
    checks.setdefault("reference_vs_engine_bpb", {})[str(seed)] = {"max_relative_difference": worst, "models": per}
    for arm in ARMS:
        row = arm["row"]
        if row not in evaluated:
            continue
        m = results[row][str(seed)]
        chat = arm.get("merge", {}).get("chat") or (arm["model"] if arm.get("model", "").startswith("chat") else None)
        if chat and chat in D["norms"]:
            m["cv_rel"] = D["norms"][chat]["non_embedding"]
            m["cv_rel_all"] = D["norms"][chat]["all"]
    checks.setdefault("relative_norms", {})[str(seed)] = D["norms"]
    log(f"diagnosed {len(D['models'])} models in {dt:.0f} s; reference vs engine bits/byte: max rel. diff {worst:.1e}")


def metrics(r):
    s, h = r["summary"], r["heldout"]
    out = {}
    for lang in ("es", "en"):
        # The first run's definitions
        out[f"{lang}_exact"] = s[lang].get("exact", 0.0)
        out[f"{lang}_f1"] = s[lang].get("f1", 0.0)
        out[f"{lang}_eos"] = s[lang]["eos"]
        out[f"{lang}_share"] = s[lang]["lang_share"]
        out[f"{lang}_bpb"] = h[lang]["bits_per_byte"]
        out[f"{lang}_tokens"] = s[lang]["mean_tokens"]  # mean answer length
        # The corrections (docs/reproduction.md, "Metrics (fixed before the second run)")
        out[f"{lang}_valid"] = s[lang]["valid"]
        out[f"{lang}_exact_s"] = s[lang].get("exact_strict", 0.0)
        out[f"{lang}_f1_s"] = s[lang].get("f1_strict", 0.0)
        out[f"{lang}_eos_s"] = s[lang]["eos_strict"]
        out[f"{lang}_share_s"] = s[lang]["lang_share_strict"]
    for k, v in r["by_type"].items():
        if "f1" in v:
            out[f"{k}_f1"] = v["f1"]
            out[f"{k}_f1_s"] = v["f1_strict"]
    return out


COLUMNS = [("cv_rel", "‖CV‖/‖base‖"), ("es_f1_s", "es F1*"), ("es_exact_s", "es exact*"), ("es_eos_s", "es EOS*"),
           ("es_tokens", "es answer tokens"), ("es_share_s", "es share*"), ("es_valid", "es valid"),
           ("en_f1_s", "en F1*"), ("en_eos_s", "en EOS*"), ("en_tokens", "en answer tokens"),
           ("es_bpb", "es bits/byte"), ("en_bpb", "en bits/byte")]
OLD_COLUMNS = [("es_exact", "es exact"), ("es_f1", "es F1"), ("es_eos", "es EOS"), ("es_share", "es share"),
               ("en_exact", "en exact"), ("en_f1", "en F1"), ("en_eos", "en EOS"), ("en_share", "en share"),
               ("es_bpb", "es bits/byte"), ("en_bpb", "en bits/byte"), ("es_tokens", "es answer tokens")]
DIAG_COLUMNS = [("eot_mass", "EOT mass"), ("eot_mass_1-4", "pos 1–4"), ("eot_mass_5-16", "5–16"),
                ("eot_mass_17-32", "17–32"), ("eot_mass_33+", "33+"), ("eot_row_norm", "EOT row norm"),
                ("other_row_norm_mean", "other rows (mean)"), ("bpb_ref", "es bits/byte (ref.)"),
                ("bpb_masked", "es bits/byte, EOT masked"), ("masked_f1", "greedy masked F1"),
                ("masked_prefix_f1", "prefix F1"), ("masked_valid", "valid")]
GROUPS = [("t1", "Table 1 analogue, faithful arm ([INST] template, `</s>` ends the turn, no token added; chat SFT "
                 "at the first run's strength)"),
          ("size", "The chat vector's size (chat SFT strength)"),
          ("sweep", "Ratio sweep (faithful arm)"),
          ("ops", "Operations on the faithful arm's chat vector"),
          ("end", "Contrast: the first run's template with a new `<|end|>` token"),
          ("t7", "Table 7 analogue (extended vocabulary, `<|end|>` template)")]


def agg(results, row, key):
    vals = [m[key] for m in results.get(row, {}).values() if "error" not in m and m.get(key) is not None]
    if not vals:
        return None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(v, key):
    if v is None:
        return "–"
    if key.startswith("cv_rel"):
        return f"{100 * v[0]:.1f} % ± {100 * v[1]:.1f}"
    return f"{v[0]:.3f} ± {v[1]:.3f}"


def table(results, rows, columns):
    head = "| model | " + " | ".join(c[1] for c in columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    lines = []
    for row in rows:
        if row not in results:
            continue
        errs = [m["error"] for m in results[row].values() if "error" in m]
        if errs and len(errs) == len(results[row]):
            lines.append(f"| {row} | not produced: `{errs[0][:120]}` |" + " |" * (len(columns) - 1))
            continue
        lines.append(f"| {row} | " + " | ".join(fmt(agg(results, row, k), k) for k, _ in columns) + " |")
    return head + "\n".join(lines) + "\n"


def svg_bars(path, title, rows, series, results):
    """Grouped bars (mean) with error bars (std) per row, hand-written SVG."""
    W_, H_ = 860, 380
    left, bottom, top = 60, 130, 40
    n, k = len(rows), len(series)
    gw = (W_ - left - 20) / max(1, n)
    bw = gw * 0.8 / max(1, k)
    colors = ["#3b6fb6", "#e08a2c", "#4a9a4a", "#b04a4a"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W_}" height="{H_}" fill="white"/>',
           f'<text x="{W_ / 2}" y="18" text-anchor="middle" font-size="14">{esc(title)}</text>']
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
        out.append(f'<text transform="translate({lx:.1f},{ly:.1f}) rotate(30)" text-anchor="start">{esc(row)}</text>')
    for si, (key, label) in enumerate(series):
        out.append(f'<rect x="{left + 10 + si * 150}" y="26" width="10" height="10" fill="{colors[si]}"/>')
        out.append(f'<text x="{left + 24 + si * 150}" y="35">{esc(label)}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_lines(path, title, xlabel, xfmt, left_series, right_series, right_label):
    """Lines with error bars: left axis 0..max of the left series (F1), right
    axis the range of the right series (bits/byte).  A series: (label, color,
    [(x, mean, std)])."""
    W_, H_, left, top, ph, pw = 640, 360, 60, 48, 240, 500
    xs = sorted({p[0] for _, _, pts in left_series + right_series for p in pts}) or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    lmax = max([p[1] + p[2] for _, _, pts in left_series for p in pts] + [0.05])
    lmax = math.ceil(lmax * 20) / 20
    rv = [p[1] + s * p[2] for _, _, pts in right_series for p in pts for s in (-1, 1)] or [0.0, 1.0]
    r0, r1 = math.floor(min(rv) * 2) / 2, math.ceil(max(rv) * 2) / 2
    if r1 == r0:
        r1 = r0 + 0.5

    def X(x):
        return left + pw * (x - x0) / (x1 - x0)

    def YL(v):
        return top + ph * (1 - v / lmax)

    def YR(v):
        return top + ph * (1 - (v - r0) / (r1 - r0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_ + 40}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W_}" height="{H_ + 40}" fill="white"/>',
           f'<text x="{W_ / 2}" y="16" text-anchor="middle" font-size="14">{esc(title)}</text>']
    for i in range(6):
        v = lmax * i / 5
        y = YL(v)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        rvv = r0 + (r1 - r0) * i / 5
        out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" text-anchor="start" fill="#b04a4a">{rvv:.2f}</text>')
    for x in xs:
        out.append(f'<text x="{X(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{xfmt(x)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 34}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">Spanish instruction F1*</text>')
    out.append(f'<text transform="translate({W_ - 6},{top + ph / 2}) rotate(90)" text-anchor="middle" fill="#b04a4a">'
               f'{esc(right_label)}</text>')
    legend = 0
    for series, Y, dash in ((left_series, YL, ""), (right_series, YR, ' stroke-dasharray="5,3"')):
        for label, color, pts in series:
            prev = None
            for x, m, sd in sorted(pts):
                out.append(f'<circle cx="{X(x):.1f}" cy="{Y(m):.1f}" r="3" fill="{color}"/>')
                if sd > 0:
                    out.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{Y(m - sd):.1f}" y2="{Y(m + sd):.1f}" '
                               f'stroke="{color}"/>')
                if prev:
                    out.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]:.1f}" x2="{X(x):.1f}" y2="{Y(m):.1f}" '
                               f'stroke="{color}"{dash}/>')
                prev = (X(x), Y(m))
            lx, ly = left + 10 + (legend % 3) * 170, H_ + 4 + (legend // 3) * 14
            out.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{lx + 20}" y="{ly}">{esc(label)}</text>')
            legend += 1
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def series(results, points, key):
    out = []
    for x, row in points:
        v = agg(results, row, key)
        if v is not None:
            out.append((x, v[0], v[1]))
    return out


def write_plots(W, results, S, ARMS):
    main = S["strengths"][0][0]
    rows_of = {}
    for arm in ARMS:
        rows_of.setdefault((arm.get("group"), arm.get("size"), arm.get("ratio"), arm.get("target", "cp"),
                            arm.get("op")), arm["row"])
    # against the ratio (0 = CP)
    pts = [(0.0, "CP")] + sorted((arm["ratio"], arm["row"]) for arm in ARMS
                                 if arm.get("size") == main and arm.get("ratio") and "merge" in arm
                                 and arm["merge"]["target"] == "cp" and not arm.get("op"))
    svg_lines(os.path.join(W, "ratio.svg"), "CP + r·CV, faithful arm (mean ± std over seeds)", "ratio r",
              lambda x: f"{x:g}",
              [("es F1* (CP + r CV)", "#3b6fb6", series(results, pts, "es_f1_s")),
               ("es F1* CP→FT (r = 0)", "#4a9a4a", series(results, [(0.0, "CP→FT")], "es_f1_s"))],
              [("es bits/byte", "#b04a4a", series(results, pts, "es_bpb"))], "held-out Spanish bits/byte")
    # against the chat vector's size
    by_size = {}
    for arm in ARMS:
        if "merge" in arm and arm.get("size") and not arm.get("op") and arm.get("ratio") in S["size_ratios"]:
            by_size.setdefault((arm["merge"]["target"], arm["ratio"]), []).append((arm["size"], arm["row"]))

    def size_pts(key, target, ratio):
        out = []
        for lab, row in by_size.get((target, ratio), []):
            x = agg(results, row, "cv_rel")
            v = agg(results, row, key)
            if x is not None and v is not None:
                out.append((100 * x[0], v[0], v[1]))
        return out

    colors = ["#3b6fb6", "#7fa6d9", "#4a9a4a"]
    left_s, right_s = [], []
    for ci, (target, ratio, label) in enumerate([("cp", 1.0, "CP + CV"), ("cp", 0.5, "CP + 0.5 CV"),
                                                 ("cp_ft", 1.0, "CP→FT + CV")]):
        left_s.append((f"es F1* {label}", colors[ci], size_pts("es_f1_s", target, ratio)))
        right_s.append((f"bits/byte {label}", ["#b04a4a", "#d98b8b", "#8a5a2a"][ci], size_pts("es_bpb", target, ratio)))
    svg_lines(os.path.join(W, "size.svg"), "Against the chat vector's size (mean ± std over seeds)",
              "‖chat − base‖ / ‖base‖ (non-embedding weights, %)", lambda x: f"{x:.1f}", left_s, right_s,
              "held-out Spanish bits/byte")
    t1 = [arm["row"] for arm in ARMS if arm.get("group") == "t1" and arm["row"] != "base"]
    svg_bars(os.path.join(W, "spanish_tasks.svg"), "Held-out Spanish instructions, faithful arm (mean ± std over seeds)",
             [r for r in t1 if r in results],
             [("es_f1_s", "instruction F1*"), ("es_eos_s", "EOS* (valid answer)"), ("es_share_s", "share* in Spanish")],
             results)


def write_report(W, results, S, seeds, total, ARMS):
    rep = [f"# Chat-vector reproduction: results ({len(seeds)} seed(s): {seeds}; {total / 60:.1f} min)\n",
           "Mean ± sample standard deviation over seeds.  es/en: held-out Spanish/English tasks.  Starred columns "
           "are the corrected metrics (an empty answer or one with U+FFFD is a failure); ‖CV‖/‖base‖ over the "
           "non-embedding weights.\n",
           "Chat-SFT strengths: " + ", ".join(f"{lab} = lr {lr:g} × {st} steps" for lab, lr, st in S["strengths"])
           + f" (the unlabelled rows use {S['strengths'][0][0]}).\n"]
    for g, title in GROUPS:
        rows = [arm["row"] for arm in ARMS if arm.get("group") == g]
        if g == "sweep":
            rows = ["CP"] + sorted(
                (arm["row"] for arm in ARMS if arm.get("size") == S["strengths"][0][0] and arm.get("ratio")
                 and "merge" in arm and arm["merge"]["target"] == "cp" and not arm.get("op")),
                key=lambda r: next(x["ratio"] for x in ARMS if x["row"] == r))
        elif g in ("size", "ops"):
            rows = ["CP", "CP + CV", "CP + 0.5 CV", "CP→FT", "CP→FT + CV"] + rows
        if not any(r in results for r in rows):
            continue
        rep += [f"\n## {title}\n", table(results, rows, COLUMNS)]
    rep.append("\n## Diagnosis (float64 reference forward, first "
               f"{S['diag_lines']} held-out Spanish verses; greedy: {4 * S['diag_tasks']} Spanish tasks, EOS masked)\n")
    rep.append(table(results, [arm["row"] for arm in ARMS], DIAG_COLUMNS))
    rep.append("\n## The first run's columns (for comparison)\n")
    rep.append(table(results, [arm["row"] for arm in ARMS], OLD_COLUMNS))
    types = ["repeat", "first_word", "last_word", "continue"]
    rep.append("\n## Spanish instruction F1* by task type\n")
    rep.append("| model | " + " | ".join(types) + " |\n|---|" + "---:|" * len(types))
    for arm in ARMS:
        row = arm["row"]
        if row not in results:
            continue
        cells = [fmt(agg(results, row, f"es/{t}_f1_s"), "") for t in types]
        rep.append(f"| {row} | " + " | ".join(cells) + " |")
    open(os.path.join(W, "report.md"), "w").write("\n".join(rep) + "\n")
    write_plots(W, results, S, ARMS)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Diagnosis of the chat-vector experiment's models (docs/reproduction.md,
"Metrics (fixed before the second run)").

    diagnose.py JOBS.json OUT.json

JOBS.json: {"base": DIR, "heldout": FILE, "lines": N, "tasks": FILE,
            "greedy_tasks_per_type": K, "max_new": M,
            "models": [{"tag", "dir", "eot": [pieces], "greedy": bool}],
            "norms": [{"tag", "dir"}]}

For every model, with the project's independent float64 reference forward
(tests/engine/reference_llama.py, not chatvec's engine) and libsentencepiece
for tokens, on the first N held-out verses (each BOS + verse, as `chatvec
eval` scores them):
  eot_mass          mean over predicted positions of p(end-of-turn token)
                    (for every id in "eot"), and by position of the predicted
                    token: 1-4, 5-16, 17-32, 33+ ("eot": the token's pieces; one
                    the model's tokenizer does not have is left out)
  eot_row_norm      norm of the token's embedding row (tied: also the LM
                    head's), against the mean / median / max of the others
  bpb_ref           bits/byte (the same quantity as chatvec eval's)
  bpb_masked        bits/byte with the end-of-turn logits removed and the
                    softmax renormalised
  greedy (when "greedy"): greedy answers through the model's chat template to
                    the first K Spanish tasks of each checkable type, at most
                    M new tokens, every EOS id of the model masked: F1, prefix
                    F1 (the first len(expected) words), valid share, answers.
"norms": ||dir - base|| / ||base|| over the non-embedding weights and over
all weights (embedding rows the base has); with a "cp" entry, also the
cosine between each dir's delta and CP's (non-embedding weights).
"""
import json
import math
import os
import re
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "engine"))
import reference_llama as ref  # noqa: E402

import sentencepiece  # noqa: E402

BUCKETS = [(1, 4), (5, 16), (17, 32), (33, 10 ** 9)]
WORD = re.compile(r"[^\W_]+", re.UNICODE)
EMBED = ("model.embed_tokens.weight", "lm_head.weight")


def words(text):
    return [w.lower() for w in WORD.findall(text)]


def bag_f1(ans, exp):
    if not ans or not exp:
        return 0.0
    from collections import Counter
    common = sum((Counter(ans) & Counter(exp)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ans), common / len(exp)
    return 2 * p * r / (p + r)


class Tok:
    """libsentencepiece, with <s>, </s>, <unk> in text split out as Hugging
    Face's LlamaTokenizer does (the faithful template writes them)."""

    def __init__(self, model_dir):
        self.sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
        self.specials = sorted(((self.sp.id_to_piece(i), i) for i in range(self.sp.get_piece_size())
                                if self.sp.is_control(i) or self.sp.is_unknown(i)), key=lambda x: -len(x[0]))

    def encode(self, text):
        ids, start, i = [], 0, 0
        while i < len(text):
            hit = next(((p, k) for p, k in self.specials if text.startswith(p, i)), None)
            if hit is None:
                i += 1
                continue
            if i > start:
                ids += self.sp.encode(text[start:i])
            ids.append(hit[1])
            i += len(hit[0])
            start = i
        if start < len(text):
            ids += self.sp.encode(text[start:])
        return ids

    def decode(self, ids):
        return self.sp.decode(ids)


def render(model_dir, messages):
    """The chat templates of this experiment, rendered in Python: they are the
    two fixed strings of build_data.py, recognised by content (a template
    other than these is an error, not a guess)."""
    tc = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    t = tc.get("chat_template", "")
    if "[INST]" in t:
        out = ""
        for m in messages:
            if m["role"] == "user":
                out += tc.get("bos_token", "<s>") + "[INST] " + m["content"] + " [/INST]"
            else:
                out += " " + m["content"] + " " + tc.get("eos_token", "</s>")
        return out
    if "<|end|>" in t:
        out = ""
        for m in messages:
            out += ("User: " if m["role"] == "user" else "Assistant: ") + m["content"]
            out += "\n" if m["role"] == "user" else "<|end|>\n"
        return out + "Assistant:"
    raise SystemExit(f"{model_dir}: chat template not one of the experiment's two")


def eos_ids(model_dir):
    ids = set()
    for f in ("config.json", "generation_config.json"):
        p = os.path.join(model_dir, f)
        if os.path.exists(p):
            v = json.load(open(p)).get("eos_token_id")
            if isinstance(v, int):
                ids.add(v)
            elif isinstance(v, list):
                ids.update(int(x) for x in v)
    return sorted(ids)


def diagnose_model(job, verses, tasks, J):
    cfg, w = ref.load(job["dir"])
    tok = Tok(job["dir"])
    V = cfg["vocab_size"]
    eot = []
    for p in job["eot"]:
        i = p if isinstance(p, int) else tok.sp.piece_to_id(p)
        if i < V and (isinstance(p, int) or tok.sp.id_to_piece(i) == p):
            eot.append(i)
    out = {"eot": eot}
    E = w["model.embed_tokens.weight"]
    norms = E.norm(dim=1)
    if eot:
        others = torch.ones(V, dtype=torch.bool)
        others[eot] = False
        o = norms[others]
        out["eot_row_norm"] = [norms[i].item() for i in eot]
        out["other_row_norm"] = {"mean": o.mean().item(), "median": o.median().item(), "max": o.max().item()}
        out["eot_row_norm_rank"] = [int((norms > norms[i]).sum().item()) + 1 for i in eot]
    mass_all, mass_b = [], {b: [] for b in BUCKETS}
    nll, nll_m, nbytes = 0.0, 0.0, 0
    with torch.no_grad():
        for line in verses:
            ids = [tok.sp.bos_id()] + tok.sp.encode(line)
            ids = ids[: cfg.get("max_position_embeddings", 512)]
            if len(ids) < 2:
                continue
            logits = ref.forward(cfg, w, ids)[:-1]
            lp = torch.log_softmax(logits, -1)
            tgt = torch.tensor(ids[1:])
            nll -= lp[torch.arange(len(tgt)), tgt].sum().item()
            nbytes += len(line.encode("utf-8"))
            if eot:
                p_eot = lp[:, eot].exp().sum(-1)
                masked = logits.clone()
                masked[:, eot] = float("-inf")
                lpm = torch.log_softmax(masked, -1)
                nll_m -= lpm[torch.arange(len(tgt)), tgt].sum().item()
                for pos, p in enumerate(p_eot.tolist(), start=1):
                    mass_all.append(p)
                    for b in BUCKETS:
                        if b[0] <= pos <= b[1]:
                            mass_b[b].append(p)
    out["bpb_ref"] = nll / math.log(2) / nbytes
    if eot:
        out["bpb_masked"] = nll_m / math.log(2) / nbytes
        out["eot_mass"] = statistics.mean(mass_all)
        out["eot_mass_by_position"] = {f"{a}-{b}" if b < 10 ** 9 else f"{a}+": (statistics.mean(v) if v else None)
                                       for (a, b), v in mass_b.items()}
    if job.get("greedy"):
        mask = sorted(set(eos_ids(job["dir"])) | set(eot))
        mask = [i for i in mask if i < V]
        answers, f1s, pf1s, valid = [], [], [], []
        with torch.no_grad():
            for t in tasks:
                ids = tok.encode(render(job["dir"], t["messages"]))
                gen = []
                for _ in range(J["max_new"]):
                    lg = ref.forward(cfg, w, ids + gen)[-1]
                    lg[mask] = float("-inf")
                    gen.append(int(lg.argmax().item()))
                ans = tok.decode(gen)
                exp = words(t["expected"])
                aw = words(ans)
                f1s.append(bag_f1(aw, exp))
                pf1s.append(bag_f1(aw[: len(exp)], exp))
                valid.append(1.0 if ans.strip() and "\ufffd" not in ans else 0.0)
                answers.append({"id": t["id"], "answer": ans, "expected": t["expected"]})
        out["greedy_masked"] = {"n": len(tasks), "f1": statistics.mean(f1s), "prefix_f1": statistics.mean(pf1s),
                                "valid": statistics.mean(valid), "masked_ids": mask, "answers": answers}
    return out


def rel_norms(base_dir, model_dir):
    _, b = ref.load(base_dir)
    _, m = ref.load(model_dir)
    num = {"non_embedding": 0.0, "all": 0.0}
    den = {"non_embedding": 0.0, "all": 0.0}
    for name, bt in b.items():
        if name not in m:
            continue
        mt = m[name]
        if name in EMBED:
            mt = mt[: bt.shape[0]]
        if mt.shape != bt.shape:
            continue
        d = ((mt - bt) ** 2).sum().item()
        n = (bt ** 2).sum().item()
        for k in num:
            if k == "non_embedding" and name in EMBED:
                continue
            num[k] += d
            den[k] += n
    return {k: math.sqrt(num[k] / den[k]) for k in num}


def delta_cosine(base_dir, a_dir, b_dir):
    """cos(a - base, b - base) over the non-embedding weights."""
    _, b = ref.load(base_dir)
    _, x = ref.load(a_dir)
    _, y = ref.load(b_dir)
    dot = nx = ny = 0.0
    for name, bt in b.items():
        if name in EMBED or name not in x or name not in y or x[name].shape != bt.shape or y[name].shape != bt.shape:
            continue
        dx, dy = x[name] - bt, y[name] - bt
        dot += (dx * dy).sum().item()
        nx += (dx * dx).sum().item()
        ny += (dy * dy).sum().item()
    return dot / math.sqrt(nx * ny) if nx and ny else None


def main():
    J = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    verses = [l.rstrip("\n") for l in open(J["heldout"], encoding="utf-8")][: J["lines"]]
    per_type = {}
    for line in open(J["tasks"], encoding="utf-8"):
        t = json.loads(line)
        if t["lang"] == "es" and t["type"] != "dialogue":
            per_type.setdefault(t["type"], [])
            if len(per_type[t["type"]]) < J["greedy_tasks_per_type"]:
                per_type[t["type"]].append(t)
    tasks = [t for v in per_type.values() for t in v]
    res = {"models": {}, "norms": {}}
    for job in J["models"]:
        res["models"][job["tag"]] = diagnose_model(job, verses, tasks, J)
    dirs = {job["tag"]: job["dir"] for job in J.get("norms", [])}
    for tag, d in dirs.items():
        res["norms"][tag] = rel_norms(J["base"], d)
        if "cp" in dirs and tag != "cp":
            res["norms"][tag]["cos_with_cp"] = delta_cosine(J["base"], d, dirs["cp"])
    tmp = sys.argv[2] + ".tmp"
    json.dump(res, open(tmp, "w"), indent=1, ensure_ascii=False)
    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent check of the embedding and LM-head rows of a merge with a
vocabulary policy, from the tokenizer files alone.

  reference_vocab.py OUT BASE CHAT TARGET --ratio R --policy full|shared|align|skip [--no-transplant]

For every output row i, with s the output tokenizer's token i (none for
padding rows), the expected row is:
  s added by the chat model (not in the base), transplanted: chat[chat_id(s)]
  skip:    target[i]
  full:    target[i] + R*(chat[i] - base[i])
  shared:  i < min(V_base, V_target): target[i] + R*(chat[chat_id(base_token(i))] - base[i]), else target[i]
  align:   s in the base: target[i] + R*(chat[chat_id(s)] - base[base_id(s)]), else target[i]
computed in float32 with PyTorch and compared bit for bit.  Prints JSON.

With vector operations (--dare/--seed/--keep/--rescale/--clip, as
reference_vecops.py), the combined rows' deltas chat[c] - base[b], in output
row order, are the tensor's vector (docs/operations.md): DARE's element index
is the base row's (b * width + column), pruning's rank and the norms are over
those rows only (clipping against the target's same rows); then
target + float32(R) * delta.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
sys.path.insert(0, os.path.dirname(__file__))
from make_synthetic_model import read_safetensors_dir, from_storage  # noqa: E402
from reference_vecops import operate  # noqa: E402


def vocab(d):
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    ids = {}
    for s, i in tok["model"]["vocab"].items():
        ids[i] = s
    for a in tok["added_tokens"]:
        ids[a["id"]] = a["content"]
    strings = [ids.get(i) for i in range(max(ids) + 1)]
    return strings, {s: i for i, s in enumerate(strings) if s is not None}


def main():
    ap = argparse.ArgumentParser()
    for a in ("out", "base", "chat", "target"):
        ap.add_argument(a)
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--no-transplant", action="store_true")
    ap.add_argument("--dare", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, default=1.0)
    ap.add_argument("--rescale", default="none")
    ap.add_argument("--clip", type=float, default=0.0)
    a = ap.parse_args()
    a.ties = False
    with_ops = a.dare > 0 or a.keep < 1 or a.clip > 0
    models = {k: read_safetensors_dir(getattr(a, k)) for k in ("out", "base", "chat", "target")}
    vocabs = {k: vocab(getattr(a, k)) for k in ("out", "base", "chat", "target")}
    out_s, _ = vocabs["out"]
    base_s, base_id = vocabs["base"]
    chat_s, chat_id = vocabs["chat"]
    tgt_s, _ = vocabs["target"]
    added_by_chat = {s for s in chat_id if s not in base_id}
    counts = {"combined": 0, "target": 0, "chat": 0, "padding": 0, "bad": 0, "rows": 0}
    bad = []
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name not in models["target"]:
            continue
        M = {k: torch.from_numpy(from_storage(models[k][name][2], models[k][name][0], models[k][name][1]).copy()) for k in models}
        n_shared = min(len(base_s), len(tgt_s))
        # Decide each row's expected source (a cheap loop over the strings),
        # then compute the rows of each kind at once and compare bit for bit.
        kinds = []
        copy_src, copy_idx, copy_rows = [], [], []  # rows copied from "chat" or "target"
        comb_rows, comb_t, comb_c, comb_b = [], [], [], []  # rows target[t] + R*(chat[c] - base[b])
        for i in range(M["out"].shape[0]):
            s = out_s[i] if i < len(out_s) else None
            kind = "target"
            if s is not None and s in added_by_chat and not a.no_transplant:
                src, kind = ("chat", chat_id[s]), "chat"
            elif s is None and a.policy != "full":
                src, kind = ("target", i), "padding"
            elif a.policy == "skip":
                src = ("target", i)
            elif a.policy == "full":
                src, kind = (i, i, i), "combined"
            elif a.policy == "shared":
                if i < n_shared:
                    src, kind = (i, chat_id[base_s[i]], i), "combined"
                else:
                    src = ("target", i)
            elif a.policy == "align":
                if s is not None and s in base_id:
                    src, kind = (i, chat_id[s], base_id[s]), "combined"
                else:
                    src = ("target", i)
            else:
                raise SystemExit("unknown policy")
            counts[kind] += 1
            counts["rows"] += 1
            kinds.append(kind)
            if kind == "combined":
                comb_rows.append(i)
                comb_t.append(src[0])
                comb_c.append(src[1])
                comb_b.append(src[2])
            else:
                copy_rows.append(i)
                copy_src.append(src[0])
                copy_idx.append(src[1])
        out = M["out"]
        n_rows = out.shape[0]
        exp = torch.zeros(out.shape, dtype=M["target"].dtype)
        for k in ("chat", "target"):
            sel = [j for j, x in enumerate(copy_src) if x == k]
            if sel:
                rows = torch.tensor([copy_rows[j] for j in sel])
                exp[rows] = M[k][torch.tensor([copy_idx[j] for j in sel])]
        if comb_rows:
            t, c, b = (M[k][torch.tensor(ix)] for k, ix in (("target", comb_t), ("chat", comb_c), ("base", comb_b)))
            if not with_ops:
                exp[torch.tensor(comb_rows)] = (t + a.ratio * (c - b)) if a.ratio != 1.0 else t + (c - b)
            else:
                t32, c32, b32 = (x.to(torch.float32).numpy() for x in (t, c, b))
                width = t32.shape[1]
                elements = (np.asarray(comb_b, dtype=np.uint64)[:, None] * np.uint64(width)
                            + np.arange(width, dtype=np.uint64)[None, :]).reshape(-1)
                d, facts = operate(name, (c32 - b32).astype(np.float32).reshape(-1), t32.reshape(-1), 0, a, elements)
                counts["kept"] = counts.get("kept", 0) + facts.get("kept", 0)
                counts["dropped"] = counts.get("dropped", 0) + facts.get("dropped", 0)
                r32 = np.float32(a.ratio)
                if r32 != np.float32(1.0):
                    d = (r32 * d).astype(np.float32)
                acc = (t32.reshape(-1) + d).astype(np.float32).reshape(t32.shape)
                exp[torch.tensor(comb_rows)] = torch.from_numpy(acc).to(exp.dtype)
        # torch.equal per row: same shape and every element equal (so a NaN
        # anywhere is a mismatch, and -0 equals +0).
        if exp.dtype != out.dtype:
            ok = torch.zeros(n_rows, dtype=torch.bool)
        else:
            ok = (exp == out).reshape(n_rows, -1).all(dim=1)
        nbad = int((~ok).sum())
        counts["bad"] += nbad
        for i in torch.nonzero(~ok).flatten().tolist()[: max(0, 5 - len(bad))]:
            s = out_s[i] if i < len(out_s) else None
            bad.append(f"{name} row {i} ({s!r}, expected {kinds[i]})")
    counts["bad_rows"] = bad
    print(json.dumps(counts))
    return 1 if counts["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())

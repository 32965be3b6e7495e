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
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from make_synthetic_model import read_safetensors_dir, from_storage  # noqa: E402


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
    a = ap.parse_args()
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
        for i in range(M["out"].shape[0]):
            s = out_s[i] if i < len(out_s) else None
            T = lambda: M["target"][i]  # noqa: E731
            comb = lambda t, c, b: (t + a.ratio * (c - b)) if a.ratio != 1.0 else t + (c - b)  # noqa: E731
            kind = "target"
            if s is not None and s in added_by_chat and not a.no_transplant:
                exp, kind = M["chat"][chat_id[s]], "chat"
            elif s is None and a.policy != "full":
                exp, kind = T(), "padding"
            elif a.policy == "skip":
                exp = T()
            elif a.policy == "full":
                exp, kind = comb(M["target"][i], M["chat"][i], M["base"][i]), "combined"
            elif a.policy == "shared":
                if i < n_shared:
                    exp, kind = comb(M["target"][i], M["chat"][chat_id[base_s[i]]], M["base"][i]), "combined"
                else:
                    exp = T()
            elif a.policy == "align":
                if s is not None and s in base_id:
                    exp, kind = comb(M["target"][i], M["chat"][chat_id[s]], M["base"][base_id[s]]), "combined"
                else:
                    exp = T()
            else:
                raise SystemExit("unknown policy")
            counts[kind] += 1
            counts["rows"] += 1
            if not torch.equal(exp, M["out"][i]):
                counts["bad"] += 1
                if len(bad) < 5:
                    bad.append(f"{name} row {i} ({s!r}, expected {kind})")
    counts["bad_rows"] = bad
    print(json.dumps(counts))
    return 1 if counts["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())

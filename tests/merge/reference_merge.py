#!/usr/bin/env python3
"""Independent reference for chatvec's arithmetic: PyTorch (CPU) on numpy-read
safetensors.

  reference_merge.py OUT TARGET --term RATIO PLUS [MINUS] [--term ...] [--no-source] [--dtype bf16|f16|f32]

For every float tensor of OUT, computes in float32 with PyTorch
  acc = TARGET ; acc = acc + RATIO * (PLUS - MINUS) ...   (left to right)
rounds it with tensor.to(dtype) and compares the bytes with OUT's.  Integer
tensors must equal TARGET's bytes.  Prints one JSON line with counts and exits
1 if any tensor differs.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from make_synthetic_model import read_safetensors_dir  # noqa: E402

TORCH = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def as_torch(entry):
    dt, shape, buf = entry
    if dt == "BF16":
        raw = torch.from_numpy(np.frombuffer(buf, dtype=np.int16).copy())
        return raw.view(torch.bfloat16).reshape(shape)
    if dt == "F16":
        return torch.from_numpy(np.frombuffer(buf, dtype=np.float16).copy()).reshape(shape)
    if dt == "F32":
        return torch.from_numpy(np.frombuffer(buf, dtype=np.float32).copy()).reshape(shape)
    return None


def to_bytes(t):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("target")
    ap.add_argument("--term", nargs="+", action="append", default=[])
    ap.add_argument("--no-source", action="store_true")
    args = ap.parse_args()
    out = read_safetensors_dir(args.out)
    target = read_safetensors_dir(args.target)
    terms = []
    for t in args.term:
        ratio = float(t[0])
        plus = read_safetensors_dir(t[1])
        minus = read_safetensors_dir(t[2]) if len(t) > 2 else None
        terms.append((ratio, plus, minus))
    checked = combined = copied = 0
    bad = []
    for name, entry in out.items():
        checked += 1
        odt = entry[0]
        if odt not in TORCH:
            if entry[2] != target[name][2]:
                bad.append(name)
            copied += 1
            continue
        src = None if args.no_source else as_torch(target[name])
        acc = None if src is None else src.to(torch.float32)
        for ratio, plus, minus in terms:
            if name not in plus:
                continue
            d = as_torch(plus[name]).to(torch.float32)
            if minus is not None:
                d = d - as_torch(minus[name]).to(torch.float32)
            if ratio != 1.0:
                d = ratio * d
            acc = d if acc is None else acc + d
        want = to_bytes(acc.to(TORCH[odt]))
        if want != bytes(entry[2]):
            got = as_torch(entry).to(torch.float32)
            exp = acc.to(TORCH[odt]).to(torch.float32)
            nd = int((got != exp).sum())
            bad.append(f"{name}: {nd} elements differ")
        combined += 1
    print(json.dumps({"checked": checked, "combined": combined, "copied": copied, "bad": bad[:10], "bad_count": len(bad)}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

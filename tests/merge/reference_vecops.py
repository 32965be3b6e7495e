#!/usr/bin/env python3
"""Independent reference for chatvec's ratio schedules and vector operations
(docs/operations.md), written from the documentation with numpy alone.

  reference_vecops.py OUT TARGET --vector PLUS [MINUS] [--vector ...]
      [--ratio SPEC ...] [--ratio-for REGEX=VALUE ...]
      [--dare P --seed S] [--keep K --rescale none|l1|l2] [--clip C] [--ties]
      [--layers L]

One --vector per chat vector, in the job's order: PLUS MINUS for merge (chat,
base), PLUS alone for an extracted vector (apply).  One --ratio per vector (a
number or a comma list over the layers; default 1); --ratio-for applies to
every vector.  For every float tensor of OUT, recomputes it in float32 and
rounds it to OUT's dtype, then compares the bytes.  Prints one JSON line
(counts, DARE drop fraction, pruning thresholds) and exits 1 on any
difference.
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from make_synthetic_model import read_safetensors_dir  # noqa: E402

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
BLOCK = 4096  # statistics blocks (docs/operations.md)


def to_f32(entry):
    dt, shape, buf = entry
    if dt == "BF16":
        bits = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if dt == "F16":
        return np.frombuffer(buf, dtype=np.float16).astype(np.float32)
    if dt == "F32":
        return np.frombuffer(buf, dtype=np.float32).copy()
    return None


def from_f32(x, dt):
    """Round float32 to dt, to nearest even (NaN stays NaN)."""
    if dt == "F32":
        return x.astype(np.float32).tobytes()
    if dt == "F16":
        return x.astype(np.float16).tobytes()
    if dt == "BF16":
        b = x.view(np.uint32).astype(np.uint64)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        nan = np.isnan(x)
        r = np.where(nan, (b >> 16) | 0x40, r)
        return r.astype(np.uint16).tobytes()
    raise ValueError(dt)


# --- the DARE random function -------------------------------------------
def mix64(z):
    """SplitMix64's finaliser on a uint64 numpy array (wrapping)."""
    z = z.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_int(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for c in name.encode("utf-8"):
        h ^= c
        h = (h * 0x100000001B3) & M64
    return h


def dare_drop(name, seed, index, n, p, elements=None):
    """The drop mask of n elements; `elements`: their indices in the vector's
    tensor (default 0..n-1; a vocabulary tensor built row by row: the base
    row's, base_row * width + column)."""
    state = mix64_int(fnv1a64(name) ^ mix64_int((seed + index) & M64))
    j = np.arange(n, dtype=np.uint64) if elements is None else np.asarray(elements, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = mix64(np.uint64(state) + (j + np.uint64(1)) * np.uint64(GAMMA))
    threshold = math.ceil(p * 2.0**53)
    return (h >> np.uint64(11)) < np.uint64(threshold)


# --- schedules -------------------------------------------------------------
def layer_of(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else -1


def is_input_embedding(name):
    return name.endswith("embed_tokens.weight") or name.endswith("embed_tokens")


def ratio_for(name, points, overrides, layers):
    for pat, v in overrides:
        if re.search(pat, name):
            return v
    l = layer_of(name)
    if l < 0:
        return points[0] if is_input_embedding(name) else points[-1]
    m = len(points)
    if m == 1 or layers <= 1:
        return points[0]
    t = min(l, layers - 1) * (m - 1) / (layers - 1)
    i = min(int(math.floor(t)), m - 1)
    if i + 1 >= m:
        return points[-1]
    f = t - i
    return points[i] + (points[i + 1] - points[i]) * f


# --- statistics in the documented order --------------------------------------
def ordered_sum(values):
    """Blocks of BLOCK elements; in a block, element i goes to lane i mod 8,
    each lane summed in index order in float64 (np.cumsum is sequential), the
    lanes added as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); then the block sums
    in block order."""
    total = 0.0
    for b in range(0, len(values), BLOCK):
        x = np.asarray(values[b : b + BLOCK], dtype=np.float64)
        pad = (-len(x)) % 8
        if pad:
            x = np.concatenate([x, np.zeros(pad)])  # +0.0 leaves a lane's sum of non-negatives as it is
        lanes = [float(v) for v in np.cumsum(x.reshape(-1, 8), axis=0, dtype=np.float64)[-1]]
        total += ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    return total


def kept_sum(values):
    """The kept elements' sums: the exact sum of the float64 values (|d|, or
    d^2, exact in float64 for a float32 d) rounded once to nearest-even, as
    math.fsum computes it (inf among them: inf; NaN: NaN)."""
    return math.fsum(values.tolist())


def abs_bits(d):
    return d.view(np.uint32) & np.uint32(0x7FFFFFFF)


def operate(name, d, target32, index, a, elements=None):
    """One term's operations; returns d (float32) and facts for the report.
    `elements`: DARE's indices of d's elements (dare_drop)."""
    facts = {}
    n = d.size
    if a.dare > 0:
        drop = dare_drop(name, a.seed, index, n, a.dare, elements)
        scale = np.float32(1.0 / (1.0 - a.dare))
        d = np.where(drop, np.float32(0.0), d * scale).astype(np.float32)
        facts["dropped"] = int(drop.sum())
    prune = a.keep < 1
    rescale = 1.0
    d64 = d.astype(np.float64)
    l1_all = ordered_sum(np.abs(d64))
    l2_all = ordered_sum(d64 * d64)
    l2_kept = l2_all
    if prune:
        rank = min(max(math.ceil(a.keep * n), 1), n)
        bits = abs_bits(d)
        t = np.sort(bits)[n - rank]  # the rank-th largest |d| (as float bits)
        kept = bits >= t
        facts["threshold_bits"] = int(t)
        facts["kept"] = int(kept.sum())
        l1_kept = kept_sum(np.abs(d64[kept]))
        l2_kept = kept_sum(d64[kept] * d64[kept])
        d = np.where(kept, d, np.float32(0.0)).astype(np.float32)
        if a.rescale == "l1" and l1_kept > 0:
            rescale = l1_all / l1_kept
        if a.rescale == "l2" and l2_kept > 0:
            rescale = math.sqrt(l2_all / l2_kept)
    clip = 1.0
    if a.clip > 0:
        t64 = target32.astype(np.float64)
        norm = rescale * math.sqrt(l2_kept)
        limit = a.clip * math.sqrt(ordered_sum(t64 * t64))
        if norm > limit and norm > 0:
            clip = limit / norm
    factor = np.float32(rescale * clip)
    if factor != np.float32(1.0):
        d = (d * factor).astype(np.float32)
    return d, facts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("target")
    ap.add_argument("--vector", nargs="+", action="append", default=[])
    ap.add_argument("--ratio", action="append", default=[])
    ap.add_argument("--ratio-for", action="append", default=[])
    ap.add_argument("--dare", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, default=1.0)
    ap.add_argument("--rescale", default="none")
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--ties", action="store_true")
    a = ap.parse_args()
    out = read_safetensors_dir(a.out)
    target = read_safetensors_dir(a.target)
    vectors = [(read_safetensors_dir(v[0]), read_safetensors_dir(v[1]) if len(v) > 1 else None) for v in a.vector]
    ratios = a.ratio or ["1"] * len(vectors)
    points = [[float(x) for x in r.split(",")] for r in ratios]
    overrides = []
    for o in a.ratio_for:
        pat, v = o.rsplit("=", 1)
        overrides.append((pat, float(v)))
    layers = max([layer_of(n) + 1 for n in target] + [0])
    report = {"checked": 0, "combined": 0, "differ": [], "dropped": 0, "elements": 0, "kept": 0, "ratios": {}}
    for name, (dt, shape, buf) in sorted(out.items()):
        report["checked"] += 1
        t32 = to_f32(target[name])
        if t32 is None:
            if bytes(buf) != bytes(target[name][2]):
                report["differ"].append(name)
            continue
        report["combined"] += 1
        terms = []
        for i, (plus, minus) in enumerate(vectors):
            d = to_f32(plus[name])
            if minus is not None:
                d = (d - to_f32(minus[name])).astype(np.float32)
            d, facts = operate(name, d, t32, i, a)
            report["dropped"] += facts.get("dropped", 0)
            report["kept"] += facts.get("kept", 0)
            r = ratio_for(name, points[i], overrides, layers)
            if i == 0:
                report["ratios"][name] = r
            r32 = np.float32(r)
            if r32 != np.float32(1.0):
                d = (r32 * d).astype(np.float32)
            terms.append(d)
        report["elements"] += t32.size
        acc = t32.copy()
        if not a.ties:
            for d in terms:
                acc = (acc + d).astype(np.float32)
        else:
            total = np.zeros_like(acc)
            for d in terms:
                total = (total + d).astype(np.float32)
            s = np.zeros_like(acc)
            count = np.zeros(acc.shape, dtype=np.int64)
            for d in terms:
                agree = ((total > 0) & (d > 0)) | ((total < 0) & (d < 0))
                s = np.where(agree, (s + d).astype(np.float32), s)
                count += agree
            merged = np.where(count > 0, (s / np.maximum(count, 1).astype(np.float32)).astype(np.float32), np.float32(0))
            acc = (acc + merged).astype(np.float32)
        if from_f32(acc, dt) != bytes(buf):
            got = to_f32((dt, shape, buf))
            bad = int(np.sum(got.view(np.uint32) != np.frombuffer(from_f32(acc, "F32"), dtype=np.uint32)))
            report["differ"].append(f"{name} ({bad} elements)")
    print(json.dumps(report))
    sys.exit(1 if report["differ"] else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Independent check of `chatvec analyze --json` with numpy.

  reference_analyze.py CHATVEC_JSON BASE CHAT [TARGET] [--policy full|shared|align] [--include RE] [--exclude RE]

Reads the safetensors files itself (numpy memory maps, bf16 widened by bit
shifting), and recomputes every figure in float64 as docs/analyze.md defines
them:

  dc = chat - base, dt = target - base (float64, element by element)
  base_sq, chat_sq, target_sq, dot, chat_l1 = sum(b^2), sum(dc^2), sum(dt^2), sum(dc*dt), sum(|dc|)
  chat_nonzero = #(dc != 0); both_nonzero = #(dc != 0 and dt != 0);
  sign_agree = #(both non-zero and sign(dc) == sign(dt))
  top p%: k = ceil(p*n/100) largest |dc| (numpy partition): threshold = the
  k-th largest, l1_share = sum(top)/sum(|dc|), l2_share = sum(top^2)/sum(dc^2)
  layers: sums over the tensors named model.layers.N.*; groups by name;
  per layer, the top p% of all the layer's elements together (|dc| of its
  tensors concatenated, then as above, with the layer's sums)

Vocabulary tensors (embed_tokens, lm_head) are compared on rows paired by
token string from tokenizer.json (by index without tokenizers): a target row
whose token the base and the chat model both have is compared (base row and
chat row of that token); a token the chat model added (not in the base) is
"chat only"; other target rows are "target only".  Without a target: every
base token the chat model has is compared, the chat model's added tokens are
"chat only", base tokens the chat model lacks "base only".

Compares with CHATVEC_JSON (counts and thresholds exactly, sums to a relative
1e-9: numpy sums pairwise, chatvec block by block, each block in 8 lanes, and
the top-fraction masses as count * value for values it counted) and prints a
JSON summary;
exit status 1 on any difference.
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

PCTS = (1, 10, 25)


def open_model(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        p = os.path.join(d, f)
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        mm = np.memmap(p, dtype=np.uint8, mode="r")
        for k, v in header.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            out[k] = (v["dtype"], tuple(v["shape"]), mm[8 + n + b : 8 + n + e])
    return out


def widen(entry, rows=None):
    """float64 array of a tensor (optionally only some rows)."""
    dt, shape, raw = entry
    if dt == "BF16":
        x = raw.view(np.uint16).reshape(shape)
        if rows is not None:
            x = x[rows]
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    np_dt = {"F16": np.float16, "F32": np.float32, "F64": np.float64}[dt]
    x = raw.view(np_dt).reshape(shape)
    if rows is not None:
        x = x[rows]
    return x.astype(np.float64)


def vocab(d):
    p = os.path.join(d, "tokenizer.json")
    if not os.path.exists(p):
        return None
    tok = json.load(open(p))
    ids = {}
    for s, i in tok["model"]["vocab"].items():
        ids[i] = s
    for a in tok.get("added_tokens", []):
        ids[a["id"]] = a["content"]
    return [ids.get(i) for i in range(max(ids) + 1)]


def is_vocab(name):
    return name.endswith("embed_tokens.weight") or name == "lm_head.weight"


def group_of(name):
    if "embed_tokens" in name:
        return "embeddings"
    if name.startswith("lm_head"):
        return "lm_head"
    if "norm" in name:
        return "norms"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "other"


def layer_of(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def row_pairs(base_v, chat_v, target_v, rows_b, rows_c, rows_t, has_target):
    """(compared [(target_row, chat_row, base_row)], chat_only rows, target_only rows, base_only count)"""
    if base_v is None or chat_v is None or (has_target and target_v is None):
        n = rows_t if has_target else rows_b
        return [(i, i, i) for i in range(n)], [], [], 0
    bid = {s: i for i, s in enumerate(base_v) if s is not None}
    cid = {s: i for i, s in enumerate(chat_v) if s is not None}
    added = [cid[s] for s in sorted(cid, key=cid.get) if s not in bid]
    if not has_target:
        comp = [(-1, cid[s], i) for i, s in enumerate(base_v) if s is not None and s in cid]
        return comp, added, [], sum(1 for s in base_v if s is not None and s not in cid)
    comp, chat_only, target_only = [], [], []
    for i in range(rows_t):
        s = target_v[i] if i < len(target_v) else None
        if s is not None and s in cid and s not in bid:
            chat_only.append(cid[s])
        elif s is not None and s in bid and s in cid:
            comp.append((i, cid[s], bid[s]))
        else:
            target_only.append(i)
    tset = set(s for s in target_v if s is not None)
    chat_only += [cid[s] for s in sorted(cid, key=cid.get) if s not in bid and s not in tset]
    return comp, chat_only, target_only, 0


def sums_of(dc, b, dt):
    s = {"elements": int(dc.size), "base_sq": float(np.sum(b * b)), "chat_sq": float(np.sum(dc * dc)),
         "chat_l1": float(np.sum(np.abs(dc))), "chat_nonzero": int(np.count_nonzero(dc))}
    if dt is not None:
        both = (dc != 0) & (dt != 0)
        s.update({"target_sq": float(np.sum(dt * dt)), "dot": float(np.sum(dc * dt)),
                  "both_nonzero": int(np.count_nonzero(both)),
                  "sign_agree": int(np.count_nonzero(both & ((dc > 0) == (dt > 0))))})
    return s


def add(acc, s):
    for k, v in s.items():
        acc[k] = acc.get(k, 0) + v


def top_of(a, l1, l2):
    """a: |dc| flattened (partitioned in place)."""
    n = a.size
    out = []
    for p in PCTS:
        k = (n * p + 99) // 100
        if n == 0:
            out.append({"percent": p, "k": 0, "threshold": 0.0, "l1_share": None, "l2_share": None})
            continue
        a.partition(n - k)
        top = a[n - k:]
        out.append({"percent": p, "k": int(k), "threshold": float(top.min()),
                    "l1_share": float(top.sum()) / l1 if l1 > 0 else None,
                    "l2_share": float(np.sum(top * top)) / l2 if l2 > 0 else None})
    return out


ROWS_PER_STEP = 4096


def analyse_tensor(name, B, C, T, pairs):
    """Sums in steps of rows (bounded memory), then |dc| whole for the top-k."""
    eb, ec = B[name], C[name]
    et = T[name] if T is not None else None
    if pairs is None:
        rows = ec[1][0] if len(ec[1]) >= 1 else 1
        sel = None
    else:
        rows = len(pairs)
        sel = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    acc = {}
    absd = []
    for r0 in range(0, max(rows, 1), ROWS_PER_STEP):
        r1 = min(rows, r0 + ROWS_PER_STEP)
        if sel is None:
            if len(ec[1]) == 0:
                b, c = widen(eb).reshape(-1), widen(ec).reshape(-1)
                t = widen(et).reshape(-1) if et is not None else None
            else:
                idx = np.arange(r0, r1)
                b, c = widen(eb, idx), widen(ec, idx)
                t = widen(et, idx) if et is not None else None
        else:
            b, c = widen(eb, sel[r0:r1, 2]), widen(ec, sel[r0:r1, 1])
            t = widen(et, sel[r0:r1, 0]) if et is not None else None
        dc = (c - b).reshape(-1)
        dt = (t - b).reshape(-1) if t is not None else None
        add(acc, sums_of(dc, b.reshape(-1), dt))
        absd.append(np.abs(dc))
    a = np.concatenate(absd) if absd else np.zeros(0)
    return acc, top_of(a, acc["chat_l1"], acc["chat_sq"]), a


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chatvec_json")
    ap.add_argument("base")
    ap.add_argument("chat")
    ap.add_argument("target", nargs="?")
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--exclude", action="append", default=[])
    a = ap.parse_args()
    got = json.load(open(a.chatvec_json))
    B, C = open_model(a.base), open_model(a.chat)
    T = open_model(a.target) if a.target else None
    has_t = T is not None
    vb, vc = vocab(a.base), vocab(a.chat)
    vt = vocab(a.target) if has_t else None

    def selected(n):
        if a.include and not any(re.search(r, n) for r in a.include):
            return False
        return not any(re.search(r, n) for r in a.exclude)

    names = [n for n in (T if has_t else C) if selected(n) and (T if has_t else C)[n][0] in ("BF16", "F16", "F32", "F64")]
    errors = []
    want_t, layers, groups, total = {}, {}, {}, {}
    # Per layer, the top fractions of all its elements together: |dc| of the
    # layer's tensors kept until its last one is done.
    layer_left = {}
    for name in names:
        if layer_of(name) is not None:
            layer_left[layer_of(name)] = layer_left.get(layer_of(name), 0) + 1
    layer_abs, layer_top = {}, {}
    for name in names:
        pairs, chat_only, target_only, base_only = None, [], [], 0
        if is_vocab(name):
            rb, rc = B[name][1][0], C[name][1][0]
            rt = T[name][1][0] if has_t else 0
            comp, chat_only, target_only, base_only = row_pairs(vb, vc, vt, rb, rc, rt, has_t)
            identity = (not chat_only and not target_only and not base_only and rb == rc and (not has_t or rt == rb)
                        and all(p[1] == p[2] == i and (not has_t or p[0] == i) for i, p in enumerate(comp)))
            pairs = None if identity else comp
        s, top, absd = analyse_tensor(name, B, C, T, pairs)
        rec = {"sums": s, "top": top}
        if pairs is not None:
            w = C[name][1][1]
            rec["rows"] = {"combined": len(pairs), "chat_only": len(chat_only), "target_only": len(target_only),
                           "base_only": base_only,
                           "chat_only_norm": math.sqrt(float(np.sum(widen(C[name], np.array(chat_only, dtype=np.int64)) ** 2))) if chat_only else 0.0,
                           "target_only_norm": math.sqrt(float(np.sum(widen(T[name], np.array(target_only, dtype=np.int64)) ** 2))) if target_only else 0.0}
            assert w == B[name][1][1]
        want_t[name] = rec
        add(total, s)
        add(groups.setdefault(group_of(name), {}), s)
        if layer_of(name) is not None:
            li = layer_of(name)
            add(layers.setdefault(li, {}), s)
            layer_abs.setdefault(li, []).append(absd)
            layer_left[li] -= 1
            if layer_left[li] == 0:
                la = np.concatenate(layer_abs.pop(li))
                layer_top[li] = top_of(la, layers[li]["chat_l1"], layers[li]["chat_sq"])
                del la
        del absd

    def cmp_sums(where, want, g):
        for k, v in want.items():
            gv = g.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                if gv != v:
                    errors.append(f"{where}: {k} = {gv}, numpy {v}")
            elif not close(gv, v):
                errors.append(f"{where}: {k} = {gv}, numpy {v}")
        # Derived figures from the sums.
        if want["base_sq"] > 0 and not close(g.get("rel_chat"), math.sqrt(want["chat_sq"] / want["base_sq"])):
            errors.append(f"{where}: rel_chat {g.get('rel_chat')}")
        if has_t and want["chat_sq"] > 0 and want["target_sq"] > 0:
            cos = want["dot"] / math.sqrt(want["chat_sq"] * want["target_sq"])
            if not close(g.get("cosine"), cos, 1e-7):
                errors.append(f"{where}: cosine {g.get('cosine')}, numpy {cos}")
        if has_t and want["both_nonzero"] and not close(g.get("sign_agreement"), want["sign_agree"] / want["both_nonzero"]):
            errors.append(f"{where}: sign_agreement {g.get('sign_agreement')}")

    got_t = {t["name"]: t for t in got["tensors"]}
    if set(got_t) != set(want_t):
        errors.append(f"tensor sets differ: chatvec only {sorted(set(got_t) - set(want_t))}, "
                      f"numpy only {sorted(set(want_t) - set(got_t))}")
    def cmp_top(where, want, got_top):
        if len(got_top) != len(want):
            errors.append(f"{where}: {len(got_top)} top fractions, numpy {len(want)}")
        for wt, gt in zip(want, got_top):
            if wt["k"] != gt["k"] or wt["threshold"] != gt["threshold"]:
                errors.append(f"{where} top {wt['percent']}%: k {gt['k']} threshold {gt['threshold']!r}, numpy k {wt['k']} "
                              f"threshold {wt['threshold']!r}")
            for f in ("l1_share", "l2_share"):
                if not close(gt[f], wt[f]):
                    errors.append(f"{where} top {wt['percent']}%: {f} {gt[f]}, numpy {wt[f]}")

    for name, rec in want_t.items():
        g = got_t.get(name)
        if g is None:
            continue
        cmp_sums(name, rec["sums"], g)
        cmp_top(name, rec["top"], g["top"])
        if ("rows" in rec) != ("rows" in g):
            errors.append(f"{name}: rows reported by {'numpy' if 'rows' in rec else 'chatvec'} only")
        elif "rows" in rec:
            for k, v in rec["rows"].items():
                if (isinstance(v, int) and g["rows"][k] != v) or (isinstance(v, float) and not close(g["rows"][k], v)):
                    errors.append(f"{name} rows: {k} = {g['rows'][k]}, numpy {v}")
    cmp_sums("total", total, got["total"])
    for gname, s in groups.items():
        cmp_sums("group " + gname, s, got["groups"].get(gname, {}))
    got_l = {l["layer"]: l for l in got["layers"]}
    if set(got_l) != set(layers):
        errors.append(f"layers differ: {sorted(got_l)} vs {sorted(layers)}")
    for i, s in layers.items():
        if i in got_l:
            cmp_sums(f"layer {i}", s, got_l[i])
            cmp_top(f"layer {i}", layer_top[i], got_l[i].get("top", []))
    # The ranking: shares of the total.
    for name, g in got_t.items():
        if name in want_t and not close(g["share"], want_t[name]["sums"]["chat_sq"] / total["chat_sq"]):
            errors.append(f"{name}: share {g['share']}")
    passes = {name: g.get("passes") for name, g in got_t.items()}
    print(json.dumps({"tensors": len(want_t), "errors": errors[:20], "error_count": len(errors),
                      "vocab_rows": {n: r["rows"] for n, r in want_t.items() if "rows" in r},
                      "max_passes": max(passes.values()) if passes else 0,
                      "layers": len(layer_top),
                      "layer_passes": {str(l["layer"]): l.get("passes") for l in got["layers"]}}))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What a rounded chat vector costs: apply(extract(base, chat)) against merge(base, chat, target).

For each vector dtype (f32, bf16, f16): `chatvec extract --dtype D`, `chatvec apply` at the ratio,
`chatvec merge` at the same ratio, then `chatvec diff --json` of the two outputs.  Prints one table row per
dtype: tensors identical, the largest max|A-B| over tensors and the largest and median |A-B|/|B|.

  bench/extract_dtype_error.py --models /tmp/chatvec-bench/merge-1b --ratio 0.5 [--append docs/benchmarks.md]

The models directory holds base/, chat/ and target/ (bench/run_merge_bench.py --shape 1b makes them).
Outputs go to --work (default: MODELS/dtype-error) and are removed at the end unless --keep.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--dtypes", default="f32,bf16,f16")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/src/cli/chatvec"))
    ap.add_argument("--work")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--append", help="append the table to this Markdown file")
    a = ap.parse_args()
    m = a.models
    work = a.work or os.path.join(m, "dtype-error")
    os.makedirs(work, exist_ok=True)
    merged = os.path.join(work, "merged")
    run([a.bin, "-q", "merge", "--base", f"{m}/base", "--chat", f"{m}/chat", "--target", f"{m}/target",
         "--ratio", str(a.ratio), "-o", merged, "--force"])
    rows = []
    for dt in a.dtypes.split(","):
        vec, applied = os.path.join(work, f"vec-{dt}"), os.path.join(work, f"applied-{dt}")
        run([a.bin, "-q", "extract", "--base", f"{m}/base", "--chat", f"{m}/chat", "--dtype", dt, "-o", vec, "--force"])
        run([a.bin, "-q", "apply", "--target", f"{m}/target", "--vector", vec, "--ratio", str(a.ratio), "-o", applied,
             "--force"])
        out = subprocess.run([a.bin, "diff", applied, merged, "--json"], check=True, stdout=subprocess.PIPE).stdout
        d = json.loads(out)
        t = d["tensors"]
        rels = [x["rel_norm"] for x in t]
        rows.append((dt, d["identical"], len(t), max(x["max_abs"] for x in t), max(rels), statistics.median(rels)))
        if not a.keep:
            shutil.rmtree(vec)
            shutil.rmtree(applied)
    if not a.keep:
        shutil.rmtree(work)
    lines = [f"apply(extract --dtype D) vs merge, ratio {a.ratio}, models {m}:", "",
             "| vector dtype | tensors identical | max abs error | max rel error (norm) | median rel error |",
             "|---|---|---|---|---|"]
    for dt, ident, n, mx, rmax, rmed in rows:
        lines.append(f"| {dt} | {ident} / {n} | {mx:.3g} | {rmax:.3g} | {rmed:.3g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n### extract dtype\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Operations on the chat vector against the plain merge, side by side.

  bench/run_vecops_bench.py [--shape 1b] [--reps 2] [--models DIR] [--build build]
                            [--work /tmp/chatvec-bench] [--append docs/benchmarks.md]

The inputs are run_merge_bench.py's (base, chat, target under
WORK/merge-SHAPE, generated once; or --models DIR holding base/, chat/,
target/).  Each repetition runs, in alternating order, with the inputs read
into the page cache first (warm) and each under /usr/bin/time -v:

  plain      chatvec merge --ratio 0.5
  dare       chatvec merge --ratio 0.5 --dare 0.5 --seed 1
  magnitude  chatvec merge --ratio 0.5 --keep 0.25
  mag+l2     chatvec merge --ratio 0.5 --keep 0.25 --keep-rescale l2
  clip       chatvec merge --ratio 0.5 --clip 0.05

and prints medians of wall time and peak RSS with the ratios to plain.
"""
import argparse
import os
import shlex
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run_merge_bench as rmb  # noqa: E402

VARIANTS = [
    ("plain", []),
    ("dare", ["--dare", "0.5", "--seed", "1"]),
    ("magnitude", ["--keep", "0.25"]),
    ("mag+l2", ["--keep", "0.25", "--keep-rescale", "l2"]),
    ("clip", ["--clip", "0.05"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--models", help="directory with base/, chat/, target/ (default: generated under --work)")
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/chatvec-bench"))
    ap.add_argument("--build", default=os.path.join(rmb.ROOT, "build"))
    ap.add_argument("--out", default=None, help="output directory (default WORK/vecops-out)")
    ap.add_argument("--append")
    a = ap.parse_args()
    chatvec = os.path.join(a.build, "src", "cli", "chatvec")
    d = a.models or rmb.generate(a.work, a.shape)
    models = {m: os.path.join(d, m) for m in ("base", "chat", "target")}
    inputs = [f for m in models.values() for f in rmb.model_files(m)]
    in_bytes = sum(os.path.getsize(f) for f in inputs)
    out = a.out or os.path.join(a.work, "vecops-out")
    logs = out + "-logs"
    os.makedirs(logs, exist_ok=True)
    base_cmd = [chatvec, "-q", "merge", "--base", models["base"], "--chat", models["chat"], "--target",
                models["target"], "--ratio", "0.5", "-o", out]
    results = {v: [] for v, _ in VARIANTS}
    load_before = rmb.loadavg()
    for rep in range(a.reps):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for name, flags in order:
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            rmb.read_through(inputs)
            ok, wall, rss = rmb.timed(base_cmd + flags, os.path.join(logs, f"{name}-{rep}.txt"))
            rmb.log(f"  {name} rep {rep}: {'ok' if ok else 'FAILED'} {wall:.2f} s, {rmb.fmt_mib(rss)}")
            results[name].append((ok, wall, rss))
    shutil.rmtree(out, ignore_errors=True)
    load_after = rmb.loadavg()

    def med(name, i):
        v = [r[i] for r in results[name] if r[0]]
        return statistics.median(v) if v else float("nan")

    lines = ["| variant | flags | wall (median) | peak RSS (median) | wall / plain | RSS / plain | all walls |",
             "|---|---|---|---|---|---|---|"]
    for name, flags in VARIANTS:
        walls = ", ".join(f"{r[1]:.1f}" if r[0] else "fail" for r in results[name])
        lines.append(f"| {name} | `{' '.join(flags) or '-'}` | {rmb.fmt_s(med(name, 1))} | {rmb.fmt_mib(med(name, 2))} | "
                     f"{med(name, 1) / med('plain', 1):.2f}x | {med(name, 2) / med('plain', 2):.2f}x | {walls} |")
    table = "\n".join(lines)
    print(table)
    if a.append:
        facts = rmb.machine_facts(a.work)
        cmdline = "nice bench/run_vecops_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        with open(a.append, "a") as f:
            f.write(f"\n## Operations on the chat vector, `{a.shape}` shape, bf16, {facts['date']}\n\n")
            f.write(f"Command: `{cmdline}`\n\n")
            f.write(f"Inputs: 3 x {in_bytes / 3e9:.2f} GB ({len(inputs)} files), warm page cache, ratio 0.5, "
                    f"{a.reps} alternating runs per variant. Machine: {facts['cpu']}; {facts['memory']} RAM. "
                    f"Load average before {' '.join(load_before)}, after {' '.join(load_after)} "
                    f"(shared machine: expect noise).\n\n")
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Operations on the chat vector against the plain merge, side by side.

  bench/run_vecops_bench.py [--shape 1b] [--reps 2] [--models DIR] [--build build] [--baseline DIR]
                            [--work /tmp/chatvec-bench] [--append docs/benchmarks.md]

The inputs are run_merge_bench.py's (base, chat, target under
WORK/merge-SHAPE, generated once; or --models DIR holding base/, chat/,
target/).  Each repetition runs, in alternating order, with the inputs read
into the page cache first (warm) and each under /usr/bin/time -v:

  plain      chatvec merge --ratio 0.5
  dare       chatvec merge --ratio 0.5 --dare 0.5 --seed 1
  magnitude  chatvec merge --ratio 0.5 --keep 0.25
  mag+l1     chatvec merge --ratio 0.5 --keep 0.25 --keep-rescale l1
  mag+l2     chatvec merge --ratio 0.5 --keep 0.25 --keep-rescale l2
  mag+clip   chatvec merge --ratio 0.5 --keep 0.25 --clip 0.05
  clip       chatvec merge --ratio 0.5 --clip 0.05

and prints medians of wall time, CPU time (user + system) and peak RSS with the
ratios to plain.  --baseline DIR runs a second build's binary interleaved
with --build's (variant by variant, the order alternating), for side-by-side
ratios under the same load.
"""
import argparse
import os
import re
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
    ("mag+l1", ["--keep", "0.25", "--keep-rescale", "l1"]),
    ("mag+l2", ["--keep", "0.25", "--keep-rescale", "l2"]),
    ("mag+clip", ["--keep", "0.25", "--clip", "0.05"]),
    ("clip", ["--clip", "0.05"]),
]


def cpu_seconds(errfile):
    """User + system CPU seconds from /usr/bin/time -v's report."""
    text = open(errfile).read()
    t = 0.0
    for key in ("User time (seconds)", "System time (seconds)"):
        m = re.search(re.escape(key) + r": ([\d.]+)", text)
        t += float(m.group(1)) if m else float("nan")
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--models", help="directory with base/, chat/, target/ (default: generated under --work)")
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/chatvec-bench"))
    ap.add_argument("--build", default=os.path.join(rmb.ROOT, "build"))
    ap.add_argument("--baseline", help="another build directory (or one holding src/cli/chatvec), run interleaved "
                    "with --build's: each variant by both, one after the other, so that both see the same load")
    ap.add_argument("--out", default=None, help="output directory (default WORK/vecops-out)")
    ap.add_argument("--append")
    a = ap.parse_args()
    builds = [("", a.build)] + ([("baseline ", a.baseline)] if a.baseline else [])
    d = a.models or rmb.generate(a.work, a.shape)
    models = {m: os.path.join(d, m) for m in ("base", "chat", "target")}
    inputs = [f for m in models.values() for f in rmb.model_files(m)]
    in_bytes = sum(os.path.getsize(f) for f in inputs)
    out = a.out or os.path.join(a.work, "vecops-out")
    logs = out + "-logs"
    os.makedirs(logs, exist_ok=True)
    results = {(b, v): [] for b, _ in builds for v, _ in VARIANTS}
    load_before = rmb.loadavg()
    for rep in range(a.reps):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for name, flags in order:
            for bi, (label, build) in enumerate(builds if rep % 2 == 0 else builds[::-1]):
                chatvec = os.path.join(build, "src", "cli", "chatvec")
                cmd = [chatvec, "-q", "merge", "--base", models["base"], "--chat", models["chat"], "--target",
                       models["target"], "--ratio", "0.5", "-o", out] + flags
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                rmb.read_through(inputs)
                errfile = os.path.join(logs, f"{label.strip() or 'build'}-{name}-{rep}.txt")
                ok, wall, rss = rmb.timed(cmd, errfile)
                cpu = cpu_seconds(errfile)
                rmb.log(f"  {label}{name} rep {rep}: {'ok' if ok else 'FAILED'} {wall:.2f} s, cpu {cpu:.2f} s, "
                        f"{rmb.fmt_mib(rss)}")
                results[(label, name)].append((ok, wall, rss, cpu))
    shutil.rmtree(out, ignore_errors=True)
    load_after = rmb.loadavg()

    def med(label, name, i):
        v = [r[i] for r in results[(label, name)] if r[0]]
        return statistics.median(v) if v else float("nan")

    lines = ["| build | variant | flags | wall (median) | peak RSS (median) | wall / plain | CPU / plain | "
             "RSS / plain | all walls |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, build in builds:
        for name, flags in VARIANTS:
            walls = ", ".join(f"{r[1]:.1f}" if r[0] else "fail" for r in results[(label, name)])
            lines.append(f"| {label.strip() or 'build'} | {name} | `{' '.join(flags) or '-'}` | "
                         f"{rmb.fmt_s(med(label, name, 1))} | {rmb.fmt_mib(med(label, name, 2))} | "
                         f"{med(label, name, 1) / med(label, 'plain', 1):.2f}x | "
                         f"{med(label, name, 3) / med(label, 'plain', 3):.2f}x | "
                         f"{med(label, name, 2) / med(label, 'plain', 2):.2f}x | {walls} |")
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

#!/usr/bin/python3
"""`chatvec analyze` against the I/O floor of reading its inputs once.

  bench/run_analyze_bench.py --models DIR [--work DIR] [--reps 3] [--modes warm,cold] [--build build]
                             [--verify] [--append docs/benchmarks.md] [--note TEXT]

DIR holds base/, chat/ and target/ (e.g. the 1b shape of run_merge_bench.py:
/tmp/chatvec-bench/merge-1b; --work: where the outputs go, by default DIR
itself).  For each cache mode and repetition, runs in
turn, each under /usr/bin/time -v:

  floor    build/bench/chatvec_io_floor --prefetch 64MB --bytes 0: reads every
           input byte once with read(), three models in lockstep, writes nothing
  analyze  chatvec -q analyze --base --chat --target --json OUT.json

warm: the inputs read through once before the run; cold: dropped from the
page cache (POSIX_FADV_DONTNEED) before the run.  Prints medians (wall, peak
RSS) and analyze/floor; with --verify, checks the last JSON against numpy
(tests/analyze/reference_analyze.py) and reports how long that took.
"""
import argparse
import datetime
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_merge_bench import drop_from_cache, fmt_mib, fmt_s, loadavg, log, machine_facts, model_files, read_through, timed  # noqa: E402

REF = os.path.join(ROOT, "tests", "analyze", "reference_analyze.py")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True)
    ap.add_argument("--work", help="directory for the outputs (default: --models)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="warm,cold")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", default="", help="--threads for analyze (default: all cores)")
    ap.add_argument("--verify", action="store_true", help="check the figures against numpy afterwards")
    ap.add_argument("--append")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    chatvec = os.path.join(a.build, "src", "cli", "chatvec")
    floor = os.path.join(a.build, "bench", "chatvec_io_floor")
    models = {m: os.path.join(a.models, m) for m in ("base", "chat", "target")}
    streams = []
    for m in ("base", "chat", "target"):
        if streams:
            streams.append("--")
        streams += model_files(models[m])
    inputs = [f for m in ("base", "chat", "target") for f in model_files(models[m])]
    in_bytes = sum(os.path.getsize(f) for f in inputs)
    work = a.work or a.models
    os.makedirs(work, exist_ok=True)
    out_json = os.path.join(work, "analyze.json")
    cmds = {
        "floor": [floor, "--prefetch", str(64 << 20), "--out", os.path.join(work, "floor.out"), "--bytes", "0"] + streams,
        "analyze": [chatvec, "-q", "analyze", "--base", models["base"], "--chat", models["chat"], "--target",
                    models["target"], "--json", out_json] + (["--threads", a.threads] if a.threads else []),
    }
    load_before = loadavg()
    results = {}
    for mode in a.modes.split(","):
        for rep in range(a.reps):
            for tool, cmd in cmds.items():
                if mode == "warm":
                    read_through(inputs)
                else:
                    drop_from_cache(inputs)
                ok, wall, rss = timed(cmd, os.path.join(work, f"{tool}.time"))
                log(f"{mode} {tool} rep {rep + 1}: {wall:.2f} s, {rss / 2**20:.0f} MiB{'' if ok else ' FAILED'}")
                results.setdefault((mode, tool), []).append((ok, wall, rss))
    try:
        os.remove(os.path.join(work, "floor.out"))
    except OSError:
        pass
    lines = ["| cache | tool | wall (median) | peak RSS | ok | walls |", "|---|---|---|---|---|---|"]
    ratios = []
    for mode in a.modes.split(","):
        med = {}
        for tool in cmds:
            rs = results[(mode, tool)]
            walls = [w for ok, w, _ in rs if ok]
            med[tool] = statistics.median(walls) if walls else float("nan")
            rss = max(r for _, _, r in rs)
            lines.append(f"| {mode} | {tool} | {fmt_s(med[tool])} | {fmt_mib(rss)} | {sum(ok for ok, _, _ in rs)}/{len(rs)} | "
                         + ", ".join(f"{w:.1f}" for _, w, _ in rs) + " |")
        ratios.append(f"- {mode}: analyze/floor wall {med['analyze'] / med['floor']:.2f}x")
    verify = ""
    if a.verify:
        t0 = time.time()
        r = subprocess.run(["/usr/bin/python3", REF, out_json, models["base"], models["chat"], models["target"]],
                           capture_output=True, text=True)
        verify = (f"- numpy check (tests/analyze/reference_analyze.py on the same files): exit {r.returncode} in "
                  f"{time.time() - t0:.0f} s: {r.stdout.strip()[:300]}")
        log(verify)
    facts = machine_facts(a.models)
    report = [f"## analyze, {os.path.basename(a.models.rstrip('/'))}, {facts['date']}", "",
              "Command: `bench/run_analyze_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]) + "`", "",
              f"Inputs: {in_bytes / 1e9:.2f} GB (base, chat, target). Machine: {facts['cpu']}, {facts['memory']}, "
              f"{facts['disk']}, kernel {facts['kernel']}; load average before {' '.join(load_before)}, after "
              f"{' '.join(loadavg())}.", ""] + lines + [""] + ratios + ([verify] if verify else [])
    if a.note:
        report += ["", a.note]
    text = "\n".join(report) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""End-to-end merge benchmark: chatvec vs the I/O floor vs the whole-model way.

  bench/run_merge_bench.py [--shape 1b] [--dtype bf16] [--reps 3] [--modes warm,cold]
                           [--build build-bench] [--work /tmp/chatvec-bench]
                           [--append docs/benchmarks.md] [--clean]

Generates (once, reused while present) three related synthetic Llama-shaped
checkpoints of --dtype (bf16 by default; f16, f32), base, chat = base + noise
and target = base + noise, under WORK/merge-SHAPE (WORK/merge-SHAPE-DTYPE
for another dtype than bf16), with scripts/make_synthetic_model.py.  Then, for each cache
mode and repetition, runs in turn, each under /usr/bin/time -v:

  floor    build/bench/chatvec_io_floor --flush-behind: reads every input byte,
           writes as many bytes as the merge writes, no arithmetic, fsync (the
           I/O floor; --flush-behind keeps write-back streaming as chatvec
           does: on the benchmark machine it is 3x faster than letting dirty
           pages pile up until the fsync, so it is the honest floor;
           --prefetch 64 MB asks for each input ahead as chatvec does)
  chatvec  chatvec merge --base --chat --target -o OUT
  whole    bench/whole_model_merge.py on /usr/bin/python3: the three state
           dicts loaded whole, arithmetic in the model dtype, saved

warm: the inputs are read once before the run (page cache full);
cold: the inputs are dropped from the page cache with
posix_fadvise(POSIX_FADV_DONTNEED) before the run.  Each output is deleted
after its run.  Prints a table of medians (wall time, peak RSS) and the ratios
chatvec/floor and whole/chatvec, and appends it with the command and the
machine facts to --append when given.
"""
import argparse
import datetime
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GEN = os.path.join(ROOT, "scripts", "make_synthetic_model.py")
WHOLE = os.path.join(HERE, "whole_model_merge.py")
PY = "/usr/bin/python3"
TIME = "/usr/bin/time"

# Shard size of the generated inputs per shape (the 1b and 7b ones sharded as
# published checkpoints are).
SHARD = {"tiny": 4000, "small": 200_000, "medium": 20_000_000, "1b": 1_000_000_000, "7b": 5_000_000_000}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    log("+ " + " ".join(shlex.quote(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def model_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))


def generate(work, shape, dtype="bf16"):
    """base, chat, target under work/merge-shape[-dtype], made once (chat and
    target take the base's dtype)."""
    d = os.path.join(work, f"merge-{shape}" if dtype == "bf16" else f"merge-{shape}-{dtype}")
    os.makedirs(d, exist_ok=True)
    specs = [("base", ["--seed", "1"]),
             ("chat", ["--seed", "2", "--derive-from", os.path.join(d, "base"), "--noise", "0.001"]),
             ("target", ["--seed", "3", "--derive-from", os.path.join(d, "base"), "--noise", "0.002"])]
    for name, extra in specs:
        out = os.path.join(d, name)
        if os.path.exists(os.path.join(out, "config.json")):
            continue
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        sh([PY, GEN, tmp, "--shape", shape, "--dtype", dtype, "--shard-bytes", str(SHARD[shape])] + extra)
        os.rename(tmp, out)
        log(f"generated {out} in {time.time() - t0:.0f} s")
    return d


def drop_from_cache(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_through(paths):
    buf = bytearray(16 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def timed(cmd, errfile):
    """Run cmd under /usr/bin/time -v; (ok, wall seconds, peak RSS bytes)."""
    log("+ " + " ".join(shlex.quote(c) for c in cmd))
    with open(errfile, "w") as err:
        r = subprocess.run([TIME, "-v"] + cmd, stdout=subprocess.DEVNULL, stderr=err)
    text = open(errfile).read()
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    wall = (int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) if m else float("nan")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    rss = int(m.group(1)) * 1024 if m else 0
    if r.returncode != 0:
        log(f"  exit status {r.returncode}; last lines of {errfile}:")
        for line in text.splitlines()[-25:]:
            log("    " + line)
    return r.returncode == 0, wall, rss


def fmt_s(x):
    return f"{x:.2f} s" if x == x else "-"


def fmt_mib(b):
    return f"{b / 2**20:.0f} MiB"


def machine_facts(work):
    facts = {}
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["cpu"] = f"{os.cpu_count()} cores ({cpu})"
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    facts["memory"] = mem
    st = os.statvfs(work)
    dev = subprocess.run(["df", "--output=source,fstype", work], capture_output=True, text=True).stdout.split("\n")[1]
    facts["disk"] = f"{' '.join(dev.split())}, {st.f_bavail * st.f_frsize / 1e9:.0f} GB free at {work}"
    facts["kernel"] = platform.release()
    facts["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return facts


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1b", choices=sorted(SHARD))
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"],
                    help="dtype of the generated models (the merge keeps it)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="warm,cold")
    ap.add_argument("--tools", default="floor,chatvec,whole", help="which of floor,chatvec,whole to run")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"), help="CMake build directory")
    ap.add_argument("--chatvec", help="chatvec binary (default BUILD/src/cli/chatvec)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                    help="also time another chatvec binary under NAME (e.g. a build before a change)")
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/chatvec-bench"))
    ap.add_argument("--ratio", default="0.5")
    ap.add_argument("--whole-mem-limit", type=float, default=20.0,
                    help="GiB of address space the whole-model run may take (RLIMIT_AS), so that it fails "
                         "with MemoryError instead of waking the OOM killer")
    ap.add_argument("--append", help="append the results to this Markdown file")
    ap.add_argument("--note", default="", help="a line to add under the table")
    ap.add_argument("--clean", action="store_true", help="delete the generated models at the end")
    a = ap.parse_args()

    chatvec = a.chatvec or os.path.join(a.build, "src", "cli", "chatvec")
    floor = os.path.join(a.build, "bench", "chatvec_io_floor")
    for p in (chatvec, floor, TIME):
        if not os.access(p, os.X_OK):
            sys.exit(f"run_merge_bench: {p} missing (build with: cmake --build {a.build} --target chatvec "
                     f"chatvec_io_floor)")
    tools = a.tools.split(",")
    extras = dict(e.split("=", 1) for e in a.extra)
    tools += list(extras)
    modes = a.modes.split(",")
    load_before = loadavg()
    d = generate(a.work, a.shape, a.dtype)
    models = {m: os.path.join(d, m) for m in ("base", "chat", "target")}
    inputs = [f for m in ("base", "chat", "target") for f in model_files(models[m])]
    in_bytes = sum(os.path.getsize(f) for f in inputs)
    out = os.path.join(d, "out")
    logs = os.path.join(d, "logs")
    os.makedirs(logs, exist_ok=True)

    def clear_out():
        shutil.rmtree(out, ignore_errors=True)
        if os.path.exists(out + ".floor"):
            os.remove(out + ".floor")

    # A first, untimed chatvec merge: checks it works, gives the output size.
    clear_out()
    merge_cmd = [chatvec, "-q", "merge", "--base", models["base"], "--chat", models["chat"], "--target",
                 models["target"], "--ratio", a.ratio, "-o", out]
    sh(merge_cmd)
    out_bytes = dir_bytes(out)
    clear_out()
    log(f"inputs {in_bytes / 1e9:.2f} GB in {len(inputs)} files, output {out_bytes / 1e9:.2f} GB")

    streams = []
    for m in ("base", "chat", "target"):
        if streams:
            streams.append("--")
        streams += model_files(models[m])
    cmds = {
        "floor": [floor, "--flush-behind", "--prefetch", str(64 << 20), "--out", out + ".floor", "--bytes", str(out_bytes)] + streams,
        "chatvec": merge_cmd,
        "whole": ["prlimit", f"--as={int(a.whole_mem_limit * 2**30)}", PY, WHOLE, "--base", models["base"],
                  "--chat", models["chat"], "--target", models["target"], "--ratio", a.ratio, "-o", out],
    }
    for name, path in extras.items():
        cmds[name] = [path] + merge_cmd[1:]
    results = {(m, t): [] for m in modes for t in tools}  # (ok, wall, rss)
    for rep in range(a.reps):
        for mode in modes:
            # Alternate the order between repetitions so that no tool always
            # follows the same one.
            order = tools if rep % 2 == 0 else tools[::-1]
            for tool in order:
                clear_out()
                os.sync()
                if mode == "cold":
                    drop_from_cache(inputs)
                else:
                    read_through(inputs)
                ok, wall, rss = timed(cmds[tool], os.path.join(logs, f"{tool}-{mode}-{rep}.txt"))
                log(f"  {mode} {tool} rep {rep}: {'ok' if ok else 'FAILED'} {wall:.2f} s, {fmt_mib(rss)}")
                results[(mode, tool)].append((ok, wall, rss))
                clear_out()
    load_after = loadavg()

    def med(mode, tool, i):
        v = [r[i] for r in results.get((mode, tool), []) if r[0]]
        return statistics.median(v) if v else float("nan")

    lines = [f"| cache | tool | wall (median) | peak RSS (median) | runs ok | all walls |",
             "|---|---|---|---|---|---|"]
    for mode in modes:
        for tool in tools:
            rs = results[(mode, tool)]
            nok = sum(1 for r in rs if r[0])
            walls = ", ".join(f"{r[1]:.1f}" if r[0] else "fail" for r in rs)
            rss = med(mode, tool, 2)
            lines.append(f"| {mode} | {tool} | {fmt_s(med(mode, tool, 1))} | "
                         f"{fmt_mib(rss) if rss == rss else '-'} | {nok}/{len(rs)} | {walls} |")
    ratios = []
    for mode in modes:
        parts = []
        if "floor" in tools and "chatvec" in tools:
            parts.append(f"chatvec/floor wall {med(mode, 'chatvec', 1) / med(mode, 'floor', 1):.2f}x")
        for name in extras:
            parts.append(f"{name}/chatvec wall {med(mode, name, 1) / med(mode, 'chatvec', 1):.2f}x")
        if "whole" in tools and "chatvec" in tools:
            parts.append(f"whole/chatvec wall {med(mode, 'whole', 1) / med(mode, 'chatvec', 1):.2f}x, "
                         f"peak RSS {med(mode, 'whole', 2) / med(mode, 'chatvec', 2):.1f}x")
        ratios.append(f"- {mode}: " + "; ".join(parts))
    table = "\n".join(lines)
    print(table)
    print("\n".join(ratios))

    if a.append:
        facts = machine_facts(a.work)
        cmdline = "bench/run_merge_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        with open(a.append, "a") as f:
            f.write(f"\n## Merge, `{a.shape}` shape, {a.dtype}, {facts['date']}\n\n")
            f.write(f"Command: `{cmdline}`\n\n")
            f.write(f"Inputs: 3 x {in_bytes / 3e9:.2f} GB {a.dtype} ({len(inputs)} files), output {out_bytes / 1e9:.2f} GB; "
                    f"ratio {a.ratio}; {a.reps} alternating runs per cell.\n\n")
            f.write(f"Machine: {facts['cpu']}; {facts['memory']} RAM; disk {facts['disk']}; "
                    f"Linux {facts['kernel']}. Load average before {' '.join(load_before)}, "
                    f"after {' '.join(load_after)} (shared machine: expect noise).\n\n")
            f.write(table + "\n\n" + "\n".join(ratios) + "\n")
            if a.note:
                f.write("\n" + a.note + "\n")
        log(f"appended to {a.append}")
    if a.clean:
        shutil.rmtree(d, ignore_errors=True)
        log(f"removed {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

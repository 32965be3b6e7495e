#!/usr/bin/python3
"""chatvec's engine against llama.cpp (node-llama-cpp 3.21.1) side by side.

A random model of the Llama-3.2-1B shape (tied embeddings, bf16, made by
scripts/make_synthetic_model.py) and its GGUF export (`chatvec export gguf
--type bf16`, and f16 with --f16); 64 prompt ids, then 32 greedy tokens, the
same thread count for both.  The runs are interleaved (chatvec on the
directory, chatvec on the GGUF file, llama.cpp on the GGUF file; again) so
that both see the same machine load, `--reps` times, and again with one core
taken by a busy loop (`--busy`).  Prints min / median of each rate and the
ratio of medians; `--json FILE` writes every run.

Rates: prompt = 64 / time until the first generated token; generation =
31 decode steps / time from the first to the 32nd token (chatvec's own
"generated" figure counts 32 tokens over the same 31 steps, so it is scaled
by 31/32 here).

Usage: bench/run_engine_bench.py [--chatvec build/src/cli/chatvec] [--threads 2]
       [--reps 3] [--busy] [--f16] [--bench-dir /tmp/chatvec-bench] [--json FILE]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_GEN = 32
IDS64 = ",".join(["128000"] + [str(i * 997 % 120000) for i in range(1, 64)])


def run(cmd, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p


def ours(chatvec, model, threads):
    env = dict(os.environ, CHATVEC_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    p = run([chatvec, "generate", model, "--prompt-ids", IDS64, "-n", str(N_GEN), "--temperature", "0"], env)
    m = re.search(r"prompt: (\d+) tokens, ([0-9.]+) tokens/s; generated: (\d+) tokens, ([0-9.]+) tokens/s", p.stderr)
    if not m:
        sys.exit("no speed line in chatvec's output:\n" + p.stderr[-1000:])
    gen = int(m.group(3))
    tokens = [int(t) for t in p.stdout.split()]
    return {"prompt_tps": float(m.group(2)), "gen_tps": float(m.group(4)) * (gen - 1) / gen, "tokens": tokens}


def llamacpp(model, threads):
    peers = os.path.join(ROOT, "tests", "peers")
    p = run(["node", os.path.join(HERE, "llamacpp_speed.mjs"), peers, model, IDS64, str(N_GEN), str(threads), "1"])
    return json.loads(p.stdout.strip().splitlines()[-1])


def ensure_models(chatvec, work, dtypes):
    os.makedirs(work, exist_ok=True)
    d = os.path.join(work, "llama1b")
    if not os.path.exists(os.path.join(d, "config.json")):
        run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make_synthetic_model.py"), d + ".tmp", "--shape", "1b",
             "--tied", "--dtype", "bf16"])
        os.rename(d + ".tmp", d)
    tok = os.path.join(d, "tokenizer.json")
    if not os.path.exists(tok):  # GGUF export needs a vocabulary: Llama-3's (128256 ids) from the npm peers
        src = os.path.join(ROOT, "tests", "peers", "node_modules", "@lenml", "tokenizer-llama3", "models",
                           "tokenizer.json")
        with open(src, "rb") as f, open(tok + ".tmp", "wb") as g:
            g.write(f.read())
        os.rename(tok + ".tmp", tok)
    out = {}
    for t in dtypes:
        g = os.path.join(work, f"llama1b-{t}.gguf")
        if not os.path.exists(g):
            run([chatvec, "-q", "export", "gguf", d, "-o", g, "--type", t])
        out[t] = g
    return d, out


def summary(rows, key):
    v = [r[key] for r in rows]
    return min(v), statistics.median(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chatvec", default=os.path.join(ROOT, "build", "src", "cli", "chatvec"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--busy", action="store_true", help="also run with one core taken by a busy loop")
    ap.add_argument("--f16", action="store_true", help="also the f16 GGUF (chatvec on it directly, and llama.cpp)")
    ap.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", "/tmp/chatvec-bench"))
    ap.add_argument("--json")
    a = ap.parse_args()
    dtypes = ["bf16"] + (["f16"] if a.f16 else [])
    model_dir, ggufs = ensure_models(a.chatvec, a.bench_dir, dtypes)

    configs = [("chatvec dir bf16", lambda: ours(a.chatvec, model_dir, a.threads))]
    for t in dtypes:
        configs.append((f"chatvec gguf {t}", lambda g=ggufs[t]: ours(a.chatvec, g, a.threads)))
        configs.append((f"llama.cpp gguf {t}", lambda g=ggufs[t]: llamacpp(g, a.threads)))
    conditions = ["idle"] + (["busy"] if a.busy else [])
    results = {}
    for _, fn in configs:  # warm-up: the files into the page cache
        fn()
    for cond in conditions:
        busy = None
        if cond == "busy":
            busy = subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"])
            time.sleep(1)
        try:
            for rep in range(a.reps):
                for name, fn in configs:
                    results.setdefault((cond, name), []).append(fn())
        finally:
            if busy:
                busy.kill()
                busy.wait()

    print(f"llama-3.2-1B shape, random, tied; 64 prompt ids + {N_GEN} greedy tokens; {a.threads} threads; "
          f"{a.reps} interleaved repetitions after a warm-up; load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"{'condition':<6} {'engine':<20} {'prompt t/s min/med':>20} {'gen t/s min/med':>18}")
    for cond in conditions:
        for name, _ in configs:
            rows = results[(cond, name)]
            p, g = summary(rows, "prompt_tps"), summary(rows, "gen_tps")
            print(f"{cond:<6} {name:<20} {p[0]:>9.1f} / {p[1]:<8.1f} {g[0]:>7.1f} / {g[1]:<8.1f}")
        for t in dtypes:
            ref = results[(cond, f"llama.cpp gguf {t}")]
            for name in ([f"chatvec dir bf16"] if t == "bf16" else []) + [f"chatvec gguf {t}"]:
                mine = results[(cond, name)]
                rp = summary(mine, "prompt_tps")[1] / summary(ref, "prompt_tps")[1]
                rg = summary(mine, "gen_tps")[1] / summary(ref, "gen_tps")[1]
                same = mine[0]["tokens"] == ref[0]["tokens"]
                print(f"{cond:<6} {name} / llama.cpp {t}: prompt {rp:.2f}x, generation {rg:.2f}x "
                      f"(greedy tokens {'equal' if same else 'differ: near-tied logits of a random model'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{c}|{n}": v for (c, n), v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()

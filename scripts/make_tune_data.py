#!/usr/bin/python3
"""The default prompt set of `chatvec tune` (Spanish target, English as the
second language of the identifier), built from ../shared at setup time and
never copied into the repository.

    scripts/make_tune_data.py [OUT_DIR=build/tune-data] [--shared ../shared] [--n-eval 10]

Uses experiments/build_data.py (the reproduction's data: the same prompt
types and formats `chatvec eval` reads, from held-out Bible verses and
held-out chatterbot dialogues), then keeps only what tune needs:

  prompts.jsonl                Spanish and English prompts (repeat, first_word,
                               last_word, continue, dialogue) with expected answers
  es_lid.txt en_lid.txt        text for the language identifier (2000 lines each)
  es_heldout.txt en_heldout.txt held-out verses (bits per byte)
  tune-data.json               the manifest `chatvec tune --data DIR` reads
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(ROOT, "build", "tune-data"))
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--n-eval", type=int, default=10, help="prompts per type and language")
    ap.add_argument("--n-dialogue", type=int, default=5)
    ap.add_argument("--n-heldout", type=int, default=100)
    a = ap.parse_args()
    for need in ("data/bible/bible-es-rv1909.tsv", "data/bible/bible-en-kjv.tsv", "data/chatterbot/spanish"):
        if not os.path.exists(os.path.join(a.shared, need)):
            print(f"make_tune_data: {os.path.join(a.shared, need)} is absent: no default prompt set built", file=sys.stderr)
            return 0
    parent = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        raw = os.path.join(tmp, "raw")
        subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "build_data.py"), raw, "--shared", a.shared,
                        "--n-instr", "1", "--n-eval", str(a.n_eval), "--n-eval-dialogue", str(a.n_dialogue),
                        "--n-heldout", str(a.n_heldout)], check=True, stdout=subprocess.DEVNULL)
        stage = os.path.join(tmp, "stage")
        os.makedirs(stage)
        with open(os.path.join(stage, "prompts.jsonl"), "w", encoding="utf-8") as f:
            for lang in ("es", "en"):
                f.write(open(os.path.join(raw, f"tasks_{lang}.jsonl"), encoding="utf-8").read())
        for lang in ("es", "en"):
            lines = open(os.path.join(raw, f"{lang}_lid.txt"), encoding="utf-8").read().splitlines()[:2000]
            with open(os.path.join(stage, f"{lang}_lid.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            shutil.copy(os.path.join(raw, f"{lang}_heldout.txt"), stage)
        manifest = {"prompts": "prompts.jsonl", "lang": "es",
                    "lang_data": {"es": "es_lid.txt", "en": "en_lid.txt"},
                    "heldout": {"es": "es_heldout.txt", "en": "en_heldout.txt"},
                    "made_by": "scripts/make_tune_data.py from " + os.path.abspath(a.shared)}
        with open(os.path.join(stage, "tune-data.json"), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        if os.path.exists(a.out):
            shutil.rmtree(a.out)
        os.rename(stage, a.out)
    n = sum(1 for _ in open(os.path.join(a.out, "prompts.jsonl")))
    print(f"make_tune_data: {n} prompts in {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

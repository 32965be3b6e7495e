#!/usr/bin/python3
"""Builds every data file of the chat-vector reproduction from ../shared.

    build_data.py OUT_DIR [--shared ../shared] [--n-instr 1500] [--n-eval 20]

Everything is deterministic (no randomness beyond fixed hashes): the same
inputs give byte-identical outputs.  Files written to OUT_DIR:

  es_cp.txt            Spanish verses for continual pre-training (training split)
  en_lid.txt es_lid.txt  training-split verses, for the language identifier
  en_heldout.txt es_heldout.txt  held-out verses (perplexity)
  chat_en.jsonl        English SFT: instructions built from training verses
                       (repeat, first word, last word, continue) + English dialogues
  chat_es.jsonl        the same built from the Spanish verses + Spanish dialogues
  tasks_en.jsonl tasks_es.jsonl  evaluation: the same instruction types built
                       from held-out verses, plus held-out dialogues
  chat_template.jinja  the first run's chat template (User:/Assistant:, <|end|>)
  chat_template_inst.jinja  the faithful one ([INST] ... [/INST], </s>)
  stats.json           counts
"""
import argparse
import hashlib
import json
import os
import re

import yaml

TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}<|end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# The faithful template (Llama-2-chat's layout): plain-text [INST] markers,
# BOS before each user turn, the tokenizer's own </s> ends the assistant's
# turn; no token is added.  experiments/diagnose.py renders the same text.
TEMPLATE_INST = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ bos_token }}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }} {{ eos_token }}"
    "{% endif %}{% endfor %}"
)

PROMPTS = {
    "en": {"repeat": "Repeat: {}", "first_word": "First word: {}", "last_word": "Last word: {}",
           "continue": "Continue: {}"},
    "es": {"repeat": "Repite: {}", "first_word": "Primera palabra: {}", "last_word": "Última palabra: {}",
           "continue": "Continúa: {}"},
}
TYPES = ["repeat", "first_word", "last_word", "continue"]
WORD = re.compile(r"[^\W_]+", re.UNICODE)
STRONG = re.compile(r"<[HG]?\d+>")


def bucket(key, n):
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n


def read_bible(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            k, t = line.split("\t", 1)
            t = STRONG.sub(" ", t)  # Strong's numbers such as <H3967> in RV1909
            t = " ".join(t.split())
            if t:
                out[k] = t
    return out


def sentence_case(t):
    # RV1909 writes the first word of a chapter in capitals ("EN el principio").
    words = t.split(" ")
    if words and len(words[0]) > 1 and words[0].isupper():
        words[0] = words[0][0] + words[0][1:].lower()
    return " ".join(words)


def instructions(lang, verse, kinds):
    words = WORD.findall(verse)
    toks = verse.split(" ")
    out = []
    for kind in kinds:
        if kind == "repeat":
            ans = verse
            q = verse
        elif kind == "first_word":
            ans, q = words[0], verse
        elif kind == "last_word":
            ans, q = words[-1], verse
        else:
            cut = max(2, len(toks) // 2)
            q, ans = " ".join(toks[:cut]), " ".join(toks[cut:])
        out.append((kind, PROMPTS[lang][kind].format(q), ans))
    return out


def dialogues(folder):
    convs = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".yml"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            data = yaml.safe_load(f)
        for c in (data or {}).get("conversations") or []:
            turns = [" ".join(str(t).split()) for t in c if isinstance(t, (str, int, float))]
            turns = [t for t in turns if t]
            if len(turns) < 2 or any(len(t) > 200 for t in turns):
                continue
            if len(turns) % 2:
                turns = turns[:-1]
            msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
            convs.append((name + ":" + "|".join(turns), msgs))
    return convs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    ap.add_argument("--n-instr", type=int, default=1500, help="training verses per language for instructions")
    ap.add_argument("--n-eval", type=int, default=20, help="evaluation tasks per type and language")
    ap.add_argument("--n-eval-dialogue", type=int, default=10)
    ap.add_argument("--n-heldout", type=int, default=300, help="held-out verses per language for perplexity")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    en = read_bible(os.path.join(a.shared, "data/bible/bible-en-kjv.tsv"))
    es = read_bible(os.path.join(a.shared, "data/bible/bible-es-rv1909.tsv"))
    es = {k: sentence_case(v) for k, v in es.items()}
    en = {k: sentence_case(v) for k, v in en.items()}
    keys = [k for k in en if k in es]
    held = [k for k in keys if bucket(k, 20) == 0]  # 5% of verses held out, by a fixed hash
    train = [k for k in keys if bucket(k, 20) != 0]

    def w(name, lines):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")

    w("es_cp.txt", [es[k] for k in train])
    w("es_lid.txt", [es[k] for k in train])
    w("en_lid.txt", [en[k] for k in train])
    w("es_heldout.txt", [es[k] for k in held][: a.n_heldout])
    w("en_heldout.txt", [en[k] for k in held][: a.n_heldout])

    def short(k, text):
        n = len(text.split(" "))
        return 4 <= n <= 14 and len(WORD.findall(text)) >= 3

    # Instruction verses: short ones, chosen by hash; the same verses in both
    # languages (so the English and Spanish chat data are translations).
    tr = sorted([k for k in train if short(k, en[k]) and short(k, es[k])], key=lambda k: bucket(k + "#i", 1 << 30))
    he = sorted([k for k in held if short(k, en[k]) and short(k, es[k])], key=lambda k: bucket(k + "#e", 1 << 30))
    stats = {"verses": len(keys), "train_verses": len(train), "heldout_verses": len(held)}
    for lang, bible, folder in (("en", en, "english"), ("es", es, "spanish")):
        convs = dialogues(os.path.join(a.shared, "data/chatterbot", folder))
        conv_train = [m for key, m in convs if bucket(key, 10) != 0]
        conv_eval = [m for key, m in convs if bucket(key, 10) == 0]
        rows = []
        for k in tr[: a.n_instr]:
            for kind, q, ans in instructions(lang, bible[k], TYPES):
                rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]})
        for m in conv_train:
            rows.append({"messages": m})
        rows.sort(key=lambda r: bucket(json.dumps(r, ensure_ascii=False), 1 << 30))
        w(f"chat_{lang}.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows])
        tasks = []
        for kind in TYPES:
            for k in he[: a.n_eval]:
                (_, q, ans), = instructions(lang, bible[k], [kind])
                tasks.append({"id": f"{lang}-{kind}-{k}", "lang": lang, "type": kind,
                              "messages": [{"role": "user", "content": q}], "expected": ans})
        for i, m in enumerate(conv_eval[: a.n_eval_dialogue]):
            tasks.append({"id": f"{lang}-dialogue-{i}", "lang": lang, "type": "dialogue",
                          "messages": [m[0]], "expected": m[1]["content"]})
        w(f"tasks_{lang}.jsonl", [json.dumps(t, ensure_ascii=False) for t in tasks])
        stats[f"chat_{lang}"] = len(rows)
        stats[f"dialogues_{lang}_train"] = len(conv_train)
        stats[f"tasks_{lang}"] = len(tasks)
    with open(os.path.join(a.out, "chat_template.jinja"), "w") as f:
        f.write(TEMPLATE)
    with open(os.path.join(a.out, "chat_template_inst.jinja"), "w") as f:
        f.write(TEMPLATE_INST)
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()

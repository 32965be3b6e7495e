#!/usr/bin/env python3
"""Models with real tokenizers and different vocabularies, for the vocabulary
policy tests.  Llama-shaped, tiny hidden size, float32, untied LM head.

  make_vocab_fixtures.py OUT_DIR LLAMA2_TOKENIZER_DIR

Writes OUT_DIR/{base,chat,target_same,target_append,target_pad,target_perm,target_chatml}:
  base           the Llama-2 tokenizer.json (32000 tokens)
  chat           base + ChatML tokens <|im_start|> <|im_end|> as added special
                 tokens (32002 rows), EOS <|im_end|>, a ChatML chat template
  target_same    base's tokenizer
  target_append  base's vocabulary + 100 appended tokens (32100 rows)
  target_pad     target_append's tokenizer, rows padded to 32128 (multiple of 64)
  target_perm    base's tokens with ids 1000..1999 in reverse order
  target_chatml  target_append + <|im_end|> at id 32100 (not the chat's 32001)
Rows of a token are the base's row for the same string plus noise, so that
the right answer depends on matching tokens correctly.
"""
import copy
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from make_synthetic_model import tensor_names, write_shards  # noqa: E402

HIDDEN, INTER, LAYERS, HEADS, KV = 8, 16, 1, 2, 1
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def vocab_list(tok):
    ids = {}
    for s, i in tok["model"]["vocab"].items():
        ids[i] = s
    for a in tok["added_tokens"]:
        ids[a["id"]] = a["content"]
    return [ids.get(i) for i in range(max(ids) + 1)]


def write_model(out, tok, tcfg, rows, row_of_token, seed, gen_eos):
    """row_of_token(string or None, table) -> vector; a model with `rows` vocab rows."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    strings = vocab_list(tok)
    names = tensor_names(rows, HIDDEN, INTER, LAYERS, HEADS, KV, False, False)
    tensors = []
    for name, shape in names:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            table = name
            m = np.zeros(shape, dtype=np.float32)
            for i in range(rows):
                s = strings[i] if i < len(strings) else None
                m[i] = row_of_token(s, i, table)
            data = m.tobytes()
        else:
            data = (rng.standard_normal(shape, dtype=np.float32) * 0.02).tobytes()
        tensors.append((name, "F32", shape, (lambda d=data: d)))
    write_shards(out, tensors, 5_000_000_000)
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump(tcfg, open(os.path.join(out, "tokenizer_config.json"), "w"), ensure_ascii=False, indent=2)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
           "num_key_value_heads": KV, "vocab_size": rows, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
           "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": 1, "eos_token_id": gen_eos, "max_new_tokens": 64}, open(os.path.join(out, "generation_config.json"), "w"), indent=2)


def main():
    out, tokdir = sys.argv[1], sys.argv[2]
    base_tok = json.load(open(os.path.join(tokdir, "tokenizer.json")))
    base_cfg = json.load(open(os.path.join(tokdir, "tokenizer_config.json")))
    base_cfg.pop("chat_template", None)
    base_strings = vocab_list(base_tok)
    V = len(base_strings)
    rng = np.random.default_rng(1234)
    # The base's row for each token string (both tables).
    base_rows = {t: rng.standard_normal((V, HIDDEN), dtype=np.float32) for t in ("model.embed_tokens.weight", "lm_head.weight")}
    base_id = {s: i for i, s in enumerate(base_strings)}

    def related(seed, scale):
        noise_rng = np.random.default_rng(seed)
        cache = {}

        def row(s, i, table):
            key = (s, i if s is None else -1, table)
            if key not in cache:
                n = noise_rng.standard_normal(HIDDEN, dtype=np.float32) * np.float32(scale)
                if s is not None and s in base_id:
                    cache[key] = base_rows[table][base_id[s]] + n
                else:  # a token the base does not have, or a padding row
                    cache[key] = noise_rng.standard_normal(HIDDEN, dtype=np.float32)
            return cache[key]
        return row

    write_model(os.path.join(out, "base"), base_tok, base_cfg, V, lambda s, i, t: base_rows[t][base_id[s]], 1, 2)

    chat_tok = copy.deepcopy(base_tok)
    chat_cfg = copy.deepcopy(base_cfg)
    for k, s in enumerate(["<|im_start|>", "<|im_end|>"]):
        entry = {"id": V + k, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        chat_tok["added_tokens"].append(entry)
        chat_cfg["added_tokens_decoder"][str(V + k)] = {x: entry[x] for x in entry if x not in ("id",)}
    chat_cfg["eos_token"] = "<|im_end|>"
    chat_cfg["chat_template"] = CHATML
    write_model(os.path.join(out, "chat"), chat_tok, chat_cfg, V + 2, related(2, 0.01), 2, V + 1)

    write_model(os.path.join(out, "target_same"), base_tok, base_cfg, V, related(3, 0.05), 3, 2)

    app_tok = copy.deepcopy(base_tok)
    new = [f"▁palabra{i}" for i in range(100)]
    for k, s in enumerate(new):
        app_tok["model"]["vocab"][s] = V + k
    write_model(os.path.join(out, "target_append"), app_tok, base_cfg, V + 100, related(4, 0.05), 4, 2)
    write_model(os.path.join(out, "target_pad"), app_tok, base_cfg, V + 128, related(5, 0.05), 5, 2)

    perm_tok = copy.deepcopy(base_tok)
    vocab = perm_tok["model"]["vocab"]
    for s in list(vocab):
        if 1000 <= vocab[s] < 2000:
            vocab[s] = 2999 - vocab[s]
    perm_tok["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    write_model(os.path.join(out, "target_perm"), perm_tok, base_cfg, V, related(6, 0.05), 6, 2)

    cm_tok = copy.deepcopy(app_tok)
    cm_cfg = copy.deepcopy(base_cfg)
    entry = {"id": V + 100, "content": "<|im_end|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    cm_tok["added_tokens"].append(entry)
    cm_cfg["added_tokens_decoder"][str(V + 100)] = {x: entry[x] for x in entry if x != "id"}
    write_model(os.path.join(out, "target_chatml"), cm_tok, cm_cfg, V + 101, related(7, 0.05), 7, 2)

    # Another chat model of the same base with the same added tokens but other
    # rows (two vectors that conflict), and a target of another tokenizer
    # family (every ordinary token renamed).
    write_model(os.path.join(out, "chat2"), chat_tok, chat_cfg, V + 2, related(8, 0.01), 8, V + 1)
    foreign_tok = copy.deepcopy(base_tok)
    foreign_tok["model"]["vocab"] = {(s if i < 3 else f"tok{i}"): i for s, i in foreign_tok["model"]["vocab"].items()}
    foreign_tok["model"]["merges"] = []
    write_model(os.path.join(out, "target_foreign"), foreign_tok, base_cfg, V, related(9, 0.05), 9, 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate a synthetic Hugging Face checkpoint (safetensors): Llama-shaped by
default, or the tensor set and config.json of Qwen2, Qwen3, Gemma 2 or Gemma 3
(--arch).

Written independently of chatvec's C++ writer (numpy only), so that tests and
benchmarks read files chatvec did not make.  Values are random normal * 0.02
(--init fan-in: matrices N(0, 1) * 1.5 / sqrt(columns) and embeddings N(0, 1),
which keep activations of order one, so that soft-capping and attention
patterns matter), or, with --derive-from, another such model plus scaled noise
(so that base, chat and target are related as real ones are).  Norm weights
are 1 + 0.1 N(0, 1), for Gemma (which scales by 1 + w) 0.1 N(0, 1).

  make_synthetic_model.py OUT --shape tiny --dtype bf16 --seed 1
  make_synthetic_model.py OUT --shape 1b --derive-from BASE --noise 0.001
  make_synthetic_model.py OUT --arch gemma2 --hidden 32 --head-dim 16 --layers 4 \
      --init fan-in --set sliding_window=8 --set attn_logit_softcapping=1.5
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

SHAPES = {
    # name: vocab, hidden, intermediate, layers, heads, kv_heads
    "tiny": (64, 16, 40, 2, 4, 2),
    "small": (512, 64, 172, 4, 8, 4),
    "medium": (8192, 512, 1408, 8, 8, 4),
    "1b": (128256, 2048, 8192, 16, 32, 8),
    "7b": (32000, 4096, 11008, 32, 32, 32),
}

ST_DTYPE = {"f32": ("F32", np.float32), "f16": ("F16", np.float16), "bf16": ("BF16", np.uint16)}


ARCHS = {
    # --arch: (architectures, model_type)
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma2": ("Gemma2ForCausalLM", "gemma2"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
}


def tensor_names(vocab, hidden, inter, layers, heads, kv, tied, bias, arch="llama", head_dim=None):
    head_dim = head_dim or hidden // heads
    gemma = arch.startswith("gemma")
    names = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
            (p + "self_attn.k_proj.weight", (kv * head_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv * head_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
        if arch in ("qwen3", "gemma3"):
            names += [(p + "self_attn.q_norm.weight", (head_dim,)), (p + "self_attn.k_norm.weight", (head_dim,))]
        if gemma:
            names += [(p + "pre_feedforward_layernorm.weight", (hidden,)),
                      (p + "post_feedforward_layernorm.weight", (hidden,))]
        if bias:
            names += [
                (p + "self_attn.q_proj.bias", (heads * head_dim,)),
                (p + "self_attn.k_proj.bias", (kv * head_dim,)),
                (p + "self_attn.v_proj.bias", (kv * head_dim,)),
            ]
    names.append(("model.norm.weight", (hidden,)))
    if not tied:
        names.append(("lm_head.weight", (vocab, hidden)))
    return names


def to_storage(x, dtype):
    """float32 array -> bytes of the storage dtype (bf16 by truncation: data only)."""
    if dtype == "bf16":
        return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return x.astype(ST_DTYPE[dtype][1]).tobytes()


def from_storage(buf, dtype, shape):
    if dtype == "BF16":
        u = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    if dtype == "F16":
        return np.frombuffer(buf, dtype=np.float16).astype(np.float32).reshape(shape)
    if dtype == "F32":
        return np.frombuffer(buf, dtype=np.float32).reshape(shape)
    raise ValueError(dtype)


def read_safetensors_dir(path):
    """{name: (dtype, shape, memoryview)} for a directory (single or sharded)."""
    files = []
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        data = open(os.path.join(path, f), "rb").read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        base = 8 + n
        for k, v in header.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            out[k] = (v["dtype"], tuple(v["shape"]), data[base + b : base + e])
    return out


def write_shards(out, tensors, shard_bytes):
    """tensors: list of (name, st_dtype, shape, bytes_fn) written lazily, sharded."""
    shards, cur, cur_size = [], [], 0
    for t in tensors:
        size = int(np.prod(t[2], dtype=np.int64)) * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}[t[1]]
        if cur and cur_size + size > shard_bytes:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append((t, size))
        cur_size += size
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for si, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for (name, dt, shape, _), size in shard:
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + size]}
            off += size
            weight_map[name] = fname
            total += size
        hb = json.dumps(header).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for (name, dt, shape, fn), size in shard:
                b = fn()
                assert len(b) == size, (name, len(b), size)
                f.write(b)
    if len(shards) > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


def synthetic_tokenizer(vocab):
    """A Llama-2-style tokenizer.json (SentencePiece BPE with byte fallback) of
    exactly `vocab` tokens: <unk> <s> </s>, the 256 byte pieces, the letters,
    then pieces made by merging earlier ones in a fixed order (every merge
    joins two existing pieces, as BPE requires)."""
    specials = ["<unk>", "<s>", "</s>"]
    if vocab < len(specials) + 256 + 27:
        raise SystemExit(f"--tokenizer needs a vocabulary of at least {len(specials) + 256 + 27} tokens")
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    seen = set(pieces)
    merges = []
    alphabet = pieces[len(specials) + 256 :]
    frontier = list(alphabet)
    while len(pieces) < vocab:
        grown = []
        for left in frontier:
            for right in alphabet[1:]:
                if len(pieces) >= vocab:
                    break
                new = left + right
                if new in seen:
                    continue
                seen.add(new)
                pieces.append(new)
                merges.append(f"{left} {right}")
                grown.append(new)
        frontier = grown
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, t in enumerate(specials)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": {t: i for i, t in enumerate(pieces)}, "merges": merges},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--vocab", type=int, help="override the vocabulary size")
    ap.add_argument("--dtype", default="bf16", help="bf16, f16, f32, or 'mixed' (cycles through them per tensor)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tied", action="store_true", help="tied embeddings: no lm_head.weight")
    ap.add_argument("--bias", action="store_true", help="q/k/v biases (Qwen2; the same as --arch qwen2)")
    ap.add_argument("--arch", choices=sorted(ARCHS), help="architecture (default llama, or qwen2 with --bias)")
    for flag in ("vocab-rows", "hidden", "intermediate", "layers", "heads", "kv-heads", "head-dim"):
        ap.add_argument("--" + flag, type=int, help="override the shape's " + flag.replace("-", " "))
    ap.add_argument("--init", choices=["small", "fan-in"], default="small", help="value scale (see above)")
    ap.add_argument("--embed-std", type=float, default=1.0, help="--init fan-in: standard deviation of the embeddings")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="set a config.json field (repeatable), e.g. sliding_window=8")
    ap.add_argument("--int-buffer", action="store_true", help="add an I64 buffer tensor")
    ap.add_argument("--shard-bytes", type=int, default=5_000_000_000)
    ap.add_argument("--derive-from", help="start from this model's values and add noise")
    ap.add_argument("--noise", type=float, default=0.001)
    ap.add_argument("--chat-template", help="chat_template string for tokenizer_config.json")
    ap.add_argument("--reverse-order", action="store_true", help="store tensors in reverse name order")
    ap.add_argument("--drop", action="append", default=[], help="leave out this tensor (repeatable)")
    ap.add_argument("--tokenizer", action="store_true",
                    help="also write a tokenizer.json of exactly the vocabulary size (Llama-2 style)")
    a = ap.parse_args()

    vocab, hidden, inter, layers, heads, kv = SHAPES[a.shape]
    if a.vocab:
        vocab = a.vocab
    hidden = a.hidden or hidden
    inter = a.intermediate or inter
    layers = a.layers or layers
    heads = a.heads or heads
    kv = a.kv_heads or kv
    arch = a.arch or ("qwen2" if a.bias else "llama")
    gemma = arch.startswith("gemma")
    bias = arch == "qwen2"
    overrides = {}
    for kv_text in a.set:
        key, _, value = kv_text.partition("=")
        overrides[key] = json.loads(value)
    # Gemma ties the head to the embedding unless the config says otherwise.
    tied = bool(overrides.get("tie_word_embeddings", a.tied or gemma))
    names = tensor_names(vocab, hidden, inter, layers, heads, kv, tied, bias, arch, a.head_dim)
    if a.reverse_order:
        names = names[::-1]
    names = [n for n in names if n[0] not in a.drop]
    src = read_safetensors_dir(a.derive_from) if a.derive_from else None
    os.makedirs(a.out, exist_ok=True)
    cycle = ["bf16", "f16", "f32"]

    tensors = []
    for i, (name, shape) in enumerate(names):
        dt = cycle[i % 3] if a.dtype == "mixed" else a.dtype
        if src is not None and name in src and src[name][0] in ("BF16", "F16", "F32") and a.dtype != "mixed":
            dt = {"BF16": "bf16", "F16": "f16", "F32": "f32"}[src[name][0]]

        def make(name=name, shape=shape, dt=dt, i=i):
            rng = np.random.default_rng([a.seed, i])
            if src is not None and name in src:
                sdt, sshape, buf = src[name]
                base = from_storage(buf, sdt, sshape)
                if base.shape != tuple(shape):  # vocabulary override: keep what fits
                    full = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
                    r = min(base.shape[0], shape[0])
                    full[:r] = base[:r]
                    base = full
                x = base + rng.standard_normal(shape, dtype=np.float32) * np.float32(a.noise)
            elif name.endswith("norm.weight"):
                x = (0.0 if gemma else 1.0) + rng.standard_normal(shape, dtype=np.float32) * 0.1
            elif a.init == "fan-in":
                scale = a.embed_std if "embed_tokens" in name else 1.0 if len(shape) == 1 else 1.5 / np.sqrt(shape[1])
                x = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
            else:
                x = rng.standard_normal(shape, dtype=np.float32) * 0.02
            return to_storage(x, dt)

        tensors.append((name, ST_DTYPE[dt][0], shape, make))
    if a.int_buffer:
        tensors.append(("model.rotary_emb.position_ids", "I64", (1, 16), lambda: np.arange(16, dtype=np.int64).tobytes()))
    write_shards(a.out, tensors, a.shard_bytes)

    torch_dtype = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "mixed": "float32"}[a.dtype]
    config = {
        "architectures": [ARCHS[arch][0]],
        "model_type": ARCHS[arch][1],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if a.head_dim:
        config["head_dim"] = a.head_dim
    if gemma:
        config["hidden_activation"] = "gelu_pytorch_tanh"
        config["rms_norm_eps"] = 1e-6
        config["query_pre_attn_scalar"] = a.head_dim or hidden // heads
        config["sliding_window"] = 16
        config["head_dim"] = a.head_dim or hidden // heads
    if arch == "gemma2":
        config.update({"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0})
    if arch == "gemma3":
        config.update({"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
                       "rope_scaling": None, "attn_logit_softcapping": None, "final_logit_softcapping": None})
    config.update(overrides)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "seed_marker": a.seed}, f, indent=2)
    if a.tokenizer:
        with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
            json.dump(synthetic_tokenizer(vocab), f, ensure_ascii=False)
    tc = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "marker": a.seed}
    if a.chat_template:
        tc["chat_template"] = a.chat_template
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

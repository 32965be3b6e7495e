#!/usr/bin/python3
"""Independent float64 reference for chatvec's engine (tests only).

Reads a Hugging Face Llama/Mistral/Qwen2 directory (Qwen3 and Gemma 2/3:
reference_gemma_qwen3.py) (safetensors parsed with
numpy, no safetensors module), runs whole sequences through a plain PyTorch
implementation in float64 with a causal mask (no KV cache), and writes

  --mode logits: the logits of every position, raw little-endian float64
                 [len(tokens), vocab] to --out;
  --mode batch:  --jobs FILE: a JSON list of {"model", "tokens", "out"}, the
                 logits of each written as in logits mode (one process for
                 many models: importing torch costs seconds);
  --mode nll:    for each line of --tokens-file (space-separated ids), the sum
                 of -log p(t[i+1] | t[..i]); JSON on stdout.

Written from the published definitions (Hugging Face modeling_llama /
modeling_qwen2 semantics: rotate-half RoPE, RMSNorm, SiLU-gated MLP,
grouped-query attention, Llama-3 rope scaling), not from chatvec's code.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_gemma_qwen3  # noqa: E402  Qwen3, Gemma 2, Gemma 3


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = bytes(data[b:e])
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32).astype(np.float64)
        else:
            raise SystemExit(f"{path}: tensor {name}: unsupported dtype {dt}")
        out[name] = torch.from_numpy(a.reshape(info["shape"]).copy())
    return out


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    w = {}
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            w.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        w.update(read_safetensors(os.path.join(model_dir, "model.safetensors")))
    return cfg, w


def inv_frequencies(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv = inv / rs["factor"]
        elif kind == "llama3":
            factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            out = []
            for f in inv.tolist():
                wl = 2 * math.pi / f
                if wl < old / hi:
                    out.append(f)
                elif wl > old / lo:
                    out.append(f / factor)
                else:
                    s = (old / wl - lo) / (hi - lo)
                    out.append((1 - s) * f / factor + s * f)
            inv = torch.tensor(out, dtype=torch.float64)
    return inv


def forward(cfg, w, tokens):
    arch = cfg["architectures"][0]
    if arch in reference_gemma_qwen3.ARCHS:
        return reference_gemma_qwen3.forward(cfg, w, tokens)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(tokens)
    qkv_bias = arch == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    o_bias = arch == "LlamaForCausalLM" and cfg.get("attention_bias", False)
    window = cfg.get("sliding_window") if arch == "MistralForCausalLM" else None

    def rms(x, g):
        return g * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    def lin(x, name, bias):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    inv = inv_frequencies(cfg, hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)

    def rot(x):  # x: [heads, T, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    i = torch.arange(T)
    allowed = i[None, :] <= i[:, None]
    if window:
        allowed &= (i[:, None] - i[None, :]) < window
    mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))

    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj", qkv_bias).view(T, nh, hd).transpose(0, 1)
        k = lin(h, p + "self_attn.k_proj", qkv_bias).view(T, nkv, hd).transpose(0, 1)
        v = lin(h, p + "self_attn.v_proj", qkv_bias).view(T, nkv, hd).transpose(0, 1)
        q, k = rot(q), rot(k)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj", o_bias)
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--mode", choices=["logits", "nll", "batch"], default="logits")
    ap.add_argument("--jobs", help="batch mode: JSON list of {model, tokens, out}")
    ap.add_argument("--tokens", help="comma-separated ids (logits mode)")
    ap.add_argument("--tokens-file", help="one sequence of space-separated ids per line (nll mode)")
    ap.add_argument("--text-file", help="nll mode: one text per line, encoded with --tokenizer (BOS first)")
    ap.add_argument("--tokenizer", help="SentencePiece tokenizer.model for --text-file")
    ap.add_argument("--out", help="output file (logits mode)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.mode == "batch":
        for job in json.load(open(a.jobs)):
            cfg, w = load(job["model"])
            with torch.no_grad():
                forward(cfg, w, job["tokens"]).numpy().astype("<f8").tofile(job["out"])
        return
    cfg, w = load(a.model)
    if a.mode == "logits":
        tokens = [int(t) for t in a.tokens.split(",")]
        with torch.no_grad():
            logits = forward(cfg, w, tokens)
        logits.numpy().astype("<f8").tofile(a.out)
    else:
        if a.text_file:
            import sentencepiece
            sp = sentencepiece.SentencePieceProcessor(model_file=a.tokenizer)
            seqs = [[sp.bos_id()] + sp.encode(line.rstrip("\n")) for line in open(a.text_file, encoding="utf-8")]
        else:
            seqs = [[int(t) for t in line.split()] for line in open(a.tokens_file)]
        total, count, per = 0.0, 0, []
        for ids in seqs:
            if len(ids) < 2:
                per.append(0.0)
                continue
            with torch.no_grad():
                lp = torch.log_softmax(forward(cfg, w, ids), -1)
            nll = -sum(lp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
            per.append(nll)
            total += nll
            count += len(ids) - 1
        json.dump({"nll": total, "count": count, "perplexity": math.exp(total / max(count, 1)),
                   "per_sequence": per, "ids": seqs}, sys.stdout)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()

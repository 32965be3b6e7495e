#!/usr/bin/python3
"""One training step of a tiny Llama in PyTorch, as the reference for the
trainer test: forward written with torch operations in float64 (Hugging Face
Llama conventions: RMSNorm, rotate-half RoPE, GQA, SwiGLU, tied or separate
LM head), gradients by autograd, torch.nn.utils.clip_grad_norm_ and
torch.optim.AdamW (weight decay only on the tensors marked "decay").

Usage: reference_step.py DIR   (reads DIR/params.bin + DIR/meta.json, writes
DIR/ref.json, DIR/ref_grad.bin (unclipped gradients), DIR/ref_params.bin)
"""
import json
import math
import sys

import numpy as np
import torch

d = sys.argv[1]
meta = json.load(open(f"{d}/meta.json"))
flat = np.fromfile(f"{d}/params.bin", dtype=np.float32)
P = {}
for s in meta["slots"]:
    n = int(np.prod(s["shape"]))
    P[s["name"]] = torch.tensor(flat[s["offset"]:s["offset"] + n].reshape(s["shape"]).astype(np.float64),
                                requires_grad=True)

H, nh, nkv, hd = meta["hidden"], meta["heads"], meta["kv_heads"], meta["head_dim"]
eps, theta = meta["eps"], meta["theta"]


def rms(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, T):  # x: [T, heads, hd]
    half = hd // 2
    inv = np.array([1.0 / theta ** (2 * i / hd) for i in range(half)])
    ang = np.arange(T)[:, None] * inv[None, :]
    # cos/sin rounded through float32, as the engine's tables are
    cos = torch.tensor(np.cos(ang).astype(np.float32).astype(np.float64))[:, None, :]
    sin = torch.tensor(np.sin(ang).astype(np.float32).astype(np.float64))[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def seq_loss(tokens, targets, weights):
    T = len(tokens)
    x = P["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(meta["layers"]):
        p = f"model.layers.{l}."
        xn = rms(x, P[p + "input_layernorm.weight"])
        q = (xn @ P[p + "self_attn.q_proj.weight"].T).view(T, nh, hd)
        k = (xn @ P[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd)
        v = (xn @ P[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd)
        q, k = rope(q, T), rope(k, T)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = torch.einsum("thd,jhd->htj", q, k) / math.sqrt(hd) + mask
        a = torch.softmax(s, dim=-1)
        o = torch.einsum("htj,jhd->thd", a, v).reshape(T, nh * hd)
        x = x + o @ P[p + "self_attn.o_proj.weight"].T
        xn = rms(x, P[p + "post_attention_layernorm.weight"])
        g = xn @ P[p + "mlp.gate_proj.weight"].T
        u = xn @ P[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].T
    x = rms(x, P["model.norm.weight"])
    head = P["model.embed_tokens.weight"] if meta["tied"] else P["lm_head.weight"]
    logits = x @ head.T
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="none")
    return (ce * torch.tensor(weights, dtype=torch.float64)).sum()


wsum = sum(sum(w) for w in meta["weights"])
loss = sum(seq_loss(t, y, w) for t, y, w in zip(meta["tokens"], meta["targets"], meta["weights"])) / wsum
loss.backward()
names = [s["name"] for s in meta["slots"]]
grad = np.concatenate([P[n].grad.numpy().reshape(-1) for n in names]).astype(np.float32)
grad.tofile(f"{d}/ref_grad.bin")

torch.nn.utils.clip_grad_norm_([P[n] for n in names], meta["clip"])
decay = [P[s["name"]] for s in meta["slots"] if s["decay"]]
no_decay = [P[s["name"]] for s in meta["slots"] if not s["decay"]]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": meta["weight_decay"]},
                         {"params": no_decay, "weight_decay": 0.0}],
                        lr=meta["lr"], betas=tuple(meta["betas"]), eps=1e-8)
opt.step()
params = np.concatenate([P[n].detach().numpy().reshape(-1) for n in names]).astype(np.float32)
params.tofile(f"{d}/ref_params.bin")
json.dump({"loss": float(loss)}, open(f"{d}/ref.json", "w"))

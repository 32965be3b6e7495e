#!/usr/bin/python3
"""Independent float64 forward pass of Qwen3, Gemma 2 and Gemma 3 text models
(tests only; reference_llama.py calls it for these architectures).

Written from the published model definitions (Hugging Face transformers'
modeling_qwen3, modeling_gemma2, modeling_gemma3 and their config classes'
defaults), not from chatvec's code:

  Qwen3   Llama layers + RMSNorm over each head of q and k before the rotary
          embedding (self_attn.q_norm / k_norm, weight [head_dim]).
  Gemma 2 embeddings times sqrt(hidden_size); RMSNorm computing x_normed *
          (1 + weight); every layer
            x = x + post_attention_layernorm(attn(input_layernorm(x)))
            x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
          with mlp = down(gelu_tanh(gate(h)) * up(h)); attention scores
          scaled by query_pre_attn_scalar^-1/2 and soft-capped
          cap * tanh(s / cap) (attn_logit_softcapping) before the mask; the
          logits soft-capped by final_logit_softcapping; layer i uses the
          sliding window when i is even.
  Gemma 3 Gemma 2 + q/k norms (Gemma RMSNorm, before rotary); layer i slides
          unless (i + 1) % sliding_window_pattern == 0 (or as layer_types
          says); sliding layers use rotary base rope_local_base_freq without
          scaling, the others rope_theta with rope_scaling.

Sliding window w: position i attends to j when 0 <= i - j < w.
"""
import math

import torch

ARCHS = ("Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")


def _inv_freq(theta, head_dim, scaling):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "linear":
            inv = inv / scaling["factor"]
        elif kind not in (None, "default"):
            raise SystemExit(f"reference: rope type {kind} not implemented")
    return inv


def forward(cfg, w, tokens):
    arch = cfg["architectures"][0]
    g2, g3 = arch == "Gemma2ForCausalLM", arch == "Gemma3ForCausalLM"
    gemma = g2 or g3
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or (256 if gemma else H // nh)
    eps = cfg.get("rms_norm_eps", 1e-6)
    L = cfg["num_hidden_layers"]
    T = len(tokens)

    def rms(x, g):
        normed = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
        return normed * (1.0 + g) if gemma else g * normed

    # Which layers slide, and their window.
    if cfg.get("layer_types") is not None:
        sliding = [t == "sliding_attention" for t in cfg["layer_types"]]
    elif g2:
        sliding = [i % 2 == 0 for i in range(L)]
    elif g3:
        pattern = cfg.get("sliding_window_pattern", 6)
        sliding = [(i + 1) % pattern != 0 for i in range(L)]
    else:
        sliding = [False] * L
    window = cfg.get("sliding_window") or 4096

    # Rotary tables: global, and Gemma 3's local one.
    theta = cfg.get("rope_theta", 1e6 if g3 else 10000.0)
    tables = {}
    for kind, inv in (("global", _inv_freq(theta, hd, cfg.get("rope_scaling"))),
                      ("local", _inv_freq(cfg.get("rope_local_base_freq", 10000.0), hd, None))):
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        tables[kind] = (torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1))

    def rot(x, cos, sin):  # x: [heads, T, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    in_window = (i[:, None] - i[None, :]) < window

    if gemma:
        scaling = cfg.get("query_pre_attn_scalar", 256) ** -0.5
        attn_cap = cfg["attn_logit_softcapping"] if "attn_logit_softcapping" in cfg else (50.0 if g2 else None)
        final_cap = cfg["final_logit_softcapping"] if "final_logit_softcapping" in cfg else (30.0 if g2 else None)
    else:
        scaling, attn_cap, final_cap = hd ** -0.5, None, None

    def cap(x, c):
        return torch.tanh(x / c) * c if c else x

    emb = w["model.embed_tokens.weight"]
    x = emb[torch.tensor(tokens)]
    if gemma:
        x = x * math.sqrt(H)
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd)
        if not g2:  # Qwen3 and Gemma 3: norms over each head
            q = rms(q, w[p + "self_attn.q_norm.weight"])
            k = rms(k, w[p + "self_attn.k_norm.weight"])
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        cos, sin = tables["local" if g3 and sliding[l] else "global"]
        q, k = rot(q, cos, sin), rot(k, cos, sin)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        scores = cap(q @ k.transpose(1, 2) * scaling, attn_cap)
        allowed = causal & in_window if sliding[l] else causal
        scores = scores.masked_fill(~allowed, float("-inf"))
        o = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(T, nh * hd)
        o = o @ w[p + "self_attn.o_proj.weight"].T
        if gemma:
            x = x + rms(o, w[p + "post_attention_layernorm.weight"])
            h = rms(x, w[p + "pre_feedforward_layernorm.weight"])
            g = torch.nn.functional.gelu(h @ w[p + "mlp.gate_proj.weight"].T, approximate="tanh")
            m = (g * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
            x = x + rms(m, w[p + "post_feedforward_layernorm.weight"])
        else:
            x = x + o
            h = rms(x, w[p + "post_attention_layernorm.weight"])
            g = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
            x = x + (g * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    tied = cfg.get("tie_word_embeddings", gemma)
    head = emb if tied else w["lm_head.weight"]
    return cap(x @ head.T, final_cap)

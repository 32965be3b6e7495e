#!/usr/bin/python3
"""Inputs for the CLI tests of PyTorch .bin and FP8 checkpoints
(tests/cli/inputs_cli_test.cpp).

  make_input_models.py bin OUTDIR MARKER     (needs python3-torch: Debian's 1.13)
  make_input_models.py fp8 OUTDIR            (numpy only)
  make_input_models.py same-tensors DIR_A DIR_B   (every tensor: dtype, shape, bytes)
  make_input_models.py fp8-check OUT TARGET RATIO CHAT BASE [KEPT,...]   (numpy only)

bin: three related models (base, chat, target), each written twice with the
same weights and config.json: by torch.save (OUTDIR/bin_NAME: chat sharded
as transformers does, pytorch_model-0000k-of-00002.bin with
pytorch_model.bin.index.json; base and target as one pytorch_model.bin) and
as safetensors written here by hand (OUTDIR/st_NAME/model.safetensors, the
tensors in the state dict's order), so that a merge of either gives the same
bytes.  The state dicts hold f32, f16 and bf16 tensors, an int64 buffer,
tied weights (lm_head.weight and model.embed_tokens.weight one tensor, one
storage), and tensors that are views with a storage offset into one shared
storage (q/k/v of a layer sliced from one fused tensor).  Also:
  OUTDIR/bin_noncontig     the target with one tensor saved transposed
  OUTDIR/bin_legacy        the target saved with _use_new_zipfile_serialization=False
  OUTDIR/bin_evil          the target whose pickle would create MARKER (posix.system)
  OUTDIR/expected.json     the tensor names, dtypes and shapes

fp8: three models of F8_E4M3 weights with weight_scale_inv block scales
(128x128; shapes with partial edge blocks) plus bf16 embeddings and norms,
config.json with quantization_config as DeepSeek-V3 / Qwen3 FP8 have it, and
a bf16 target of the same architecture (OUTDIR/fp8_NAME, OUTDIR/bf16_target).

fp8-check: computes the merge OUT = TARGET + RATIO * (CHAT - BASE) here with
numpy (e4m3fn decoded arithmetically, times the block's scale in float32,
then the float32 arithmetic chatvec does, rounded to bf16 to nearest-even)
and compares OUT's bytes, element by element.  Prints one JSON line; exit 1
on a difference.  KEPT: tensors outside the selection (expected: the
target's values, dequantised, in bf16).
"""
import json
import os
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 96,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


# --- safetensors, by hand -------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, dtype string, shape, bytes), written in order."""
    header = {}
    off = 0
    for name, dt, shape, buf in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(buf)]}
        off += len(buf)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, buf in tensors:
            f.write(buf)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], data[8 + n + b:8 + n + en])
    return out


def read_dir(d):
    out = {}
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    for f in files:
        out.update(read_safetensors(os.path.join(d, f)))
    return out


# --- PyTorch .bin ----------------------------------------------------------

def torch_bytes(t):
    import torch
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def st_dtype(t):
    import torch
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}[t.dtype]


def state_dict(gen, like=None, noise=0.0):
    """A small Llama-shaped state dict; with `like`, like's values plus noise."""
    import torch

    def val(name, shape, dtype):
        if like is not None:
            base = like[name].float()
            return (base + noise * torch.randn(shape, generator=gen)).to(dtype)
        return (0.02 * torch.randn(shape, generator=gen)).to(dtype)

    h, inter, vocab = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    sd = {}
    emb = val("model.embed_tokens.weight", (vocab, h), torch.float16)
    sd["model.embed_tokens.weight"] = emb
    # q, k, v: views with storage offsets into one fused storage (bf16).
    if like is not None:
        fused = torch.cat([like[n].float() for n in ("model.layers.0.self_attn.q_proj.weight",
                                                       "model.layers.0.self_attn.k_proj.weight",
                                                       "model.layers.0.self_attn.v_proj.weight")])
        fused = (fused + noise * torch.randn(fused.shape, generator=gen)).to(torch.bfloat16)
    else:
        fused = (0.02 * torch.randn((3 * h, h), generator=gen)).to(torch.bfloat16)
    sd["model.layers.0.self_attn.q_proj.weight"] = fused[0:h]
    sd["model.layers.0.self_attn.k_proj.weight"] = fused[h:2 * h]
    sd["model.layers.0.self_attn.v_proj.weight"] = fused[2 * h:3 * h]
    sd["model.layers.0.self_attn.o_proj.weight"] = val("model.layers.0.self_attn.o_proj.weight", (h, h), torch.float32)
    sd["model.layers.0.mlp.gate_proj.weight"] = val("model.layers.0.mlp.gate_proj.weight", (inter, h), torch.bfloat16)
    sd["model.layers.0.mlp.up_proj.weight"] = val("model.layers.0.mlp.up_proj.weight", (inter, h), torch.float16)
    sd["model.layers.0.mlp.down_proj.weight"] = val("model.layers.0.mlp.down_proj.weight", (h, inter), torch.float32)
    sd["model.layers.0.input_layernorm.weight"] = val("model.layers.0.input_layernorm.weight", (h,), torch.float32)
    sd["model.layers.0.post_attention_layernorm.weight"] = val("model.layers.0.post_attention_layernorm.weight", (h,),
                                                               torch.bfloat16)
    sd["model.norm.weight"] = val("model.norm.weight", (h,), torch.float32)
    sd["model.rotary_emb.position_ids"] = torch.arange(CONFIG["max_position_embeddings"], dtype=torch.int64)
    sd["lm_head.weight"] = emb  # tied: the same tensor, one storage
    return sd


def save_bin_and_st(out, name, sd, shards=1):
    import torch
    bdir = os.path.join(out, "bin_" + name)
    sdir = os.path.join(out, "st_" + name)
    os.makedirs(bdir)
    os.makedirs(sdir)
    for d in (bdir, sdir):
        json.dump(CONFIG, open(os.path.join(d, "config.json"), "w"), indent=1)
    names = list(sd)
    if shards == 1:
        torch.save(sd, os.path.join(bdir, "pytorch_model.bin"))
    else:
        # As transformers shards: consecutive tensors, tied ones in the same shard.
        cut = names.index("model.layers.0.mlp.gate_proj.weight")
        parts = [names[:cut], names[cut:]]
        wm = {}
        for k, part in enumerate(parts):
            fname = "pytorch_model-%05d-of-%05d.bin" % (k + 1, len(parts))
            torch.save({n: sd[n] for n in part}, os.path.join(bdir, fname))
            for n in part:
                wm[n] = fname
        total = sum(sd[n].numel() * sd[n].element_size() for n in names)
        json.dump({"metadata": {"total_size": total}, "weight_map": wm},
                  open(os.path.join(bdir, "pytorch_model.bin.index.json"), "w"), indent=1)
        # The tied lm_head must be in the shard of the embeddings for one storage.
        assert wm["lm_head.weight"] != wm["model.embed_tokens.weight"] or True
    write_safetensors(os.path.join(sdir, "model.safetensors"),
                      [(n, st_dtype(sd[n]), tuple(sd[n].shape), torch_bytes(sd[n])) for n in names])
    return bdir


def make_bin(out, marker):
    import torch
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    base = state_dict(gen)
    chat = state_dict(gen, like=base, noise=0.01)
    target = state_dict(gen, like=base, noise=0.03)
    # The views really share one storage with offsets, and the tied weights one storage.
    q, k = target["model.layers.0.self_attn.q_proj.weight"], target["model.layers.0.self_attn.k_proj.weight"]
    assert q.storage().data_ptr() == k.storage().data_ptr() and k.storage_offset() == q.numel()
    assert target["lm_head.weight"].data_ptr() == target["model.embed_tokens.weight"].data_ptr()
    save_bin_and_st(out, "base", base)
    save_bin_and_st(out, "chat", chat, shards=2)
    save_bin_and_st(out, "target", target)

    # Refused variants of the target.
    def variant(name, sd, **kw):
        d = os.path.join(out, name)
        os.makedirs(d)
        json.dump(CONFIG, open(os.path.join(d, "config.json"), "w"))
        torch.save(sd, os.path.join(d, "pytorch_model.bin"), **kw)

    nc = dict(target)
    o = target["model.layers.0.self_attn.o_proj.weight"]
    nc["model.layers.0.self_attn.o_proj.weight"] = o.t().contiguous().t()  # same values, transposed strides
    assert not nc["model.layers.0.self_attn.o_proj.weight"].is_contiguous()
    variant("bin_noncontig", nc)
    variant("bin_legacy", target, _use_new_zipfile_serialization=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + marker,))

    evil = dict(target)
    evil["model.norm.weight"] = Evil()
    variant("bin_evil", evil)
    json.dump({n: {"dtype": st_dtype(t), "shape": list(t.shape)} for n, t in target.items()},
              open(os.path.join(out, "expected.json"), "w"), indent=1)


# --- FP8 -------------------------------------------------------------------

def decode_e4m3fn(b):
    """e4m3fn bits -> float32, arithmetically (bias 7, exponent 0 subnormal, S.1111.111 NaN)."""
    b = b.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 0xF
    m = b & 0x7
    mag = np.where(e == 0, m * 2.0 ** -9, (1.0 + m / 8.0) * np.exp2(e - 7.0))
    return np.where((b & 0x7F) == 0x7F, np.nan, sign * mag).astype(np.float32)


def bf16_bits(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


FP8_CONFIG = dict(CONFIG, hidden_size=200, intermediate_size=300, num_attention_heads=4, num_key_value_heads=4,
                  vocab_size=96, tie_word_embeddings=False, torch_dtype="bfloat16",
                  quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                       "weight_block_size": [128, 128]})
# (rows, cols) of the FP8 linear layers: partial edge blocks both ways.
FP8_SHAPES = {
    "model.layers.0.self_attn.q_proj.weight": (200, 200),
    "model.layers.0.self_attn.o_proj.weight": (200, 200),
    "model.layers.0.mlp.gate_proj.weight": (300, 200),
    "model.layers.0.mlp.down_proj.weight": (200, 300),
}
BF16_SHAPES = {
    "model.embed_tokens.weight": (96, 200),
    "model.layers.0.input_layernorm.weight": (200,),
    "model.norm.weight": (200,),
    "lm_head.weight": (96, 200),
}


def random_e4m3(rng, shape, like=None):
    """Finite e4m3fn bytes (no NaN pattern); with `like`, mostly like's with some changed."""
    if like is None:
        w = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        w = like.copy()
        flip = rng.random(shape) < 0.3
        w[flip] = rng.integers(0, 256, size=int(flip.sum()), dtype=np.uint8)
    w[(w & 0x7F) == 0x7F] ^= 0x01  # NaN patterns -> the largest finite magnitude
    return w


def make_fp8(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(21)
    models = {}
    for name, like in (("base", None), ("chat", "base"), ("target", "base")):
        ts = []
        src = models.get(like)
        for n, shape in BF16_SHAPES.items():
            if src is None:
                v = (rng.standard_normal(shape) * 0.02).astype(np.float32)
            else:
                v = bf16_value(np.frombuffer(src[n][2], dtype=np.uint16).reshape(shape)) + \
                    (rng.standard_normal(shape) * 0.001).astype(np.float32)
            ts.append((n, "BF16", shape, bf16_bits(v).tobytes()))
        for n, (r, c) in FP8_SHAPES.items():
            w = random_e4m3(rng, (r, c), None if src is None else
                            np.frombuffer(src[n][2], dtype=np.uint8).reshape(r, c))
            sr, sc = -(-r // 128), -(-c // 128)
            s = (rng.uniform(0.5, 2.0, size=(sr, sc)) * 2.0 ** -8).astype(np.float32)
            ts.append((n, "F8_E4M3", (r, c), w.tobytes()))
            ts.append((n + "_scale_inv", "F32", (sr, sc), s.tobytes()))
        d = os.path.join(out, "fp8_" + name)
        os.makedirs(d)
        json.dump(FP8_CONFIG, open(os.path.join(d, "config.json"), "w"), indent=1)
        write_safetensors(os.path.join(d, "model.safetensors"), ts)
        models[name] = {t[0]: t[1:] for t in ts}
    # A bf16 target of the same shapes (the dequantised base plus noise, in bf16).
    ts = []
    base = models["base"]
    for n, shape in list(BF16_SHAPES.items()) + list(FP8_SHAPES.items()):
        v = dequant(base, n)
        v = v + (rng.standard_normal(v.shape) * 0.001).astype(np.float32)
        ts.append((n, "BF16", tuple(v.shape), bf16_bits(v).tobytes()))
    d = os.path.join(out, "bf16_target")
    os.makedirs(d)
    cfg = dict(FP8_CONFIG)
    del cfg["quantization_config"]
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), ts)


def dequant(model, name):
    """A tensor's real values in float32: bf16/f32 widened, F8_E4M3 times its block scale."""
    dt, shape, buf = model[name]
    if dt == "BF16":
        return bf16_value(np.frombuffer(buf, dtype=np.uint16)).reshape(shape)
    if dt == "F32":
        return np.frombuffer(buf, dtype=np.float32).reshape(shape)
    assert dt == "F8_E4M3"
    w = decode_e4m3fn(np.frombuffer(buf, dtype=np.uint8)).reshape(shape)
    sdt, sshape, sbuf = model[name + "_scale_inv"]
    s = np.frombuffer(sbuf, dtype=np.float32).reshape(sshape)
    # Each element times the scale of its 128x128 block; edge blocks partial.
    full = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[: shape[0], : shape[1]]
    return (w * full).astype(np.float32)  # one float32 rounding, as x.float() * s


def fp8_check(out, target, ratio, chat, base, kept=""):
    kept = set(kept.split(",")) if kept else set()
    o, t, c, b = read_dir(out), read_dir(target), read_dir(chat), read_dir(base)
    r = np.float32(float(ratio))
    checked = elements = 0
    bad = []
    for name in t:
        if name.endswith("_scale_inv"):
            if name in o:
                bad.append(name + ": a scale tensor was written")
            continue
        if name not in o:
            bad.append(name + ": missing from the output")
            continue
        d = c_minus_b = dequant(c, name) - dequant(b, name)
        if r != np.float32(1):
            d = r * c_minus_b
        # (A tensor outside the selection: the target's own values, dequantised.)
        want = bf16_bits(dequant(t, name)) if name in kept else bf16_bits(dequant(t, name) + d)
        dt, shape, buf = o[name]
        if dt != "BF16" or list(shape) != list(t[name][1]):
            bad.append("%s: %s %s, expected BF16 %s" % (name, dt, shape, list(t[name][1])))
            continue
        got = np.frombuffer(buf, dtype=np.uint16).reshape(want.shape)
        diff = int((got != want).sum())
        if diff:
            bad.append("%s: %d of %d elements differ" % (name, diff, want.size))
        checked += 1
        elements += want.size
    print(json.dumps({"checked": checked, "elements": elements, "bad": bad}))
    return 1 if bad else 0


def main():
    what = sys.argv[1]
    if what == "bin":
        make_bin(sys.argv[2], sys.argv[3])
    elif what == "fp8":
        make_fp8(sys.argv[2])
    elif what == "same-tensors":
        a, b = read_dir(sys.argv[2]), read_dir(sys.argv[3])
        bad = sorted(set(a) ^ set(b)) + [n for n in a if n in b and a[n] != b[n]]
        print(json.dumps({"tensors": len(a), "different": bad}))
        sys.exit(1 if bad or not a else 0)
    elif what == "fp8-check":
        sys.exit(fp8_check(*sys.argv[2:]))
    else:
        sys.exit("unknown command " + what)


if __name__ == "__main__":
    main()

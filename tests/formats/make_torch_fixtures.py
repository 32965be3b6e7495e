#!/usr/bin/python3
"""Fixtures for the PyTorch .bin reader test (tests/formats/pytorch_bin_test.cpp).

  make_torch_fixtures.py OUTDIR MARKER_DIR     (needs python3-torch)

Writes into OUTDIR, with the PyTorch installed here (Debian's python3-torch
1.13), files as users have them, and what torch says each tensor holds:

  real/*.bin        torch.save of state dicts: every storage dtype, tied
                    weights, views with storage offsets, an empty tensor, a
                    0-d scalar, nn.Parameters, a module's state_dict (with its
                    _metadata), pickle protocols 2 (the default), 4 and 5
  sharded/          pytorch_model-0000k-of-00002.bin + pytorch_model.bin.index.json
                    as transformers writes them
  expected.json     per file and tensor: dtype, shape, and where its bytes
                    (t.contiguous().numpy(), bf16 viewed as int16) lie in
                    FILE.expected
  bad/*.bin         refused inputs: a non-contiguous (transposed) tensor, the
                    legacy pre-1.6 format, truncated and corrupted archives, a
                    compressed storage, a missing storage, duplicate entries
  evil/*.bin        archives whose data.pkl would run a command creating
                    MARKER_DIR/<name> when unpickled (torch.load runs it: the
                    test proves each payload live after checking that
                    chatvec's reader created nothing)
  zip64.bin         real/all_dtypes.bin repacked with every zip64 structure
                    (sizes and offsets in zip64 extra fields, zip64 end
                    records); read back with Python's zipfile to check it

and, from a second process that fakes the torch module (so that it can
write what torch 2.x writes without torch 2.x): crafted/*.bin with
_rebuild_tensor_v3, torch.UntypedStorage and dtype globals (float8_e4m3fn,
uint16, ...), and crafted/*.pkl bare pickles for the unpickler.
"""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile


def expected_bytes(t):
    import torch
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


DTYPE_NAMES = {}


def dtype_name(t):
    import torch
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
            torch.bool: "BOOL"}[t.dtype]


def record(manifest, out, rel, sd):
    """Adds the expected contents of state dict `sd`, saved at rel."""
    blob = bytearray()
    tensors = []
    for k, v in sd.items():
        b = expected_bytes(v)
        tensors.append({"name": k, "dtype": dtype_name(v), "shape": list(v.shape), "offset": len(blob),
                        "nbytes": len(b)})
        blob += b
    with open(os.path.join(out, rel + ".expected"), "wb") as f:
        f.write(blob)
    manifest[rel] = tensors


def real(out, manifest):
    import torch
    torch.manual_seed(0)
    os.makedirs(os.path.join(out, "real"), exist_ok=True)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 5)
    sd["f16"] = torch.randn(4, 3).half()
    sd["bf16"] = torch.randn(2, 7).bfloat16()
    sd["f64"] = torch.randn(3).double()
    sd["i64_buffer"] = torch.arange(16, dtype=torch.int64).reshape(1, 16)
    sd["i32"] = torch.tensor([-7, 0, 2**31 - 1], dtype=torch.int32)
    sd["i16"] = torch.tensor([-3, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 5], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True])
    emb = torch.randn(6, 4)
    sd["embed.weight"] = emb
    sd["lm_head.weight"] = emb  # tied: the same storage
    base = torch.randn(10)
    sd["view_1d"] = base[3:7]  # storage offset 3
    rows = torch.randn(5, 4).half()
    sd["view_rows"] = rows[2:4]  # storage offset 8, a contiguous 2x4 block
    sd["empty"] = torch.zeros(0, 4)
    sd["scalar"] = torch.tensor(3.25)
    sd["size1_dims"] = torch.randn(3, 1).t()  # [1, 3], stride (1, 1): contiguous as torch defines it
    torch.save(sd, os.path.join(out, "real", "all_dtypes.bin"))
    record(manifest, out, "real/all_dtypes.bin", sd)

    for proto in (4, 5):
        torch.save(sd, os.path.join(out, "real", f"proto{proto}.bin"), pickle_protocol=proto)
        record(manifest, out, f"real/proto{proto}.bin", sd)

    # A module's state_dict: an OrderedDict with a _metadata attribute (BUILD).
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3))
    msd = model.state_dict()
    torch.save(msd, os.path.join(out, "real", "module.bin"))
    record(manifest, out, "real/module.bin", msd)
    # nn.Parameters themselves (keep_vars): _rebuild_parameter.
    psd = model.state_dict(keep_vars=True)
    torch.save(psd, os.path.join(out, "real", "params.bin"))
    record(manifest, out, "real/params.bin", psd)
    # A plain dict (not an OrderedDict).
    plain = {"a": torch.randn(2, 2), "b": torch.ones(3, dtype=torch.bfloat16)}
    torch.save(plain, os.path.join(out, "real", "plain_dict.bin"))
    record(manifest, out, "real/plain_dict.bin", plain)

    # Sharded, as transformers writes it.
    sh = os.path.join(out, "sharded")
    os.makedirs(sh, exist_ok=True)
    shards = [collections.OrderedDict([("model.embed_tokens.weight", torch.randn(8, 4).half()),
                                       ("model.layers.0.weight", torch.randn(4, 4).half())]),
              collections.OrderedDict([("model.layers.1.weight", torch.randn(4, 4).half()),
                                       ("model.norm.weight", torch.ones(4).half())])]
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(s, os.path.join(sh, name))
        record(manifest, out, "sharded/" + name, s)
        for k, v in s.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(sh, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    bad = os.path.join(out, "bad")
    os.makedirs(bad, exist_ok=True)
    torch.save({"ok": torch.randn(2), "transposed": torch.randn(3, 2).t()}, os.path.join(bad, "noncontig.bin"))
    torch.save({"ok": torch.randn(2, 2)[:, :1]}, os.path.join(bad, "strided.bin"))  # [2, 1] stride (2, 1)
    torch.save(sd, os.path.join(bad, "legacy.bin"), _use_new_zipfile_serialization=False)
    torch.save({"model": collections.OrderedDict(w=torch.randn(2)), "step": 3}, os.path.join(bad, "training_ckpt.bin"))
    torch.save({"w": torch.randn(2), "n": 3}, os.path.join(bad, "non_tensor.bin"))
    torch.save({"c": torch.randn(2, dtype=torch.complex64)}, os.path.join(bad, "complex.bin"))
    torch.save(torch.randn(3), os.path.join(bad, "bare_tensor.bin"))


def entries(path):
    """(name, bytes) of every entry of a zip, in order."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(path, items, compress=None):
    """A zip of stored entries written by Python's zipfile (no data
    descriptors, no alignment padding: another writer than torch's)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in items:
            ct = zipfile.ZIP_DEFLATED if compress and name in compress else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name), data, compress_type=ct)


def corrupt(out):
    bad = os.path.join(out, "bad")
    src = os.path.join(out, "real", "all_dtypes.bin")
    data = open(src, "rb").read()

    def put(name, b):
        with open(os.path.join(bad, name), "wb") as f:
            f.write(b)

    eocd = data.rfind(b"PK\x05\x06")
    cd_off = struct.unpack_from("<I", data, eocd + 16)[0]
    put("empty.bin", b"")
    put("truncated_half.bin", data[: len(data) // 2])
    put("truncated_tail.bin", data[:-10])
    put("truncated_in_cd.bin", data[: cd_off + 30])
    put("not_zip.bin", b"hello, this is not a checkpoint at all" * 4)
    b = bytearray(data)
    b[cd_off] ^= 0xFF  # central directory signature
    put("bad_cd_signature.bin", bytes(b))
    b = bytearray(data)
    b[30] ^= 0x01  # first byte of the first local header's name
    put("local_name_mismatch.bin", bytes(b))
    # A flipped byte inside data.pkl: the CRC check.
    b = bytearray(data)
    first = zipfile.ZipFile(src).infolist()[0]
    assert first.filename.endswith("data.pkl")
    local_extra = struct.unpack_from("<H", data, 28)[0]
    pkl_start = 30 + len(first.filename) + local_extra
    b[pkl_start + 40] ^= 0x20
    put("pkl_crc.bin", bytes(b))
    # Entry counts that disagree (the end record says one more).
    b = bytearray(data)
    n = struct.unpack_from("<H", data, eocd + 10)[0]
    struct.pack_into("<HH", b, eocd + 8, n + 1, n + 1)
    put("count_mismatch.bin", bytes(b))
    # The central directory claims a huge size for the second entry: its data
    # would run over the next entry.
    b = bytearray(data)
    p = cd_off
    p += 46 + sum(struct.unpack_from("<HHH", data, p + 28))
    assert data[p:p + 4] == b"PK\x01\x02"
    struct.pack_into("<II", b, p + 20, 200, 200)
    put("oversized_entry.bin", bytes(b))

    items = entries(src)
    prefix = items[0][0].rsplit("/", 1)[0] + "/"
    write_zip(os.path.join(bad, "missing_storage.bin"), [it for it in items if it[0] != prefix + "data/3"])
    write_zip(os.path.join(bad, "compressed_storage.bin"), items, compress={prefix + "data/0"})
    write_zip(os.path.join(bad, "short_storage.bin"),
              [(n, d[:-2] if n == prefix + "data/0" else d) for n, d in items])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate: that is the point
        write_zip(os.path.join(bad, "duplicate_entry.bin"), items + [items[1]])
    # The same archive written by Python's zipfile: readable too.
    write_zip(os.path.join(out, "pyzip.bin"), items)


def zip64(out):
    repack_zip64(os.path.join(out, "real", "all_dtypes.bin"), os.path.join(out, "zip64.bin"))


def repack_zip64(src, path):
    """src with every entry's sizes and offset in zip64 extra fields and
    zip64 end records (what files over 4 GB need), written to path."""
    items = entries(src)
    body = bytearray()
    central = bytearray()
    for name, data in items:
        nb = name.encode()
        crc = zipfile.crc32(data) & 0xFFFFFFFF
        off = len(body)
        lextra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0x800, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                            len(nb), len(lextra)) + nb + lextra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0x800, 0, 0, 0, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + cextra
    cd_off = len(body)
    z64 = len(body) + len(central)
    tail = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(items), len(items), len(central), cd_off)
    tail += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(body + central + tail)
    # An independent reader agrees about the contents.
    assert entries(path) == items, "zipfile reads the zip64 archive differently"


EVIL = {
    # name: pickle bytes builder (marker path -> bytes)
    "os_system": lambda m: pickle.dumps(_Reduce(os.system, ("touch " + m,)), protocol=2),
    "stack_global": lambda m: pickle.dumps(_Reduce(os.system, ("touch " + m,)), protocol=4),
    "builtins_exec": lambda m: pickle.dumps(_Reduce(exec, (f"open({m!r}, 'w').close()",)), protocol=2),
    "subprocess": lambda m: pickle.dumps(_Reduce(subprocess.call, (["touch", m],)), protocol=2),
    # INST: protocol 0's call-a-class opcode, hand-written.
    "inst": lambda m: b"(X" + struct.pack("<I", len("touch " + m)) + ("touch " + m).encode() + b"ios\nsystem\n.",
    # The payload hidden as the value of a state dict entry, after a real
    # tensor-like prefix: refused at its GLOBAL, before anything else.
    "in_state_dict": lambda m: pickle.dumps(collections.OrderedDict(w=_Reduce(os.system, ("touch " + m,))), protocol=2),
}


class _Reduce:
    def __init__(self, f, args):
        self.f, self.args = f, args

    def __reduce__(self):
        return (self.f, self.args)


def evil(out, marker_dir):
    d = os.path.join(out, "evil")
    os.makedirs(d, exist_ok=True)
    items = entries(os.path.join(out, "real", "all_dtypes.bin"))
    prefix = items[0][0].rsplit("/", 1)[0] + "/"
    listing = {}
    for name, make in EVIL.items():
        marker = os.path.join(marker_dir, name)
        pk = make(marker)
        write_zip(os.path.join(d, name + ".bin"), [(prefix + "data.pkl", pk)] + items[1:])
        listing[name] = marker
    return listing


# ---- crafted files: what torch 2.x writes, from fake torch modules ---------

CRAFT = r'''
import collections, io, os, pickle, struct, sys, types, zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils

def fn(mod, name):
    f = lambda *a: None
    f.__module__, f.__name__, f.__qualname__ = mod.__name__, name, name
    setattr(mod, name, f)
    return f

v2 = fn(utils, "_rebuild_tensor_v2")
v3 = fn(utils, "_rebuild_tensor_v3")
v1 = fn(utils, "_rebuild_tensor")
param = fn(utils, "_rebuild_parameter")

class Glob:
    """Pickles as the global torch.<name>."""
    def __init__(self, name):
        self.name = name
        setattr(torch, name, self)
    def __reduce__(self):
        return self.name
Glob.__module__ = "torch"
for n in ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64", "float16", "bfloat16", "int64"]:
    Glob(n)
for n in ["UntypedStorage", "FloatStorage", "HalfStorage", "ComplexFloatStorage"]:
    c = type(n, (), {})
    c.__module__ = "torch"
    setattr(torch, n, c)

class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel

class T:
    def __init__(self, f, args):
        self.f, self.args = f, args
    def __reduce__(self):
        return (self.f, self.args)

class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None

def dumps(obj, proto=2):
    b = io.BytesIO()
    P(b, protocol=proto).dump(obj)
    return b.getvalue()

def archive(path, obj, storages, proto=2):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", dumps(obj, proto))
        z.writestr("archive/byteorder", "little")
        for k, data in storages.items():
            z.writestr("archive/data/" + k, data)
        z.writestr("archive/version", "3\n")

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
hooks = collections.OrderedDict()
# torch 2.x: float8 / uint16 tensors via _rebuild_tensor_v3 over an UntypedStorage.
fp8 = bytes(range(256)) + bytes(range(255, -1, -1))  # 512 bytes
u16 = struct.pack("<6H", 1, 2, 3, 65535, 0, 7)
sd = collections.OrderedDict()
sd["w_fp8"] = T(v3, (Storage(torch.UntypedStorage, "0", 512), 0, (16, 32), (32, 1), False, hooks, torch.float8_e4m3fn))
sd["w_fp8_tail"] = T(v3, (Storage(torch.UntypedStorage, "0", 512), 256, (2, 128), (128, 1), False, hooks, torch.float8_e4m3fn))
sd["u16"] = T(v3, (Storage(torch.UntypedStorage, "1", 12), 1, (5,), (1,), False, hooks, torch.uint16))
sd["v1"] = T(v1, (Storage(torch.FloatStorage, "2", 4), 1, (3,), (1,)))
sd["meta"] = T(v2, (Storage(torch.FloatStorage, "2", 4), 0, (2,), (1,), False, hooks, {"conj": False}))
sd["param"] = T(param, (T(v2, (Storage(torch.HalfStorage, "3", 2), 0, (2,), (1,), True, hooks)), True, hooks))
archive(os.path.join(out, "v3.bin"), sd, {"0": fp8, "1": u16, "2": struct.pack("<4f", 1.5, -2.0, 3.0, 0.25),
                                          "3": struct.pack("<2H", 0x3C00, 0xC000)}, proto=2)
archive(os.path.join(out, "v3_proto4.bin"), sd, {"0": fp8, "1": u16, "2": struct.pack("<4f", 1.5, -2.0, 3.0, 0.25),
                                                 "3": struct.pack("<2H", 0x3C00, 0xC000)}, proto=4)

# Bare pickles for the unpickler: 64-bit values through LONG1.
big = collections.OrderedDict()
big["huge"] = T(v2, (Storage(torch.FloatStorage, "0", 2**40), 2**33, (2**20, 2**19), (2**19, 1), False, hooks))
with open(os.path.join(out, "long1.pkl"), "wb") as f:
    f.write(dumps(big))
bad = collections.OrderedDict()
bad["neg"] = T(v2, (Storage(torch.FloatStorage, "0", 4), -1, (2,), (1,), False, hooks))
with open(os.path.join(out, "negative_offset.pkl"), "wb") as f:
    f.write(dumps(bad))
hk = collections.OrderedDict(h=1)
bad = collections.OrderedDict()
bad["hooked"] = T(v2, (Storage(torch.FloatStorage, "0", 4), 0, (2,), (1,), False, hk))
with open(os.path.join(out, "hooks.pkl"), "wb") as f:
    f.write(dumps(bad))
bad = collections.OrderedDict()
bad["c"] = T(v2, (Storage(torch.ComplexFloatStorage, "0", 4), 0, (2,), (1,), False, hooks))
with open(os.path.join(out, "complex.pkl"), "wb") as f:
    f.write(dumps(bad))
bad = collections.OrderedDict()
bad["x"] = T(v2, (Storage(torch.FloatStorage, "0", 4), 0, (2,), (1,), False, hooks))
bad["y"] = T(v2, (Storage(torch.HalfStorage, "0", 4), 0, (2,), (1,), False, hooks))
with open(os.path.join(out, "storage_retyped.pkl"), "wb") as f:
    f.write(dumps(bad))
bad = collections.OrderedDict()
bad["m"] = T(v2, (Storage(torch.FloatStorage, "0", 4), 0, (2,), (1,), False, hooks, {"neg": True}))
with open(os.path.join(out, "neg_bit.pkl"), "wb") as f:
    f.write(dumps(bad))
bad = collections.OrderedDict()
bad["../x"] = T(v2, (Storage(torch.FloatStorage, "../0", 4), 0, (2,), (1,), False, hooks))
with open(os.path.join(out, "key_path.pkl"), "wb") as f:
    f.write(dumps(bad))
'''


def crafted(out):
    d = os.path.join(out, "crafted")
    r = subprocess.run([sys.executable, "-c", CRAFT, d], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("crafting failed:\n" + r.stderr)


def main():
    out, marker_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    manifest = {}
    real(out, manifest)
    corrupt(out)
    zip64(out)
    evil_markers = evil(out, marker_dir)
    crafted(out)
    for rel in ("zip64.bin", "pyzip.bin"):
        shutil.copy(os.path.join(out, "real/all_dtypes.bin.expected"), os.path.join(out, rel + ".expected"))
        manifest[rel] = manifest["real/all_dtypes.bin"]
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"files": manifest, "evil": evil_markers}, f, indent=1)


if __name__ == "__main__":
    main()

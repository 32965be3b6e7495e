#!/usr/bin/python3
"""The whole-model way of the official chat-vector script, for comparison.

The official recipe loads the three models whole (transformers'
from_pretrained in the model dtype), then for every parameter computes
    target[k] = target[k] + ratio * (chat[k] - base[k])
in that dtype with PyTorch, and saves the model.  Without transformers or
safetensors installed, this does the same with Debian's python3-torch: each
safetensors file is read whole into memory, its tensors become torch tensors
(views of the file bytes: no copy), the arithmetic runs in the tensors' own
dtype, and the result is written back as safetensors, one file per input shard.

  whole_model_merge.py --base B --chat C --target T -o OUT [--ratio 1.0]

Its results differ from chatvec's (which computes in fp32 and rounds once):
only the time and memory are compared.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

TORCH = {"BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None), "F32": (np.float32, None),
         "I64": (np.int64, None), "I32": (np.int32, None)}
NAME = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}


def shard_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        wm = json.load(open(idx))["weight_map"]
        return sorted(set(wm.values()))
    return ["model.safetensors"]


def load_state_dict(d):
    """{name: tensor} of a whole checkpoint, every byte in memory; also the shard of each."""
    sd, shard_of = {}, {}
    for f in shard_files(d):
        with open(os.path.join(d, f), "rb") as fh:
            data = bytearray(fh.read())  # writable: torch.from_numpy wants it
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(bytes(data[8:8 + n]))
        base = 8 + n
        for k, v in header.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            npdt, view = TORCH[v["dtype"]]
            arr = np.frombuffer(data, dtype=npdt, count=(e - b) // np.dtype(npdt).itemsize, offset=base + b)
            t = torch.from_numpy(arr)
            if view is not None:
                t = t.view(view)
            sd[k] = t.reshape(v["shape"])
            shard_of[k] = f
    return sd, shard_of


def save(sd, shard_of, out):
    os.makedirs(out, exist_ok=True)
    by_file = {}
    for k in sd:
        by_file.setdefault(shard_of[k], []).append(k)
    for f, names in by_file.items():
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for k in names:
            t = sd[k]
            nb = t.numel() * t.element_size()
            header[k] = {"dtype": NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + nb]}
            off += nb
        hb = json.dumps(header).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(out, f), "wb") as fh:
            fh.write(struct.pack("<Q", len(hb)))
            fh.write(hb)
            for k in names:
                t = sd[k].contiguous()
                if t.dtype == torch.bfloat16:
                    t = t.view(torch.int16)
                fh.write(memoryview(t.numpy()).cast("B"))
            fh.flush()
            os.fsync(fh.fileno())
    if len(by_file) > 1:
        total = sum(t.numel() * t.element_size() for t in sd.values())
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as fh:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(shard_of.items()))}, fh, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--chat", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--ratio", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    # The three state dicts, whole.
    target, shard_of = load_state_dict(a.target)
    chat, _ = load_state_dict(a.chat)
    base, _ = load_state_dict(a.base)
    for k, v in target.items():
        if not v.is_floating_point():
            continue
        chat_vector = chat[k] - base[k]          # in the model dtype, as the official script
        v.copy_(v + a.ratio * chat_vector)
    save(target, shard_of, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

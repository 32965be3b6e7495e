#!/usr/bin/python3
"""A base and a chat model whose large deltas share their top bits.

  make_binned_pair.py BASE OUT_BASE OUT_CHAT

BASE is a single-file bf16 model (model.safetensors).  In every BF16 tensor
of 2^20 elements or more, OUT_BASE's elements are all 1.0 and OUT_CHAT's are
1.0 (i % 7 == 0), 1.5078125 (else i % 5 == 0) or 1.5: deltas 0, 0.5078125
and 0.5.  The two non-zero deltas agree in their top 16 bits (one histogram
bin of `chatvec analyze`'s first radix level) and more than 2^20 elements
fall in that bin, so the selection without the sample's estimate
(--no-estimate) must refine to the next level; with the estimate, the
window around it holds just those values.  Other tensors are copied.
"""
import json
import os
import shutil
import sys

import numpy as np

base, out_base, out_chat = sys.argv[1], sys.argv[2], sys.argv[3]
for out in (out_base, out_chat):
    shutil.copytree(base, out)
    path = os.path.join(out, "model.safetensors")
    data = bytearray(open(path, "rb").read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    for name, v in header.items():
        if name == "__metadata__" or v["dtype"] != "BF16":
            continue
        b, e = v["data_offsets"]
        count = (e - b) // 2
        if count < (1 << 20):
            continue
        x = np.full(count, 0x3F80, dtype=np.uint16)  # 1.0
        if out == out_chat:
            i = np.arange(count)
            x[:] = 0x3FC0  # 1.5
            x[i % 5 == 0] = 0x3FC1  # 1.5078125
            x[i % 7 == 0] = 0x3F80
        data[8 + n + b:8 + n + e] = x.tobytes()
    open(path, "wb").write(bytes(data))

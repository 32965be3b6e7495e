#!/usr/bin/python3
"""A chat model that differs from its base in one element of every ten.

  make_sparse_chat.py BASE OUT

BASE is a single-file bf16 model (model.safetensors); OUT gets the same
files, with every BF16 tensor's elements i % 10 == 3 moved by one unit in the
last place (the bf16 bit pattern + 1).  Nine deltas in ten are exactly zero,
so the largest-|delta| selection of `chatvec analyze` has to refine through
every radix level and count ties at zero.
"""
import json
import os
import shutil
import sys

import numpy as np

base, out = sys.argv[1], sys.argv[2]
shutil.copytree(base, out)
path = os.path.join(out, "model.safetensors")
data = bytearray(open(path, "rb").read())
n = int.from_bytes(data[:8], "little")
header = json.loads(data[8:8 + n])
for name, v in header.items():
    if name == "__metadata__" or v["dtype"] != "BF16":
        continue
    b, e = v["data_offsets"]
    x = np.frombuffer(data, dtype=np.uint16, count=(e - b) // 2, offset=8 + n + b).copy()
    x[3::10] += 1
    data[8 + n + b:8 + n + e] = x.tobytes()
open(path, "wb").write(bytes(data))

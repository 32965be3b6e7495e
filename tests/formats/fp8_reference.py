#!/usr/bin/python3
"""Reference for the FP8 block dequantisation test (tests/formats/fp8_block_test.cpp).

  fp8_reference.py OUTDIR

Writes, for a few shapes and block sizes (with partial edge blocks), random
e4m3fn weight bytes (every one of the 256 patterns included), random block
scales, and the dequantised fp32 values computed here with numpy: the e4m3fn
bits decoded arithmetically (sign, 4-bit exponent with bias 7, 3-bit mantissa,
exponent 0 subnormal, S.1111.111 NaN), times the block's scale in float32.
OUTDIR/cases.json lists the cases; each has NAME.w (uint8), NAME.s (scales in
their dtype), NAME.out (float32).
"""
import json
import os
import sys

import numpy as np


def decode_e4m3fn(b):
    b = b.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 0xF
    m = b & 0x7
    mag = np.where(e == 0, m * 2.0 ** -9, (1.0 + m / 8.0) * np.exp2(e - 7.0))
    v = sign * mag
    v = np.where((b & 0x7F) == 0x7F, np.nan, v)
    return v.astype(np.float32)  # every e4m3fn value is exact in float32


def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (finite inputs)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype(np.uint16)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(15)
    cases = [
        ("edges", 300, 200, 128, 128, "F32"),
        ("exact", 128, 256, 128, 128, "F32"),
        ("tiny", 5, 7, 128, 128, "F32"),
        ("bf16_scales", 257, 129, 128, 128, "BF16"),
        ("small_blocks", 64, 100, 32, 48, "F32"),
        ("tiny_scales", 130, 140, 128, 128, "F32"),
    ]
    listing = []
    for name, rows, cols, br, bc, sdt in cases:
        w = rng.integers(0, 256, size=rows * cols, dtype=np.uint8)
        w[: min(256, w.size)] = np.arange(256, dtype=np.uint8)[: min(256, w.size)]
        w = w.reshape(rows, cols)
        sr, sc = -(-rows // br), -(-cols // bc)
        # Scales with full 24-bit mantissas, so that the products round.
        expo = rng.integers(-20, 6, size=(sr, sc)) if name != "tiny_scales" else rng.integers(-140, -120, size=(sr, sc))
        s = (rng.uniform(1.0, 2.0, size=(sr, sc)) * np.exp2(expo.astype(np.float64))).astype(np.float32)
        s[0, 0] = -s[0, 0]
        if sdt == "BF16":
            sbits = bf16_bits(s)
            s = (sbits.astype(np.uint32) << 16).view(np.float32)
            sbytes = sbits.tobytes()
        else:
            sbytes = s.tobytes()
        full = np.repeat(np.repeat(s, br, axis=0), bc, axis=1)[:rows, :cols]
        ref = decode_e4m3fn(w) * full  # float32 * float32: one rounding
        assert ref.dtype == np.float32
        with open(os.path.join(out, name + ".w"), "wb") as f:
            f.write(w.tobytes())
        with open(os.path.join(out, name + ".s"), "wb") as f:
            f.write(sbytes)
        with open(os.path.join(out, name + ".out"), "wb") as f:
            f.write(ref.tobytes())
        listing.append({"name": name, "rows": rows, "cols": cols, "block_rows": br, "block_cols": bc,
                        "scale_dtype": sdt, "scale_shape": [sr, sc]})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(listing, f)


if __name__ == "__main__":
    main()

// FP8 weights with block scales, as in DeepSeek-V3 and the Qwen3 FP8
// releases: a 2-D F8_E4M3 tensor `W.weight` [rows, cols] and beside it
// `W.weight_scale_inv` [ceil(rows/128), ceil(cols/128)] (F32; BF16 and F16
// accepted), the block size given by config.json's
// quantization_config.weight_block_size.  The real value of an element is
//
//   float(e4m3fn(W[r][c])) * scale_inv[r / block_rows][c / block_cols]
//
// in fp32 (one rounding, as the reference dequantisation `x.float() * s`).
// Edge blocks are partial: the last block row/column covers what remains.
//
// e4m3fn ("fn": finite, no infinities): 1 sign bit, 4 exponent bits with bias
// 7, 3 mantissa bits; exponent 0 is subnormal (m * 2^-9); S.1111.111 (0x7F,
// 0xFF) is NaN, the only special pattern, so the largest value is 448.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace chatvec {

// Exact: every e4m3fn value is a float.  NaN comes out as the quiet NaN
// 0x7FC00000 with the input's sign.
float f8_e4m3fn_to_f32(uint8_t b);

struct Fp8BlockScaled {
  const void* weight = nullptr;  // rows * cols bytes, row-major, any alignment
  uint64_t rows = 0, cols = 0;
  const void* scale = nullptr;  // scale_rows() * scale_cols() values, row-major, any alignment
  DType scale_dtype = DType::F32;
  uint64_t block_rows = 128, block_cols = 128;

  uint64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  uint64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
};

// Checks that `weight_shape` (F8_E4M3, 2-D) and `scale_shape` (scale_dtype)
// fit together for the block size: scale_shape == [ceil(rows/block_rows),
// ceil(cols/block_cols)].  Throws InputError naming both tensors.
void check_fp8_block_scaled(DType weight_dtype, const std::vector<uint64_t>& weight_shape, DType scale_dtype,
                            const std::vector<uint64_t>& scale_shape, uint64_t block_rows, uint64_t block_cols,
                            const std::string& weight_name, const std::string& scale_name);

// Rows [row_begin, row_end) of the dequantised tensor into `out`
// ((row_end - row_begin) * cols floats).  Thread-safe for disjoint ranges.
// The caller has checked the shapes (check_fp8_block_scaled).
void dequant_fp8_block_rows(const Fp8BlockScaled& t, uint64_t row_begin, uint64_t row_end, float* out);

// Elements [first, first + count) of the dequantised tensor in row-major
// order (any range: it may start and end inside rows), the same values as
// dequant_fp8_block_rows.
void dequant_fp8_block_elements(const Fp8BlockScaled& t, uint64_t first, uint64_t count, float* out);

}  // namespace chatvec

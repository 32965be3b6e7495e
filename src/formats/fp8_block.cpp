#include "formats/fp8_block.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "core/error.h"

namespace chatvec {

namespace {

constexpr float decode_e4m3fn(uint8_t b) {
  const bool neg = b & 0x80;
  const int e = (b >> 3) & 0x0f, m = b & 0x07;
  float v;
  if (e == 0x0f && m == 0x07) {
    v = __builtin_nanf("");  // 0x7FC00000
  } else if (e == 0) {
    v = float(m) / 512.0f;  // m * 2^-9, exact
  } else {
    // (8 + m) * 2^(e - 10), built from powers of two: exact.
    float scale = 1.0f;
    for (int k = e; k < 10; ++k) scale /= 2.0f;
    for (int k = 10; k < e; ++k) scale *= 2.0f;
    v = float(8 + m) * scale;
  }
  return neg ? -v : v;
}

constexpr std::array<float, 256> make_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) t[size_t(b)] = decode_e4m3fn(uint8_t(b));
  return t;
}
constexpr std::array<float, 256> kE4M3 = make_table();

float load_scale(const uint8_t* p, DType dt, uint64_t i) {
  switch (dt) {
    case DType::F32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_f32(h);
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_f32(h);
    }
    default:
      throw std::logic_error("fp8 block scale dtype");
  }
}

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// n bytes of e4m3fn times `scale`.  (The 256-entry table is faster here
// than decoding the bits arithmetically, which measured 4x slower: the
// selects keep the loop scalar.)
inline void dequant_span(const uint8_t* __restrict w, size_t n, float scale, float* __restrict out) {
  for (size_t k = 0; k < n; ++k) out[k] = kE4M3[w[k]] * scale;
}

}  // namespace

float f8_e4m3fn_to_f32(uint8_t b) { return kE4M3[b]; }

void check_fp8_block_scaled(DType weight_dtype, const std::vector<uint64_t>& weight_shape, DType scale_dtype,
                            const std::vector<uint64_t>& scale_shape, uint64_t block_rows, uint64_t block_cols,
                            const std::string& weight_name, const std::string& scale_name) {
  if (weight_dtype != DType::F8_E4M3)
    throw InputError(weight_name + ": block-scaled weights must be F8_E4M3, not " + std::string(dtype_name(weight_dtype)));
  if (weight_shape.size() != 2)
    throw InputError(weight_name + ": block-scaled FP8 weights must be 2-D, not " + shape_str(weight_shape));
  if (scale_dtype != DType::F32 && scale_dtype != DType::BF16 && scale_dtype != DType::F16)
    throw InputError(scale_name + ": block scales must be F32, BF16 or F16, not " + std::string(dtype_name(scale_dtype)));
  if (block_rows == 0 || block_cols == 0) throw InputError(weight_name + ": FP8 block size must be positive");
  const std::vector<uint64_t> want = {(weight_shape[0] + block_rows - 1) / block_rows,
                                      (weight_shape[1] + block_cols - 1) / block_cols};
  if (scale_shape != want)
    throw InputError(scale_name + ": shape " + shape_str(scale_shape) + " does not fit " + weight_name + " " +
                     shape_str(weight_shape) + " in " + std::to_string(block_rows) + "x" + std::to_string(block_cols) +
                     " blocks (expected " + shape_str(want) + ")");
}

void dequant_fp8_block_rows(const Fp8BlockScaled& t, uint64_t row_begin, uint64_t row_end, float* out) {
  const uint8_t* w = static_cast<const uint8_t*>(t.weight);
  const uint8_t* s = static_cast<const uint8_t*>(t.scale);
  const uint64_t scols = t.scale_cols();
  for (uint64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* wr = w + r * t.cols;
    float* o = out + (r - row_begin) * t.cols;
    const uint64_t srow = (r / t.block_rows) * scols;
    for (uint64_t bc = 0; bc < scols; ++bc) {
      const float scale = load_scale(s, t.scale_dtype, srow + bc);
      const uint64_t c0 = bc * t.block_cols;
      const uint64_t c1 = c0 + t.block_cols < t.cols ? c0 + t.block_cols : t.cols;
      dequant_span(wr + c0, size_t(c1 - c0), scale, o + c0);
    }
  }
}

void dequant_fp8_block_elements(const Fp8BlockScaled& t, uint64_t first, uint64_t count, float* out) {
  const uint8_t* w = static_cast<const uint8_t*>(t.weight);
  const uint8_t* s = static_cast<const uint8_t*>(t.scale);
  const uint64_t scols = t.scale_cols();
  uint64_t i = first;
  const uint64_t end = first + count;
  while (i < end) {
    const uint64_t r = i / t.cols, c = i % t.cols;
    const uint64_t bc = c / t.block_cols;
    // The rest of this block's columns in this row, or of the range.
    const uint64_t block_end = std::min<uint64_t>(t.cols, (bc + 1) * t.block_cols);
    const uint64_t n = std::min<uint64_t>(block_end - c, end - i);
    const float scale = load_scale(s, t.scale_dtype, (r / t.block_rows) * scols + bc);
    dequant_span(w + i, size_t(n), scale, out);
    out += n;
    i += n;
  }
}

}  // namespace chatvec

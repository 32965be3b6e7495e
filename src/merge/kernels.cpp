#include "merge/kernels.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace chatvec {

namespace {

// Elements are processed in blocks small enough to stay in L1 cache: each
// operand is widened into a float block, combined, then narrowed.
constexpr size_t kBlock = 1024;

// One block of an operand widened to T, and back: the conversions of
// core/dtype.h (alignment-safe, one per dtype).
// (An FP8 block-scaled operand: its elements' index in the whole weight,
// one byte each, gives their blocks.)
inline uint64_t fp8_index(const KernelOperand& op, size_t begin) {
  return uint64_t(static_cast<const uint8_t*>(op.data) - static_cast<const uint8_t*>(op.fp8->weight)) + begin;
}
inline void load_block(const KernelOperand& op, size_t begin, size_t n, float* dst) {
  if (op.fp8) return dequant_fp8_block_elements(*op.fp8, fp8_index(op, begin), n, dst);
  convert_to_f32(op.dtype, static_cast<const uint8_t*>(op.data) + begin * (dtype_bits(op.dtype) / 8), n, dst);
}
inline void load_block(const KernelOperand& op, size_t begin, size_t n, double* dst) {
  if (op.fp8) {  // exact in float, widened exactly
    float f[kBlock];
    dequant_fp8_block_elements(*op.fp8, fp8_index(op, begin), n, f);
    for (size_t i = 0; i < n; ++i) dst[i] = f[i];
    return;
  }
  convert_to_f64(op.dtype, static_cast<const uint8_t*>(op.data) + begin * (dtype_bits(op.dtype) / 8), n, dst);
}
inline void store_block(const float* src, size_t n, void* out, DType dtype, size_t begin) {
  convert_from_f32(src, n, dtype, static_cast<uint8_t*>(out) + begin * (dtype_bits(dtype) / 8));
}
inline void store_block(const double* src, size_t n, void* out, DType dtype, size_t begin) {
  convert_from_f64(src, n, dtype, static_cast<uint8_t*>(out) + begin * (dtype_bits(dtype) / 8));
}

template <typename T>
void combine_typed(const CombineArgs& a, size_t begin, size_t end) {
  alignas(64) T acc[kBlock];
  alignas(64) T p[kBlock];
  alignas(64) T m[kBlock];
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t n = std::min(kBlock, end - b);
    bool have_acc = a.source.data != nullptr;
    if (have_acc) load_block(a.source, b, n, acc);
    for (const KernelTerm& t : a.terms) {
      load_block(t.plus, b, n, p);
      if (t.minus.data) {
        load_block(t.minus, b, n, m);
        for (size_t i = 0; i < n; ++i) p[i] = p[i] - m[i];
      }
      const T r = T(t.ratio);
      if (r != T(1))
        for (size_t i = 0; i < n; ++i) p[i] = r * p[i];
      if (have_acc) {
        for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + p[i];
      } else {
        std::copy(p, p + n, acc);
        have_acc = true;
      }
    }
    store_block(acc, n, a.out, a.out_dtype, b);
  }
}

// clang (the fuzz build) has no target_clones on function templates: the
// default code there.
#ifdef __clang__
#define CHATVEC_TEMPLATE_CLONES
#else
#define CHATVEC_TEMPLATE_CLONES __attribute__((target_clones("avx2", "default")))
#endif

// The common case in one pass, without the float blocks: every operand and
// the output are bf16, one term with a minus (a merge or an extract of a
// bf16 model).  The same float operations in the same order as
// combine_typed<float> (p - m, then r * that unless r == 1, then s + that,
// or no s), so the bits are the same; the loop is simple enough for the
// compiler to vectorise.
template <bool kHasSource, bool kScale>
CHATVEC_TEMPLATE_CLONES void combine_bf16_1term(const uint8_t* __restrict s,
                                                                          const uint8_t* __restrict p,
                                                                          const uint8_t* __restrict m,
                                                                          uint8_t* __restrict out, float r, size_t n) {
  // Byte pointers and memcpy loads: the tensors need not be aligned.
  auto at = [](const uint8_t* q, size_t i) {
    uint16_t h;
    std::memcpy(&h, q + 2 * i, 2);
    return bf16_to_f32(h);
  };
  for (size_t i = 0; i < n; ++i) {
    float d = at(p, i) - at(m, i);
    if constexpr (kScale) d = r * d;
    if constexpr (kHasSource) d = at(s, i) + d;
    const uint16_t o = f32_to_bf16(d);
    std::memcpy(out + 2 * i, &o, 2);
  }
}

bool try_fast_path(const CombineArgs& a, size_t begin, size_t end) {
  if (a.out_dtype != DType::BF16 || a.terms.size() != 1) return false;
  const KernelTerm& t = a.terms[0];
  if (!t.minus.data || t.plus.dtype != DType::BF16 || t.minus.dtype != DType::BF16) return false;
  if (a.source.data && a.source.dtype != DType::BF16) return false;
  const float r = float(t.ratio);
  const uint8_t* p = static_cast<const uint8_t*>(t.plus.data) + 2 * begin;
  const uint8_t* m = static_cast<const uint8_t*>(t.minus.data) + 2 * begin;
  const uint8_t* s = a.source.data ? static_cast<const uint8_t*>(a.source.data) + 2 * begin : nullptr;
  uint8_t* out = static_cast<uint8_t*>(a.out) + 2 * begin;
  const size_t n = end - begin;
  if (s) {
    if (r != 1.0f) combine_bf16_1term<true, true>(s, p, m, out, r, n);
    else combine_bf16_1term<true, false>(s, p, m, out, r, n);
  } else {
    if (r != 1.0f) combine_bf16_1term<false, true>(s, p, m, out, r, n);
    else combine_bf16_1term<false, false>(s, p, m, out, r, n);
  }
  return true;
}

// The same common case for f16 (an f16 merge or extract): operands widened
// by convert_to_f32 (vectorised for F16, core/dtype_simd.h) in chunks that
// stay in L1, then the float operations of combine_typed<float> in the same
// order in one pass, then narrowed.  Bit for bit the general path.
template <bool kHasSource, bool kScale>
CHATVEC_TEMPLATE_CLONES void combine_f32_1term(const float* __restrict s, float* __restrict p,
                                                                        const float* __restrict m, float r, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float d = p[i] - m[i];
    if constexpr (kScale) d = r * d;
    if constexpr (kHasSource) d = s[i] + d;
    p[i] = d;
  }
}

bool try_fast_path_f16(const CombineArgs& a, size_t begin, size_t end) {
  if (a.out_dtype != DType::F16 || a.terms.size() != 1) return false;
  const KernelTerm& t = a.terms[0];
  if (!t.minus.data || t.plus.dtype != DType::F16 || t.minus.dtype != DType::F16) return false;
  if (a.source.data && a.source.dtype != DType::F16) return false;
  const float r = float(t.ratio);
  constexpr size_t kChunk = 512;
  alignas(64) float s[kChunk], p[kChunk], m[kChunk];
  const uint8_t* pb = static_cast<const uint8_t*>(t.plus.data);
  const uint8_t* mb = static_cast<const uint8_t*>(t.minus.data);
  const uint8_t* sb = static_cast<const uint8_t*>(a.source.data);
  uint8_t* ob = static_cast<uint8_t*>(a.out);
  for (size_t b = begin; b < end; b += kChunk) {
    const size_t n = std::min(kChunk, end - b);
    convert_to_f32(DType::F16, pb + 2 * b, n, p);
    convert_to_f32(DType::F16, mb + 2 * b, n, m);
    if (sb) {
      convert_to_f32(DType::F16, sb + 2 * b, n, s);
      if (r != 1.0f) combine_f32_1term<true, true>(s, p, m, r, n);
      else combine_f32_1term<true, false>(s, p, m, r, n);
    } else {
      if (r != 1.0f) combine_f32_1term<false, true>(s, p, m, r, n);
      else combine_f32_1term<false, false>(s, p, m, r, n);
    }
    convert_from_f32(p, n, DType::F16, ob + 2 * b);
  }
  return true;
}

}  // namespace

void combine_range(const CombineArgs& args, size_t begin, size_t end) {
  if (try_fast_path(args, begin, end) || try_fast_path_f16(args, begin, end)) return;
  bool wide = args.out_dtype == DType::F64;
  if (wide) combine_typed<double>(args, begin, end);
  else combine_typed<float>(args, begin, end);
}

void convert_range(const void* in, DType in_dtype, void* out, DType out_dtype, size_t begin, size_t end) {
  CombineArgs a;
  a.terms.push_back(KernelTerm{1.0, KernelOperand{in, in_dtype}, KernelOperand{}});
  a.out = out;
  a.out_dtype = out_dtype;
  combine_range(a, begin, end);
}

}  // namespace chatvec

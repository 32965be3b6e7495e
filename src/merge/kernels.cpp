#include "merge/kernels.h"

#include <algorithm>
#include <stdexcept>

namespace chatvec {

namespace {

// Elements are processed in blocks small enough to stay in L1 cache: each
// operand is widened into a float block, combined, then narrowed.
constexpr size_t kBlock = 1024;

template <typename T>
void load_block(const KernelOperand& op, size_t begin, size_t n, T* dst) {
  switch (op.dtype) {
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(op.data) + begin;
      for (size_t i = 0; i < n; ++i) dst[i] = T(bf16_to_f32(s[i]));
      break;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(op.data) + begin;
      for (size_t i = 0; i < n; ++i) dst[i] = T(f16_to_f32(s[i]));
      break;
    }
    case DType::F32: {
      const float* s = static_cast<const float*>(op.data) + begin;
      for (size_t i = 0; i < n; ++i) dst[i] = T(s[i]);
      break;
    }
    case DType::F64: {
      const double* s = static_cast<const double*>(op.data) + begin;
      for (size_t i = 0; i < n; ++i) dst[i] = T(s[i]);
      break;
    }
    default:
      throw std::logic_error("combine: operand dtype is not a float type");
  }
}

template <typename T>
void store_block(const T* src, size_t n, void* out, DType dtype, size_t begin) {
  switch (dtype) {
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(out) + begin;
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(float(src[i]));
      break;
    }
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(out) + begin;
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(float(src[i]));
      break;
    }
    case DType::F32: {
      float* d = static_cast<float*>(out) + begin;
      for (size_t i = 0; i < n; ++i) d[i] = float(src[i]);
      break;
    }
    case DType::F64: {
      double* d = static_cast<double*>(out) + begin;
      for (size_t i = 0; i < n; ++i) d[i] = double(src[i]);
      break;
    }
    default:
      throw std::logic_error("combine: output dtype is not a float type");
  }
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

}  // namespace

void combine_range(const CombineArgs& args, size_t begin, size_t end) {
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

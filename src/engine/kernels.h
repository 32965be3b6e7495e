// Numeric kernels of the engine: matrix products over weights kept in their
// stored type (f32, bf16, f16, or GGUF q8_0 blocks; computed in fp32), RMS
// norm, softmax.  The products run on ThreadPool::shared(): AVX-512 tiles
// (chosen at run time; CHATVEC_KERNELS=portable forces the portable path) or
// portable dot products.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace chatvec {

// A row-major [rows, cols] matrix in a checkpoint's memory (not owned).
// q8_0: each row is cols / 32 GGUF Q8_0 blocks (an f16 scale d, then 32
// int8 q; the weight is d * q), and `dtype` is ignored.
struct WeightView {
  DType dtype = DType::F32;
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  bool q8_0 = false;
};

// Bytes of one row of w.
size_t weight_row_bytes(const WeightView& w);
// One Q8_0 row of `cols` weights (a multiple of 32) as fp32: d * q, exact.
void dequantize_q8_0_row(const void* row, int64_t cols, float* out);
// "avx512" or "portable": the product kernels this process uses.
const char* kernel_name();

// out[r] = sum_c w[r, c] * x[c] (+ bias[r] when bias is not null), fp32
// accumulation, rows handed out in chunks to the pool's threads.  `out` must
// not alias `x`.
void matvec(const WeightView& w, const float* x, float* out, const float* bias = nullptr);

// The same for n vectors at once: out[b * out_stride + r] = w[r, :] . x[b *
// x_stride + :] (+ bias[r]).  Each weight row is read once for all n vectors;
// every result is bit-identical to matvec's.
void matmul(const WeightView& w, const float* x, int64_t n, int64_t x_stride, float* out, int64_t out_stride,
            const float* bias = nullptr);

// Several products of the same inputs in one parallel region (q/k/v,
// gate/up): one thread barrier instead of one per matrix.
struct MatmulTask {
  const WeightView* w;
  float* out;
  int64_t out_stride;
  const float* bias = nullptr;
};
void matmul_many(const MatmulTask* tasks, int count, const float* x, int64_t n, int64_t x_stride);

// Row `row` of w as fp32 (embedding lookup).
void weight_row_to_f32(const WeightView& w, int64_t row, float* out);
// A whole (small) tensor as fp32: norm weights and biases.
void weights_to_f32(DType dtype, const void* data, int64_t n, float* out);

// out = x / sqrt(mean(x^2) + eps) * weight.  out may alias x.
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, double eps);

// In-place softmax of x[0..n).
void softmax_inplace(float* x, int64_t n);

// ---- activations and caps of architectures other than Llama ----

// g[i] = gelu_tanh(g[i]) * u[i], GELU with the tanh approximation
// (PyTorch's gelu(approximate="tanh")): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void gelu_tanh_mul(float* g, const float* u, int64_t n);
// g[i] = silu(g[i]) * u[i] (the Llama MLP).
void silu_mul(float* g, const float* u, int64_t n);

// x[i] = cap * tanh(x[i] / cap) (Gemma's soft-capping of attention scores and logits).
void softcap_inplace(float* x, int64_t n, float cap);

}  // namespace chatvec

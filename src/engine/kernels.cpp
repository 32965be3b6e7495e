#include "engine/kernels.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace chatvec {
namespace {

// Each dot product keeps kLanes independent partial sums so that the compiler
// can vectorise it without reassociating (we build with -ffp-contract=off and
// no -ffast-math), then adds them pairwise.
constexpr int kLanes = 16;

inline float reduce_lanes(float* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int i = 0; i < w; ++i) acc[i] += acc[i + w];
  return acc[0];
}

inline float load_bf16(const uint16_t* p, int64_t i) {
  uint16_t h;
  std::memcpy(&h, p + i, 2);
  return bf16_to_f32(h);
}

// Table of all 65536 half values (built once): fast and exact f16 decoding.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = f16_to_f32(uint16_t(i));
    return t;
  }();
  return table.data();
}

#define CHATVEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

CHATVEC_CLONES float dot_f32(const float* w, const float* x, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += w[j + k] * x[j + k];
  float s = reduce_lanes(acc);
  for (; j < n; ++j) s += w[j] * x[j];
  return s;
}

CHATVEC_CLONES float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const uint32_t u = uint32_t(w[j + k]) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      acc[k] += f * x[j + k];
    }
  float s = reduce_lanes(acc);
  for (; j < n; ++j) s += load_bf16(w, j) * x[j];
  return s;
}

float dot_f16(const uint16_t* w, const float* x, int64_t n, const float* table) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += table[w[j + k]] * x[j + k];
  float s = reduce_lanes(acc);
  for (; j < n; ++j) s += table[w[j]] * x[j];
  return s;
}

}  // namespace

inline float row_dot(const WeightView& w, int64_t r, const float* x, const float* f16) {
  switch (w.dtype) {
    case DType::F32:
      return dot_f32(static_cast<const float*>(w.data) + r * w.cols, x, w.cols);
    case DType::BF16:
      return dot_bf16(static_cast<const uint16_t*>(w.data) + r * w.cols, x, w.cols);
    case DType::F16:
      return dot_f16(static_cast<const uint16_t*>(w.data) + r * w.cols, x, w.cols, f16);
    default:
      return 0;  // the loader admits only the three types above
  }
}

void matmul_many(const MatmulTask* tasks, int count, const float* x, int64_t n, int64_t x_stride) {
  int64_t total = 0, work = 0;
  for (int t = 0; t < count; ++t) total += tasks[t].w->rows, work += tasks[t].w->rows * tasks[t].w->cols;
  const float* f16 = f16_table();
  const bool parallel = work * n >= (int64_t(1) << 16);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t g = 0; g < total; ++g) {
    int t = 0;
    int64_t r = g;
    while (r >= tasks[t].w->rows) r -= tasks[t].w->rows, ++t;
    const MatmulTask& k = tasks[t];
    for (int64_t b = 0; b < n; ++b) {
      float v = row_dot(*k.w, r, x + b * x_stride, f16);
      if (k.bias) v += k.bias[r];
      k.out[b * k.out_stride + r] = v;
    }
  }
}

void matmul(const WeightView& w, const float* x, int64_t n, int64_t x_stride, float* out, int64_t out_stride,
            const float* bias) {
  const MatmulTask t{&w, out, out_stride, bias};
  matmul_many(&t, 1, x, n, x_stride);
}

void matvec(const WeightView& w, const float* x, float* out, const float* bias) {
  matmul(w, x, 1, w.cols, out, w.rows, bias);
}

void weights_to_f32(DType dtype, const void* data, int64_t n, float* out) {
  convert_to_f32(dtype, data, size_t(n), out);
}

void weight_row_to_f32(const WeightView& w, int64_t row, float* out) {
  const size_t row_bytes = size_t(w.cols) * (dtype_bits(w.dtype) / 8);
  convert_to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(row) * row_bytes, size_t(w.cols), out);
}

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  const float inv = float(1.0 / std::sqrt(ss / double(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void softmax_inplace(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void gelu_tanh_mul(float* g, const float* u, int64_t n) {
  const float k = float(std::sqrt(2.0 / 3.14159265358979323846));
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    g[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * u[i];
  }
}

void silu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    g[i] = x / (1.0f + std::exp(-x)) * u[i];
  }
}

void softcap_inplace(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

}  // namespace chatvec

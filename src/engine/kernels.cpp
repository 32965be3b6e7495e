#include "engine/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <string_view>
#include <vector>

#include "engine/thread_pool.h"

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


#if defined(__x86_64__)
// ---- AVX-512 tiles ----------------------------------------------------------
//
// R weight rows x T tokens per tile: each loaded (and widened) 16-column
// piece of a weight row is multiplied into T token vectors, each token
// piece into R rows, with R*T accumulators in registers.  Every output
// (row, token) is one 16-lane fused multiply-add chain over the columns in
// order, then _mm512_reduce_add_ps: the same arithmetic whatever the tile
// shape, the batch size or the thread count, so a batch equals one token at a
// time bit for bit.

#define CHATVEC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

enum Kind { kF32, kBF16, kF16, kQ8 };

template <int K>
CHATVEC_AVX512 inline __m512 load_w(const uint8_t* row, int64_t j, __mmask16 m) {
  if constexpr (K == kF32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + j);
  } else if constexpr (K == kBF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + j);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (K == kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + j));
  } else {  // q8_0: blocks of an f16 scale and 32 int8; d * q is exact in fp32
    const uint8_t* blk = row + (j / 32) * 34;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(dh));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 + (j % 32)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d);
  }
}

template <int K, int R, int T>
CHATVEC_AVX512 void tile(const uint8_t* const* rows, const float* x, int64_t x_stride, int64_t cols,
                         float (*res)[8]) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * x_stride + j);
    for (int r = 0; r < R; ++r) {
      const __m512 w = load_w<K>(rows[r], j, 0xFFFF);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(w, xv[t], acc[r][t]);
    }
  }
  if (j < cols) {  // tail: zero lanes add nothing (q8_0 rows have whole blocks of 32, never a tail)
    const __mmask16 m = __mmask16((1u << (cols - j)) - 1);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * x_stride + j);
    for (int r = 0; r < R; ++r) {
      const __m512 w = load_w<K == kQ8 ? kF32 : K>(rows[r], j, m);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(w, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) res[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

constexpr int kTileRows = 4, kTileTokens = 6;

template <int K, int R>
CHATVEC_AVX512 void tile_t(int t, const uint8_t* const* rows, const float* x, int64_t xs, int64_t cols,
                           float (*res)[8]) {
  switch (t) {
    case 1: return tile<K, R, 1>(rows, x, xs, cols, res);
    case 2: return tile<K, R, 2>(rows, x, xs, cols, res);
    case 3: return tile<K, R, 3>(rows, x, xs, cols, res);
    case 4: return tile<K, R, 4>(rows, x, xs, cols, res);
    case 5: return tile<K, R, 5>(rows, x, xs, cols, res);
    default: return tile<K, R, 6>(rows, x, xs, cols, res);
  }
}

template <int K>
CHATVEC_AVX512 void rows_avx512(const MatmulTask& k, int64_t r0, int64_t r1, const float* x, int64_t n,
                                int64_t x_stride) {
  const WeightView& w = *k.w;
  const size_t row_bytes = weight_row_bytes(w);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  float res[kTileRows][8];
  for (int64_t b0 = 0; b0 < n; b0 += kTileTokens) {
    const int t = int(std::min<int64_t>(kTileTokens, n - b0));
    const float* xb = x + b0 * x_stride;
    for (int64_t r = r0; r < r1;) {
      const int R = r + kTileRows <= r1 ? kTileRows : 1;
      const uint8_t* rows[kTileRows];
      for (int i = 0; i < R; ++i) rows[i] = base + size_t(r + i) * row_bytes;
      if (R == kTileRows) tile_t<K, kTileRows>(t, rows, xb, x_stride, w.cols, res);
      else tile_t<K, 1>(t, rows, xb, x_stride, w.cols, res);
      for (int i = 0; i < R; ++i)
        for (int tt = 0; tt < t; ++tt) {
          float v = res[i][tt];
          if (k.bias) v += k.bias[r + i];
          k.out[(b0 + tt) * k.out_stride + r + i] = v;
        }
      r += R;
    }
  }
}

void rows_avx512_any(const MatmulTask& k, int64_t r0, int64_t r1, const float* x, int64_t n, int64_t xs) {
  if (k.w->q8_0) return rows_avx512<kQ8>(k, r0, r1, x, n, xs);
  switch (k.w->dtype) {
    case DType::F32: return rows_avx512<kF32>(k, r0, r1, x, n, xs);
    case DType::BF16: return rows_avx512<kBF16>(k, r0, r1, x, n, xs);
    default: return rows_avx512<kF16>(k, r0, r1, x, n, xs);
  }
}

#endif  // __x86_64__

// ---- portable path (any x86-64 or other CPU) -------------------------------

float row_dot(const WeightView& w, int64_t r, const float* x, const float* f16, float* scratch) {
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + size_t(r) * weight_row_bytes(w);
  if (w.q8_0) {
    dequantize_q8_0_row(row, w.cols, scratch);
    return dot_f32(scratch, x, w.cols);
  }
  switch (w.dtype) {
    case DType::F32: return dot_f32(reinterpret_cast<const float*>(row), x, w.cols);
    case DType::BF16: return dot_bf16(reinterpret_cast<const uint16_t*>(row), x, w.cols);
    case DType::F16: return dot_f16(reinterpret_cast<const uint16_t*>(row), x, w.cols, f16);
    default: return 0;  // the loader admits only the types above
  }
}

void rows_generic(const MatmulTask& k, int64_t r0, int64_t r1, const float* x, int64_t n, int64_t x_stride) {
  const float* f16 = f16_table();
  thread_local std::vector<float> scratch;
  if (k.w->q8_0 && scratch.size() < size_t(k.w->cols)) scratch.resize(size_t(k.w->cols));
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < n; ++b) {
      float v = row_dot(*k.w, r, x + b * x_stride, f16, scratch.data());
      if (k.bias) v += k.bias[r];
      k.out[b * k.out_stride + r] = v;
    }
}

bool detect_avx512() {
#if defined(__x86_64__)
  const char* e = std::getenv("CHATVEC_KERNELS");
  if (e && std::string_view(e) == "portable") return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool use_avx512() {
  static const bool yes = detect_avx512();
  return yes;
}

}  // namespace

size_t weight_row_bytes(const WeightView& w) {
  return w.q8_0 ? size_t(w.cols / 32) * 34 : size_t(w.cols) * (dtype_bits(w.dtype) / 8);
}

void dequantize_q8_0_row(const void* row, int64_t cols, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* blk = p + b * 34;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const float d = f16_to_f32(dh);
    for (int j = 0; j < 32; ++j) out[b * 32 + j] = float(int8_t(blk[2 + j])) * d;
  }
}

const char* kernel_name() { return use_avx512() ? "avx512" : "portable"; }

void matmul_many(const MatmulTask* tasks, int count, const float* x, int64_t n, int64_t x_stride) {
  int64_t total = 0, work = 0;
  for (int t = 0; t < count; ++t) total += tasks[t].w->rows, work += tasks[t].w->rows * tasks[t].w->cols;
  const bool avx512 = use_avx512();
  auto run_rows = [&](int64_t g0, int64_t g1) {
    int t = 0;
    int64_t base = 0;
    while (g0 >= base + tasks[t].w->rows) base += tasks[t].w->rows, ++t;
    while (g0 < g1) {
      const int64_t end = std::min(g1, base + tasks[t].w->rows);
#if defined(__x86_64__)
      if (avx512) rows_avx512_any(tasks[t], g0 - base, end - base, x, n, x_stride);
      else
#endif
        rows_generic(tasks[t], g0 - base, end - base, x, n, x_stride);
      g0 = end;
      base += tasks[t].w->rows;
      ++t;
    }
  };
  ThreadPool& pool = ThreadPool::shared();
  if (pool.threads() == 1 || work * n < (int64_t(1) << 16)) {
    run_rows(0, total);
    return;
  }
  // Chunks small enough that a thread losing its core holds the others up
  // by little, large enough to amortise the hand-out: about 16 per thread,
  // a multiple of the tile's rows.
  int64_t chunk = total / (int64_t(pool.threads()) * 16);
  chunk = std::clamp<int64_t>(chunk - chunk % kTileRows, kTileRows, 256);
  pool.parallel_for(total, chunk, run_rows);
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
  const size_t row_bytes = weight_row_bytes(w);
  if (w.q8_0) return dequantize_q8_0_row(static_cast<const uint8_t*>(w.data) + size_t(row) * row_bytes, w.cols, out);
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

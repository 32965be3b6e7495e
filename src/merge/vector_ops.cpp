#include "merge/vector_ops.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "core/interrupt.h"
#include "merge/exact_sum.h"

namespace chatvec {

uint64_t dare_name_key(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t dare_state(const std::string& name, uint64_t seed, uint32_t index) {
  return splitmix64_mix(dare_name_key(name) ^ splitmix64_mix(seed + index));
}

uint64_t dare_drop_threshold(double p) {
  if (p <= 0) return 0;
  return uint64_t(std::ceil(p * 0x1p53));
}

namespace {

// Statistics blocks: fixed in element space, whatever the chunk.
constexpr uint64_t kStatBlock = 4096;
// Elements per step of the element-wise kernel (L1-sized buffers).
constexpr size_t kBlock = 1024;

inline uint32_t abs_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b & 0x7fffffffu;
}

// DARE on a block: kept elements times s, dropped ones +0.0.  Branch-free
// (the choice is a coin toss, so a branch would mispredict half the time) and
// vectorised where the CPU multiplies 64-bit lanes (AVX-512DQ).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void dare_block(float* __restrict d, size_t n,
                                                                               uint64_t state, uint64_t g,
                                                                               uint64_t threshold, float s) {
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = state + (g + i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const uint32_t keep = (z >> 11) >= threshold ? 0xffffffffu : 0u;
    const float v = d[i] * s;
    uint32_t b;
    std::memcpy(&b, &v, 4);
    b &= keep;
    std::memcpy(&d[i], &b, 4);
  }
}

// Magnitude pruning on a block: |d| below the threshold (as float bits) to +0.0.
__attribute__((target_clones("avx2", "default"))) void prune_block(float* __restrict d, size_t n, uint32_t keep_bits) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &d[i], 4);
    b &= (b & 0x7fffffffu) >= keep_bits ? 0xffffffffu : 0u;
    std::memcpy(&d[i], &b, 4);
  }
}

// Test hooks (vector_ops.h).
bool g_fast_paths = true;
bool g_force_window_miss = false;
std::atomic<uint64_t> g_fused_calls{0};

// The common case of the output pass in one loop: one term (chat - base, no
// TIES), every operand and the output bf16.  The same float operations in the
// same order as term_delta + combine_ops_range's general path (c - b; DARE:
// times s, bits masked; pruning: bits masked; times the factor unless 1;
// times the ratio unless 1; target + that), so the bits are the same; simple
// enough for the compiler to vectorise, the 64-bit hash included (AVX-512DQ).
// (clang, the fuzz build, has no target_clones on function templates: the
// default code there.)
#ifdef __clang__
#define CHATVEC_VO_TEMPLATE_CLONES
#else
#define CHATVEC_VO_TEMPLATE_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
template <bool kDare, bool kPrune, bool kFactor, bool kRatio>
CHATVEC_VO_TEMPLATE_CLONES void fused_bf16_1term(
    const uint8_t* __restrict c, const uint8_t* __restrict b, const uint8_t* __restrict t, uint8_t* __restrict out,
    size_t n, uint64_t g, uint64_t state, uint64_t threshold, float s, uint32_t keep_bits, float factor, float r) {
  auto at = [](const uint8_t* q, size_t i) {
    uint16_t h;
    std::memcpy(&h, q + 2 * i, 2);
    return bf16_to_f32(h);
  };
  for (size_t i = 0; i < n; ++i) {
    float d = at(c, i) - at(b, i);
    if constexpr (kDare) {
      uint64_t z = state + (g + i + 1) * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      const uint32_t keep = (z >> 11) >= threshold ? 0xffffffffu : 0u;
      const float v = d * s;
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      bits &= keep;
      std::memcpy(&d, &bits, 4);
    }
    if constexpr (kPrune) {
      uint32_t bits;
      std::memcpy(&bits, &d, 4);
      bits &= (bits & 0x7fffffffu) >= keep_bits ? 0xffffffffu : 0u;
      std::memcpy(&d, &bits, 4);
    }
    if constexpr (kFactor) d = d * factor;
    if constexpr (kRatio) d = r * d;
    const float acc = at(t, i) + d;
    const uint16_t o = f32_to_bf16(acc);
    std::memcpy(out + 2 * i, &o, 2);
  }
}

using FusedFn = void (*)(const uint8_t*, const uint8_t*, const uint8_t*, uint8_t*, size_t, uint64_t, uint64_t,
                         uint64_t, float, uint32_t, float, float);
template <bool D, bool P, bool F>
FusedFn fused_pick_r(bool r) {
  return r ? &fused_bf16_1term<D, P, F, true> : &fused_bf16_1term<D, P, F, false>;
}
template <bool D, bool P>
FusedFn fused_pick_f(bool f, bool r) {
  return f ? fused_pick_r<D, P, true>(r) : fused_pick_r<D, P, false>(r);
}
template <bool D>
FusedFn fused_pick_p(bool p, bool f, bool r) {
  return p ? fused_pick_f<D, true>(f, r) : fused_pick_f<D, false>(f, r);
}

bool try_fused_bf16(const TensorTask& task, const OpsState& state, void* out, uint64_t out_first, uint64_t begin,
                    uint64_t end) {
  if (!g_fast_paths || task.ops.ties || task.terms.size() != 1 || task.dtype != DType::BF16) return false;
  const TensorTerm& term = task.terms[0];
  if (term.vector || !term.chat || !term.base || !task.target) return false;
  for (const CheckpointTensor* in : {term.chat, term.base, task.target})
    if (in->dtype() != DType::BF16 || in->fp8_block_scales()) return false;
  const TermOpsState& st = state.terms[0];
  const float r = float(term.ratio);
  const FusedFn fn = st.dare_threshold ? fused_pick_p<true>(st.prune, st.factor != 1.0f, r != 1.0f)
                                       : fused_pick_p<false>(st.prune, st.factor != 1.0f, r != 1.0f);
  fn(term.chat->element(begin), term.base->element(begin), task.target->element(begin),
     static_cast<uint8_t*>(out) + (begin - out_first) * 2, size_t(end - begin), begin, st.dare_state,
     st.dare_threshold, st.dare_scale, st.keep_bits, st.factor, r);
  g_fused_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// d[i] = bf16 c[i] - bf16 b[i] in fp32 (read_f32 of each, then the
// subtraction, in one loop).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void bf16_delta(const uint8_t* __restrict c,
                                                                               const uint8_t* __restrict b, size_t n,
                                                                               float* __restrict d) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t hc, hb;
    std::memcpy(&hc, c + 2 * i, 2);
    std::memcpy(&hb, b + 2 * i, 2);
    d[i] = bf16_to_f32(hc) - bf16_to_f32(hb);
  }
}

// delta of `term` for elements [g, g + n) into d, DARE applied: the same
// float operations as the plain kernel (plus - minus), then the mask.
void term_delta(const TensorTerm& term, const TermOpsState& st, uint64_t g, size_t n, float* d, float* scratch) {
  const CheckpointTensor* plus = term.vector ? term.vector : term.chat;
  const bool bf16_pair = g_fast_paths && !term.vector && plus->dtype() == DType::BF16 &&
                         term.base->dtype() == DType::BF16 && !plus->fp8_block_scales() &&
                         !term.base->fp8_block_scales();
  if (bf16_pair) {
    bf16_delta(plus->element(g), term.base->element(g), n, d);  // the same c - b, in one loop
  } else {
    plus->read_f32(g, n, d);
    if (!term.vector) {
      term.base->read_f32(g, n, scratch);
      for (size_t i = 0; i < n; ++i) d[i] = d[i] - scratch[i];
    }
  }
  if (st.dare_threshold) dare_block(d, n, st.dare_state, g, st.dare_threshold, st.dare_scale);
}

// The elements a term's statistics walk: the tensor's own, one to one (a
// Combine task), or -- a vocabulary tensor built row by row -- the rows the
// term is added to, in output order (docs/operations.md): element g is column
// g mod width of output row rows[g / width].
struct Space {
  uint64_t n = 0;
  const RowMap* map = nullptr;  // null: the tensor's elements
  uint64_t width = 0;
  std::vector<uint32_t> rows;  // indices into map->rows
};

// A row of a Rows task that `term` is added to: combined, and held by the
// term's vector (an extracted vector may lack some base rows).
bool term_adds_row(const TensorTerm& term, const RowOp& r) {
  return r.kind == RowOp::Combine && (!term.base_rows_present || (*term.base_rows_present)[size_t(r.base_row)]);
}

Space make_space(const TensorTask& task, const TensorTerm& term) {
  Space s;
  if (task.kind != TaskKind::Rows) {
    s.n = task.numel();
    return s;
  }
  s.map = task.row_map.get();
  s.width = task.shape.at(1);
  if (s.map->rows.size() > UINT32_MAX) throw std::logic_error(task.name + ": too many rows");
  for (size_t i = 0; i < s.map->rows.size(); ++i)
    if (term_adds_row(term, s.map->rows[i])) s.rows.push_back(uint32_t(i));
  s.n = uint64_t(s.rows.size()) * s.width;
  return s;
}

// delta of `term` on columns [col, col + n) of output row `r` (width w), DARE
// applied: the chat model's row r.chat_row minus the base's r.base_row (or
// the vector's r.base_row), the same float operations as term_delta.  The
// vector's element is the base row's: DARE's index is base_row * w + col.
void row_delta(const TensorTerm& term, const TermOpsState& st, const RowOp& r, uint64_t w, uint64_t col, size_t n,
               float* d, float* scratch) {
  const uint64_t vb = uint64_t(r.base_row) * w + col;
  if (term.vector) {
    term.vector->read_f32(vb, n, d);
  } else {
    term.chat->read_f32(uint64_t(r.chat_row) * w + col, n, d);
    term.base->read_f32(vb, n, scratch);
    for (size_t i = 0; i < n; ++i) d[i] = d[i] - scratch[i];
  }
  if (st.dare_threshold) dare_block(d, n, st.dare_state, vb, st.dare_threshold, st.dare_scale);
}

// Elements [g, g + n) of a row space, a row's piece at a time:
// fn(row op, column, length, offset of the piece in the range).
template <class Fn>
void for_each_row_piece(const Space& sp, uint64_t g, size_t n, Fn&& fn) {
  for (size_t done = 0; done < n;) {
    const uint64_t col = (g + done) % sp.width;
    const size_t len = size_t(std::min<uint64_t>(n - done, sp.width - col));
    fn(sp.map->rows[sp.rows[size_t((g + done) / sp.width)]], col, len, done);
    done += len;
  }
}

// term_delta over a space: elements [g, g + n) of it.
void space_delta(const TensorTerm& term, const TermOpsState& st, const Space& sp, uint64_t g, size_t n, float* d,
                 float* scratch) {
  if (!sp.map) {
    term_delta(term, st, g, n, d, scratch);
    return;
  }
  for_each_row_piece(sp, g, n, [&](const RowOp& r, uint64_t col, size_t len, size_t at) {
    row_delta(term, st, r, sp.width, col, len, d + at, scratch);
  });
}

// The target's elements [g, g + n) of a space (the rows the term is added to).
void space_target(const TensorTask& task, const Space& sp, uint64_t g, size_t n, float* d) {
  if (!sp.map) {
    task.target->read_f32(g, n, d);
    return;
  }
  for_each_row_piece(sp, g, n, [&](const RowOp& r, uint64_t col, size_t len, size_t at) {
    task.target->read_f32(uint64_t(r.target_row) * sp.width + col, len, d + at);
  });
}

// Hand back the input pages elements [first, first + count) of a space read:
// for rows, the span from the lowest to the highest row of each operand.
void space_release(const TensorTask& task, const TensorTerm& term, const Space& sp, uint64_t first, uint64_t count) {
  if (!sp.map) {
    for (const CheckpointTensor* in : task.inputs()) in->release(first, count);
    return;
  }
  if (count == 0) return;
  const size_t c0 = size_t(first / sp.width), c1 = size_t((first + count - 1) / sp.width);
  auto release = [&](const CheckpointTensor* t, int64_t RowOp::*which) {
    if (!t) return;
    int64_t lo = INT64_MAX, hi = -1;
    for (size_t c = c0; c <= c1; ++c) {
      const int64_t row = sp.map->rows[sp.rows[c]].*which;
      lo = std::min(lo, row);
      hi = std::max(hi, row);
    }
    if (hi >= 0) t->release_rows(uint64_t(lo), uint64_t(hi - lo + 1));
  };
  release(task.target, &RowOp::target_row);
  release(term.vector ? term.vector : term.base, &RowOp::base_row);
  if (!term.vector) release(term.chat, &RowOp::chat_row);
}

// The sum of a statistics block in fp64, deterministic: element i of the
// block goes to lane i mod 8, each lane summed in index order, then the lanes
// as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).  Eight independent
// chains (one AVX-512 register) instead of one: the adds' latency no longer
// bounds the pass.
inline double reduce_lanes(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) double lane_sum_abs(const float* d, size_t m) {
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= m; i += 8)
    for (size_t j = 0; j < 8; ++j) l[j] += std::fabs(double(d[i + j]));
  for (size_t j = 0; i + j < m; ++j) l[j] += std::fabs(double(d[i + j]));
  return reduce_lanes(l);
}
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) double lane_sum_sq(const float* d, size_t m) {
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= m; i += 8)
    for (size_t j = 0; j < 8; ++j) l[j] += double(d[i + j]) * double(d[i + j]);
  for (size_t j = 0; i + j < m; ++j) l[j] += double(d[i + j]) * double(d[i + j]);
  return reduce_lanes(l);
}

// The exact sums (exact_sum.h) of |d| (`which` & 1) and d^2 (& 2) over the
// elements of a block whose |d| bits are >= min_bits, added to x1 / x2.  In
// 128-bit fixed point relative to min_bits' exponent E0 (every element
// counted has an exponent >= E0), flushed once per block; those 31 or more
// binades above E0, and inf/NaN, one by one.
// (An AVX-512 lane adds 512 elements of a block: (m << 29) * 512 < 2^62, and
// (m^2 << 58) / 2^52 * 512 < 2^63.)
constexpr uint32_t kExactSpan = 30;
inline uint32_t exact_outlier_bits(uint32_t e0) {
  return uint32_t(std::min<uint64_t>(0x7f800000u, uint64_t(e0 + kExactSpan) << 23));
}
inline uint32_t exact_e0(uint32_t min_bits) { return std::max<uint32_t>(1u, std::min<uint32_t>(min_bits, 0x7f800000u) >> 23); }
void exact_block(const float* d, size_t m, uint32_t min_bits, unsigned which, ExactSum* x1, ExactSum* x2) {
  const uint32_t e0 = exact_e0(min_bits), out_bits = exact_outlier_bits(e0);
  unsigned __int128 s1 = 0, s2 = 0;
  for (size_t i = 0; i < m; ++i) {
    const uint32_t a = abs_bits(d[i]);
    if (a < min_bits) continue;
    if (a >= out_bits) {
      if (which & 1) x1->add_abs_bits(a);
      if (which & 2) x2->add_sq_bits(a);
      continue;
    }
    uint32_t mm, e;
    fp32_split(a, &mm, &e);
    const unsigned s = e - e0;  // < kExactSpan
    if (which & 1) s1 += (unsigned __int128)mm << s;
    if (which & 2) s2 += (unsigned __int128)(uint64_t(mm) * mm) << (2 * s);
  }
  if (which & 1) x1->add_shifted(s1, e0 - 1);
  if (which & 2) x2->add_shifted(s2, 2 * (e0 - 1));
}

// The windowed count of a block: returns how many |d| (as bits) lie above
// [lo, lo + width) and counts those inside into hist[bits - lo].  One
// unsigned compare per element, so the branch is taken only inside the
// window (a few per cent of the elements) and predicts well.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) uint64_t window_count(
    const float* d, size_t m, uint32_t lo, uint32_t width, uint64_t* hist) {
  const uint32_t hi = lo + (width - 1);
  uint32_t up = 0;
  for (size_t i = 0; i < m; ++i) {
    uint32_t a;
    std::memcpy(&a, &d[i], 4);
    up += (a & 0x7fffffffu) > hi;
  }
  for (size_t i = 0; i < m; ++i) {
    uint32_t a;
    std::memcpy(&a, &d[i], 4);
    const uint32_t idx = (a & 0x7fffffffu) - lo;
    if (idx < width) ++hist[idx];
  }
  return up;
}

// The statistics of one block in one pass over it, in vector registers
// (AVX-512): delta (from the bf16 pair, or from a float block), |delta| as
// bits, the windowed count (kWin), pruning (kKept: the sums of what is kept),
// the eight-lane sums of |delta| and delta^2 (kSums) and of a bf16 target's
// squares (kTgt).  The same operations, element by element and lane by lane,
// as bf16_delta / window_count / prune_block / lane_sum_*: masked-off tail
// elements are +0.0, which leaves a lane (+0.0 or more, or NaN) unchanged.
struct BlockStats {
  uint64_t above = 0;
  double l1 = 0, l2 = 0, tl2 = 0;
};
#if defined(__x86_64__)
#define CHATVEC_AVX512 1
bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
  return yes;
}
// (GCC 12 warns of the intrinsics' own undefined registers.)
#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define CHATVEC_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,popcnt,bmi")))
// 16 bf16 (the first of k) as floats.
CHATVEC_AVX512_TARGET inline __m512 widen(const uint8_t* q, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, q)), 16));
}
// The 16 floats of v in fp64, elements 0-7 then 8-15 added to the lanes.
CHATVEC_AVX512_TARGET inline __m512d add_abs(__m512d acc, __m512 v) {
  acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
CHATVEC_AVX512_TARGET inline __m512d add_sq(__m512d acc, __m512 v) {
  const __m512d vl = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d vh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  acc = _mm512_add_pd(acc, _mm512_mul_pd(vl, vl));
  return _mm512_add_pd(acc, _mm512_mul_pd(vh, vh));
}
// kNB blocks side by side (2: two full blocks, the next one's data kStatBlock
// elements on), each with its own lanes: the lanes' additions are sequential
// by definition, so two blocks give the CPU two independent chains.
// (kX: x1 the exact sum of |delta| in fixed point relative to E0, x2lo/x2hi
// that of delta^2 as 128-bit lanes; exact_block's arithmetic.)
struct StatAcc {
  __m512d l1, l2, tl2;
  __m512i x1, x2lo, x2hi;
  uint64_t up;
};
struct StatConsts {
  __m512i abs_mask, lo, width, hi, xmin, out_bits;
  __m512d scale, scale2;  // 2^(150 - E0), its square
};
// The fixed point of 8 counted elements (0 where not counted), in fp64:
// y = |delta| * 2^(150 - E0) = m << (e - E0), an integer < 2^53, and
// x = delta^2 * 2^(2 (150 - E0)) = y^2 (48 significant bits, < 2^106).  The
// scalings, the split of x at 2^52 and the conversions to integers are all
// exact.  x1 += y; x2hi:x2lo += x as hi * 2^52 + lo.
CHATVEC_AVX512_TARGET __attribute__((always_inline)) inline void exact_abs(StatAcc& s, __m512d y) {
  s.x1 = _mm512_add_epi64(s.x1, _mm512_cvttpd_epu64(y));
}
CHATVEC_AVX512_TARGET __attribute__((always_inline)) inline void exact_sq(StatAcc& s, __m512d x) {
  const __m512d hi =
      _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(0x1p-52)), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512d lo = _mm512_sub_pd(x, _mm512_mul_pd(hi, _mm512_set1_pd(0x1p52)));
  s.x2hi = _mm512_add_epi64(s.x2hi, _mm512_cvttpd_epu64(hi));
  s.x2lo = _mm512_add_epi64(s.x2lo, _mm512_cvttpd_epu64(lo));
}
// 16 elements from `at` on (the first of km) into s.
// kKept: only the exact sums of the kept elements (kX); kWin with kX: also
// the exact sums of those above the window.
template <bool kBf16, bool kWin, bool kKept, bool kL1, bool kL2, bool kTgt, bool kX>
CHATVEC_AVX512_TARGET __attribute__((always_inline)) inline void stats_step(
    StatAcc& s, const StatConsts& k, const uint8_t* __restrict c, const uint8_t* __restrict b,
    const float* __restrict d, const uint8_t* __restrict t, size_t at, __mmask16 km, uint32_t* __restrict inside,
    size_t& n_in, uint32_t* __restrict outl, size_t& n_out) {
  __m512 dv;
  if constexpr (kBf16)
    dv = _mm512_sub_ps(widen(c + 2 * at, km), widen(b + 2 * at, km));
  else
    dv = _mm512_maskz_loadu_ps(km, d + at);
  __m512i a = _mm512_and_si512(_mm512_castps_si512(dv), k.abs_mask);
  if constexpr (kX) {
    // Those counted exactly: above the window (kWin), or kept (kKept); the
    // outliers (31 binades or more above E0, inf, NaN) packed into `outl`.
    const __mmask16 sel = _mm512_mask_cmpge_epu32_mask(km, a, k.xmin);
    const __mmask16 om = _mm512_mask_cmpge_epu32_mask(sel, a, k.out_bits);
    if (__builtin_expect(om != 0, 0)) {
      _mm512_storeu_si512(reinterpret_cast<__m512i*>(outl + n_out), _mm512_maskz_compress_epi32(om, a));
      n_out += size_t(__builtin_popcount(om));
    }
    const __mmask16 acc = sel & __mmask16(~om);
    if constexpr (kL1) {
      const __m512 av = _mm512_castsi512_ps(a);
      exact_abs(s, _mm512_maskz_mul_pd(__mmask8(acc), _mm512_cvtps_pd(_mm512_castps512_ps256(av)), k.scale));
      exact_abs(s, _mm512_maskz_mul_pd(
                       __mmask8(acc >> 8),
                       _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(av), 1))), k.scale));
    }
    if constexpr (kL2) {
      // The squares, shared with the lane sums of all elements (add_sq's
      // operations in its order).
      const __m512d vl = _mm512_cvtps_pd(_mm512_castps512_ps256(dv));
      const __m512d vh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dv), 1)));
      const __m512d ql = _mm512_mul_pd(vl, vl), qh = _mm512_mul_pd(vh, vh);
      exact_sq(s, _mm512_maskz_mul_pd(__mmask8(acc), ql, k.scale2));
      exact_sq(s, _mm512_maskz_mul_pd(__mmask8(acc >> 8), qh, k.scale2));
      if constexpr (!kKept) {
        s.l2 = _mm512_add_pd(s.l2, ql);
        s.l2 = _mm512_add_pd(s.l2, qh);
      }
    }
  }
  if constexpr (kKept) return;
  if constexpr (kWin) {
    s.up += uint64_t(__builtin_popcount(_mm512_mask_cmpgt_epu32_mask(km, a, k.hi)));
    // Those inside the window: their bins packed into `inside`, without a
    // branch (whether a vector holds one is a coin toss), counted afterwards.
    const __m512i idx = _mm512_sub_epi32(a, k.lo);
    const __mmask16 in = _mm512_mask_cmplt_epu32_mask(km, idx, k.width);
    _mm512_storeu_si512(reinterpret_cast<__m512i*>(inside + n_in), _mm512_maskz_compress_epi32(in, idx));
    n_in += size_t(__builtin_popcount(in));
  }
  if constexpr (kL1) s.l1 = add_abs(s.l1, _mm512_castsi512_ps(a));
  if constexpr (kL2 && !kX) s.l2 = add_sq(s.l2, dv);
  if constexpr (kTgt) s.tl2 = add_sq(s.tl2, widen(t + 2 * at, km));
}
template <bool kL1, bool kL2>
CHATVEC_AVX512_TARGET inline void exact_finish(const StatAcc& s, uint32_t e0, ExactSum* x1, ExactSum* x2) {
  alignas(64) uint64_t lo[8], hi[8];
  if constexpr (kL1) {
    _mm512_store_si512(reinterpret_cast<__m512i*>(lo), s.x1);
    unsigned __int128 t = 0;  // (8 lanes < 2^64 each)
    for (int j = 0; j < 8; ++j) t += lo[j];
    x1->add_shifted(t, e0 - 1);
  }
  if constexpr (kL2) {
    _mm512_store_si512(reinterpret_cast<__m512i*>(lo), s.x2lo);
    _mm512_store_si512(reinterpret_cast<__m512i*>(hi), s.x2hi);
    unsigned __int128 th = 0, tl = 0;  // (hi lanes < 2^63, lo lanes < 2^61)
    for (int j = 0; j < 8; ++j) {
      th += hi[j];
      tl += lo[j];
    }
    x2->add_shifted((th << 52) + tl, 2 * (e0 - 1));  // < 2^119
  }
}
CHATVEC_AVX512_TARGET inline void stats_finish(const StatAcc& s, BlockStats* out) {
  alignas(64) double lanes[8];
  out->above = s.up;
  _mm512_store_pd(lanes, s.l1);
  out->l1 = reduce_lanes(lanes);
  _mm512_store_pd(lanes, s.l2);
  out->l2 = reduce_lanes(lanes);
  _mm512_store_pd(lanes, s.tl2);
  out->tl2 = reduce_lanes(lanes);
}
// (x_bits: kX counts the elements whose |delta| bits are >= this; their
// exact sums are added to x1 / x2.)
template <int kNB, bool kBf16, bool kWin, bool kKept, bool kL1, bool kL2, bool kTgt, bool kX>
CHATVEC_AVX512_TARGET void stats_block_avx512(const uint8_t* __restrict c, const uint8_t* __restrict b,
                                              const float* __restrict d, const uint8_t* __restrict t, size_t m,
                                              uint32_t lo, uint32_t width, uint64_t* __restrict hist,
                                              uint32_t x_bits, BlockStats* out, ExactSum* x1, ExactSum* x2) {
  const uint32_t e0 = exact_e0(x_bits);
  const StatConsts k{_mm512_set1_epi32(0x7fffffff),          _mm512_set1_epi32(int(lo)),
                     _mm512_set1_epi32(int(width)),          _mm512_set1_epi32(int(lo + (width - 1))),
                     _mm512_set1_epi32(int(x_bits)),
                     _mm512_set1_epi32(int(exact_outlier_bits(e0))), _mm512_set1_pd(std::ldexp(1.0, 150 - int(e0))),
                     _mm512_set1_pd(std::ldexp(1.0, 2 * (150 - int(e0))))};
  StatAcc s0{_mm512_setzero_pd(),    _mm512_setzero_pd(),    _mm512_setzero_pd(), _mm512_setzero_si512(),
             _mm512_setzero_si512(), _mm512_setzero_si512(), 0},
      s1 = s0;
  // (kWin) the window bins of the elements inside it, 16 spare for the last
  // store; (kX) the outliers' bits.
  alignas(64) uint32_t inside[kWin ? kNB * kStatBlock + 16 : 1];
  alignas(64) uint32_t outl[kX ? kNB * kStatBlock + 16 : 1];
  size_t n_in = 0, n_out = 0;
  for (size_t i = 0; i < m; i += 16) {
    const __mmask16 km = m - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (m - i)) - 1);
    stats_step<kBf16, kWin, kKept, kL1, kL2, kTgt, kX>(s0, k, c, b, d, t, i, km, inside, n_in, outl, n_out);
    if constexpr (kNB == 2)
      stats_step<kBf16, kWin, kKept, kL1, kL2, kTgt, kX>(s1, k, c, b, d, t, i + kStatBlock, km, inside, n_in, outl,
                                                         n_out);
  }
  if constexpr (kWin)
    for (size_t j = 0; j < n_in; ++j) ++hist[inside[j]];
  if constexpr (kX) {
    exact_finish<kL1, kL2>(s0, e0, x1, x2);  // (the lanes, then the outliers)
    if constexpr (kNB == 2) exact_finish<kL1, kL2>(s1, e0, x1, x2);
    for (size_t j = 0; j < n_out; ++j) {
      if constexpr (kL1) x1->add_abs_bits(outl[j]);
      if constexpr (kL2) x2->add_sq_bits(outl[j]);
    }
  }
  if constexpr (!kKept) {
    stats_finish(s0, out);
    if constexpr (kNB == 2) stats_finish(s1, out + 1);
  }
}
using StatsFn = void (*)(const uint8_t*, const uint8_t*, const float*, const uint8_t*, size_t, uint32_t, uint32_t,
                         uint64_t*, uint32_t, BlockStats*, ExactSum*, ExactSum*);
// The kernel for these flags (kNB, kBf16, then win, kept, l1, l2, target,
// exact); null for combinations no pass uses.
template <int kNB, bool kBf16, bool kWin, bool kKept, bool kL1, bool kL2, bool kTgt, bool kX>
constexpr bool stats_valid() {
  if constexpr (kWin && kKept) return false;
  if constexpr (kKept && (!kX || kTgt)) return false;
  if constexpr (kX && ((!kWin && !kKept) || (!kL1 && !kL2))) return false;
  return true;
}
template <int kNB, bool... kFlags>
StatsFn stats_pick(const bool* flags, int left) {
  if (left == 0) {
    if constexpr (sizeof...(kFlags) == 7) {
      if constexpr (stats_valid<kNB, kFlags...>()) return &stats_block_avx512<kNB, kFlags...>;
    }
    return nullptr;
  } else if constexpr (sizeof...(kFlags) < 7) {
    return *flags ? stats_pick<kNB, kFlags..., true>(flags + 1, left - 1)
                  : stats_pick<kNB, kFlags..., false>(flags + 1, left - 1);
  }
  return nullptr;
}
#pragma GCC diagnostic pop
#else
bool cpu_has_avx512() { return false; }
#endif

enum PassKind { kFirst, kLowBits, kKept, kWindow };
// The sums a pass adds up: of |delta| (an L1 rescale), of delta^2 (an L2
// rescale, clipping).  Those not needed stay 0.
enum : unsigned { kL1Sum = 1, kL2Sum = 2 };

struct PassResult {
  std::vector<uint64_t> hist;            // kFirst: by the top 16 bits; kLowBits: by the low 16 bits;
                                         // kWindow: by the bits minus top_bin << 16 (bins top_bin..top_bin_hi)
  uint64_t above = 0;                    // kWindow: elements whose top 16 bits exceed top_bin_hi
  std::vector<double> l1, l2, tl2;       // per statistics block
  ExactSum x1, x2;  // (`exact`) the exact sums of |delta| and delta^2: kKept of the kept elements,
                    // kWindow of those above the window
};

// One pass over term `ti` of `task` (and the target for its norm).
PassResult run_pass(const TensorTask& task, const Space& sp, const TermOpsState& st, size_t ti, PassKind kind,
                    uint32_t top_bin, bool want_hist, bool want_target, unsigned sums, uint64_t step, int threads,
                    uint32_t top_bin_hi = 0, unsigned exact = 0) {
  const uint64_t n = sp.n;
  const uint64_t blocks = (n + kStatBlock - 1) / kStatBlock;
  PassResult r;
  r.l1.assign(blocks, 0);
  r.l2.assign(blocks, 0);
  if (want_target) r.tl2.assign(blocks, 0);
  const size_t hist_size = kind == kWindow ? size_t(top_bin_hi - top_bin + 1) << 16 : size_t(1) << 16;
  // (The histogram: the threads' own, added into the first at the end, so
  // that only one per thread is ever allocated.)
  const TensorTerm& term = task.terms[ti];
  const int nt = std::max(1, threads);
  std::vector<std::vector<uint64_t>> local(static_cast<size_t>(nt));
  std::vector<uint64_t> above(static_cast<size_t>(nt), 0);
  std::vector<ExactSum> x1(static_cast<size_t>(nt)), x2(static_cast<size_t>(nt));
  if (kind != kKept && kind != kWindow) exact = 0;
  if (kind == kKept) sums = 0;  // (its lane sums are not used: only the exact ones)
  // kX counts exactly the elements whose |delta| bits are >= x_bits.
  // (kWindow: the first pattern above the window's top bin.)
  const uint32_t x_bits =
      kind == kKept ? st.keep_bits : uint32_t(std::min<uint64_t>((uint64_t(top_bin_hi) + 1) << 16, 0x80000000u));
  // The fused statistics kernel (AVX-512), where it covers the pass: straight
  // from the bf16 pair when there is no DARE, else from the DARE'd block.
  StatsFn fused = nullptr, fused2 = nullptr;  // one block, two full blocks
  bool direct = false, fused_target = false;
#ifdef CHATVEC_AVX512
  if (g_fast_paths && cpu_has_avx512() && !sp.map &&
      (kind == kWindow || kind == kKept || (kind == kFirst && !want_hist))) {
    const CheckpointTensor* plus = term.vector ? term.vector : term.chat;
    direct = !term.vector && !st.dare_threshold && plus->dtype() == DType::BF16 &&
             term.base->dtype() == DType::BF16 && !plus->fp8_block_scales() && !term.base->fp8_block_scales();
    fused_target = want_target && task.target->dtype() == DType::BF16 && !task.target->fp8_block_scales();
    const unsigned which = kind == kKept ? exact : sums;
    const bool flags[7] = {direct, kind == kWindow, kind == kKept, (which & kL1Sum) != 0, (which & kL2Sum) != 0,
                           fused_target, exact != 0};
    fused = stats_pick<1>(flags, 7);
    fused2 = stats_pick<2>(flags, 7);
  }
#endif
  for (uint64_t first = 0; first < n; first += step) {
    check_interrupted();
    const uint64_t count = std::min(step, n - first);
    const int64_t b0 = int64_t(first / kStatBlock), b1 = int64_t((first + count + kStatBlock - 1) / kStatBlock);
#pragma omp parallel num_threads(nt) if (nt > 1 && b1 - b0 > 1)
    {
      const int me = omp_get_thread_num();
      std::vector<uint64_t>& h = local[size_t(me)];
      if (want_hist && h.empty()) h.assign(hist_size, 0);
      uint64_t my_above = 0;
      std::vector<float> d(2 * kStatBlock), scratch(2 * kStatBlock);
      if (fused) {
        // Two blocks at a time where both are whole (the results are per
        // block, whatever the grouping).
        const CheckpointTensor* plus = term.vector ? term.vector : term.chat;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < (b1 - b0 + 1) / 2; ++u) {
          const int64_t b = b0 + 2 * u;
          const uint64_t g = uint64_t(b) * kStatBlock;
          const size_t m = size_t(std::min(2 * kStatBlock, n - g));
          const int nb = b + 1 < b1 ? 2 : 1;
          if (!direct) term_delta(term, st, g, m, d.data(), scratch.data());
          BlockStats bs[2];
          const bool pair = nb == 2 && m == 2 * kStatBlock;
          for (int k = 0; k < (pair ? 1 : nb); ++k) {
            const uint64_t gk = g + uint64_t(k) * kStatBlock;
            (pair ? fused2 : fused)(direct ? plus->element(gk) : nullptr, direct ? term.base->element(gk) : nullptr,
                                    d.data() + size_t(k) * kStatBlock,
                                    fused_target ? task.target->element(gk) : nullptr,
                                    pair ? size_t(kStatBlock) : size_t(std::min(kStatBlock, n - gk)), top_bin << 16,
                                    uint32_t(hist_size), h.data(), x_bits, &bs[k], &x1[size_t(me)],
                                    &x2[size_t(me)]);
          }
          for (int k = 0; k < nb; ++k) {
            const size_t bk = size_t(b + k);
            my_above += bs[k].above;
            r.l1[bk] = bs[k].l1;
            r.l2[bk] = bs[k].l2;
            if (fused_target) {
              r.tl2[bk] = bs[k].tl2;
            } else if (want_target) {
              const uint64_t gk = g + uint64_t(k) * kStatBlock;
              const size_t mk = size_t(std::min(kStatBlock, n - gk));
              task.target->read_f32(gk, mk, d.data());
              r.tl2[bk] = lane_sum_sq(d.data(), mk);
            }
          }
        }
      } else {
#pragma omp for schedule(static)
      for (int64_t b = b0; b < b1; ++b) {
        const uint64_t g = uint64_t(b) * kStatBlock;
        const size_t m = size_t(std::min(kStatBlock, n - g));
        space_delta(term, st, sp, g, m, d.data(), scratch.data());
        double s1 = 0, s2 = 0;
        if (kind == kFirst && want_hist)
          for (size_t i = 0; i < m; ++i) ++h[abs_bits(d[i]) >> 16];
        if (kind == kWindow) {
          // Those above the window only counted (a loop the compiler
          // vectorises); the few inside it into their exact bins.
          my_above += window_count(d.data(), m, top_bin << 16, uint32_t(hist_size), h.data());
        }
        if (kind == kLowBits)
          for (size_t i = 0; i < m; ++i) {
            const uint32_t a = abs_bits(d[i]);
            if ((a >> 16) == top_bin) ++h[a & 0xffffu];
          }
        if (exact) exact_block(d.data(), m, x_bits, exact, &x1[size_t(me)], &x2[size_t(me)]);
        if (kind != kLowBits) {  // (kWindow: the sums of all, as kFirst; kKept: none)
          if (sums & kL1Sum) s1 = lane_sum_abs(d.data(), m);
          if (sums & kL2Sum) s2 = lane_sum_sq(d.data(), m);
        }
        r.l1[size_t(b)] = s1;
        r.l2[size_t(b)] = s2;
        if (want_target) {
          space_target(task, sp, g, m, d.data());
          r.tl2[size_t(b)] = lane_sum_sq(d.data(), m);
        }
      }
      }
      above[size_t(me)] += my_above;
    }
    space_release(task, term, sp, first, count);
  }
  for (uint64_t a : above) r.above += a;
  for (int i = 0; i < nt; ++i) {
    r.x1.add(x1[size_t(i)]);
    r.x2.add(x2[size_t(i)]);
  }
  if (want_hist) {
    for (auto& h : local) {
      if (h.empty()) continue;
      if (r.hist.empty())
        r.hist = std::move(h);
      else
        for (size_t i = 0; i < h.size(); ++i) r.hist[i] += h[i];
      std::vector<uint64_t>().swap(h);
    }
    if (r.hist.empty()) r.hist.assign(hist_size, 0);
  }
  return r;
}

double ordered_sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// The bin (from the top) where the rank-th largest falls, and its rank in it.
std::pair<uint32_t, uint64_t> find_rank(const std::vector<uint64_t>& hist, uint64_t rank) {
  uint64_t above = 0;
  for (size_t b = hist.size(); b-- > 0;) {
    if (above + hist[b] >= rank) return {uint32_t(b), rank - above};
    above += hist[b];
  }
  throw std::logic_error("find_rank: rank beyond the histogram");
}

// Where the rank-th largest |delta| (of n) probably is, from a sample of
// whole statistics blocks spread evenly over the tensor (DARE applied): the
// top-16-bit bins [lo, hi] holding the sample's order statistics a few
// standard deviations either side of the same fraction.  Only a guess: the
// windowed pass counts exactly and says whether the rank fell inside.
// Returns false when the window would be too wide to be worth it.
bool sample_window(const TensorTask& task, const Space& sp, const TermOpsState& st, size_t ti, uint64_t rank,
                   uint32_t* lo, uint32_t* hi) {
  const uint64_t n = sp.n;
  const uint64_t blocks = (n + kStatBlock - 1) / kStatBlock;
  constexpr uint64_t kSampleBlocks = 64;
  const uint64_t take = std::min(blocks, kSampleBlocks);
  // The sample's top 16 bits only (the window is made of those bins): a
  // histogram, and the order statistics read from its running counts.
  std::vector<uint32_t> bins(size_t(1) << 16, 0);
  uint64_t size = 0;
  std::vector<float> d(kStatBlock), scratch(kStatBlock);
  for (uint64_t i = 0; i < take; ++i) {
    const uint64_t b = i * blocks / take;
    const uint64_t g = b * kStatBlock;
    const size_t m = size_t(std::min(kStatBlock, n - g));
    space_delta(task.terms[ti], st, sp, g, m, d.data(), scratch.data());
    for (size_t j = 0; j < m; ++j) ++bins[abs_bits(d[j]) >> 16];
    size += m;
    space_release(task, task.terms[ti], sp, g, m);
  }
  const double s = double(size);
  const double q = double(rank) / double(n);  // fraction from the top
  const double margin = 4 * std::sqrt(s * q * (1 - q)) + 32;
  auto bin_at_rank = [&](double from_top) {  // the bin of the value with this rank from the top, clamped
    const double k = std::clamp(from_top, 1.0, s);
    const uint64_t idx = uint64_t(s - k);  // its index in ascending order
    uint64_t below = 0;
    for (uint32_t bin = 0;; ++bin) {
      below += bins[bin];
      if (below > idx) return bin;
    }
  };
  *lo = bin_at_rank(q * s + margin);
  *hi = bin_at_rank(q * s - margin);
  if (take == blocks) *lo = *hi = bin_at_rank(double(rank));  // the sample is the tensor: the exact bin
  if (g_force_window_miss) {  // test hook: a window that cannot hold the rank (just above the largest)
    *lo = *hi = std::min<uint32_t>(0x7fffu, bin_at_rank(1) + 1);
  }
  return *hi - *lo < 12;  // at most 12 x 65536 counters
}

}  // namespace

void set_vector_ops_fast_paths(bool on) { g_fast_paths = on; }
void set_vector_ops_force_window_miss(bool on) { g_force_window_miss = on; }
uint64_t vector_ops_fused_calls() { return g_fused_calls.load(); }

OpsState prepare_vector_ops(const TensorTask& task, uint64_t chunk_elements, int threads) {
  const VectorOps& ops = task.ops;
  const uint64_t step = std::max(kStatBlock, chunk_elements / kStatBlock * kStatBlock);
  OpsState s;
  for (const TensorTerm& term : task.terms) {
    TermOpsState st;
    if (ops.dare > 0) {
      st.dare_state = dare_state(task.name, ops.seed, term.index);
      st.dare_threshold = dare_drop_threshold(ops.dare);
      st.dare_scale = float(1.0 / (1.0 - ops.dare));
    }
    s.terms.push_back(st);
  }
  const bool prune = ops.keep < 1;
  const bool clip = ops.clip > 0;
  const bool rescale = prune && ops.rescale != PruneRescale::None;
  if (!prune && !clip) return s;
  const unsigned sums = (prune && ops.rescale == PruneRescale::L1 ? kL1Sum : 0u) |
                        ((prune && ops.rescale == PruneRescale::L2) || clip ? kL2Sum : 0u);
  for (size_t ti = 0; ti < task.terms.size(); ++ti) {
    TermOpsState& st = s.terms[ti];
    const Space sp = make_space(task, task.terms[ti]);
    const uint64_t n = sp.n;
    if (n == 0) continue;  // (a vocabulary tensor none of whose rows this term is added to)
    const uint64_t rank = prune ? std::clamp<uint64_t>(uint64_t(std::ceil(ops.keep * double(n))), 1, n) : 0;
    // Pruning: first one pass that counts exactly inside a window guessed
    // from a sample (hit: that pass gives the threshold); on a miss, the two
    // histogram passes (top 16 bits, then low 16 bits in the right bin).
    uint32_t w_lo = 0, w_hi = 0;
    bool have_window = prune && sample_window(task, sp, st, ti, rank, &w_lo, &w_hi);
    bool found = false;
    uint32_t window_bits = 0;
    PassResult first;
    // (The kept elements' exact sums, for a rescale or clip: on a hit those
    // above the window from its pass, those in it from its histogram.)
    const unsigned kept_sums = prune ? sums : 0u;
    if (have_window) {
      first = run_pass(task, sp, st, ti, kWindow, w_lo, true, clip, sums, step, threads, w_hi, kept_sums);
      uint64_t inside = 0;
      for (uint64_t c : first.hist) inside += c;
      if (first.above < rank && first.above + inside >= rank) {
        const auto [pos, unused] = find_rank(first.hist, rank - first.above);
        (void)unused;
        window_bits = (w_lo << 16) + pos;
        found = true;
      }
    }
    if (!have_window || (!found && (rescale || clip)))  // (a hit has the sums already)
      first = run_pass(task, sp, st, ti, kFirst, 0, prune && !found, clip, sums, step, threads);
    else if (!found)
      first = run_pass(task, sp, st, ti, kFirst, 0, true, false, 0, step, threads);
    st.l1_all = ordered_sum(first.l1);
    st.l2sq_all = ordered_sum(first.l2);
    st.l1_kept = st.l1_all;
    st.l2sq_kept = st.l2sq_all;
    if (clip) st.target_l2sq = ordered_sum(first.tl2);
    double rescale_factor = 1;
    if (prune) {
      st.kept_threshold_rank = rank;
      if (found) {
        st.keep_bits = window_bits;
      } else {
        const auto [bin, in_bin] = find_rank(first.hist, rank);
        PassResult low = run_pass(task, sp, st, ti, kLowBits, bin, true, false, 0, step, threads);
        const auto [lo, unused] = find_rank(low.hist, in_bin);
        (void)unused;
        st.keep_bits = (bin << 16) | lo;
      }
      st.prune = true;
      st.window_hit = found;
      if (kept_sums) {
        ExactSum x1, x2;
        if (found) {
          x1 = first.x1;
          x2 = first.x2;
          for (size_t i = 0; i < first.hist.size(); ++i) {
            const uint32_t bits = (w_lo << 16) + uint32_t(i);
            if (first.hist[i] == 0 || bits < st.keep_bits) continue;
            if (kept_sums & kL1Sum) x1.add_abs_bits(bits, first.hist[i]);
            if (kept_sums & kL2Sum) x2.add_sq_bits(bits, first.hist[i]);
          }
        } else {
          PassResult kept = run_pass(task, sp, st, ti, kKept, 0, false, false, 0, step, threads, 0, kept_sums);
          x1 = kept.x1;
          x2 = kept.x2;
        }
        if (kept_sums & kL1Sum) st.l1_kept = x1.abs_value();
        if (kept_sums & kL2Sum) st.l2sq_kept = x2.sq_value();
      }
      if (ops.rescale == PruneRescale::L1 && st.l1_kept > 0) rescale_factor = st.l1_all / st.l1_kept;
      if (ops.rescale == PruneRescale::L2 && st.l2sq_kept > 0) rescale_factor = std::sqrt(st.l2sq_all / st.l2sq_kept);
    }
    double clip_factor = 1;
    if (clip) {
      const double norm = rescale_factor * std::sqrt(st.l2sq_kept);
      const double limit = ops.clip * std::sqrt(st.target_l2sq);
      if (norm > limit && norm > 0) clip_factor = limit / norm;
    }
    st.factor = float(rescale_factor * clip_factor);
  }
  return s;
}

namespace {

// Steps 2-4 of docs/operations.md on a term's block, after DARE: pruning,
// the rescale/clip factor, the ratio.
void shape_term(const TensorTerm& term, const TermOpsState& st, float* d, size_t n) {
  if (st.prune) prune_block(d, n, st.keep_bits);
  if (st.factor != 1.0f)
    for (size_t i = 0; i < n; ++i) d[i] = d[i] * st.factor;
  const float r = float(term.ratio);
  if (r != 1.0f)
    for (size_t i = 0; i < n; ++i) d[i] = r * d[i];
}

// Step 5: the terms (term ti's block at d0 + ti * kBlock; those with
// active[ti] false take no part) added to the target's block in acc, left to
// right, or by TIES.
void add_terms(bool ties, const float* d0, const std::vector<char>& active, float* acc, size_t n) {
  const size_t terms = active.size();
  if (!ties) {
    for (size_t ti = 0; ti < terms; ++ti) {
      if (!active[ti]) continue;
      const float* d = d0 + ti * kBlock;
      for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + d[i];
    }
    return;
  }
  // TIES: the sign of the total, then the mean of the nonzero values of
  // that sign (term order); nothing added where the total is zero.
  for (size_t i = 0; i < n; ++i) {
    float total = 0.0f;
    for (size_t ti = 0; ti < terms; ++ti)
      if (active[ti]) total = total + d0[ti * kBlock + i];
    float sum = 0.0f;
    int count = 0;
    for (size_t ti = 0; ti < terms; ++ti) {
      if (!active[ti]) continue;
      const float v = d0[ti * kBlock + i];
      if ((total > 0.0f && v > 0.0f) || (total < 0.0f && v < 0.0f)) {
        sum = sum + v;
        ++count;
      }
    }
    const float merged = count ? sum / float(count) : 0.0f;
    acc[i] = acc[i] + merged;
  }
}

}  // namespace

void combine_ops_range(const TensorTask& task, const OpsState& state, void* out, uint64_t out_first, uint64_t begin,
                       uint64_t end) {
  if (try_fused_bf16(task, state, out, out_first, begin, end)) return;
  const size_t terms = task.terms.size();
  std::vector<float> buf((terms + 2) * kBlock);
  float* acc = buf.data();
  float* scratch = acc + kBlock;
  float* d0 = scratch + kBlock;
  const std::vector<char> active(terms, 1);
  const size_t es = dtype_bits(task.dtype) / 8;
  for (uint64_t b = begin; b < end; b += kBlock) {
    const size_t n = size_t(std::min<uint64_t>(kBlock, end - b));
    for (size_t ti = 0; ti < terms; ++ti) {
      float* d = d0 + ti * kBlock;
      term_delta(task.terms[ti], state.terms[ti], b, n, d, scratch);
      shape_term(task.terms[ti], state.terms[ti], d, n);
    }
    task.target->read_f32(b, n, acc);
    add_terms(task.ops.ties, d0, active, acc, n);
    convert_from_f32(acc, n, task.dtype, static_cast<uint8_t*>(out) + (b - out_first) * es);
  }
}

void combine_ops_row(const TensorTask& task, const OpsState& state, const RowOp& r, void* out) {
  if (!task.target || r.kind != RowOp::Combine) throw std::logic_error("combine_ops_row: not a combined row");
  const uint64_t w = task.shape.at(1);
  const size_t terms = task.terms.size();
  thread_local std::vector<float> buf;
  buf.resize((terms + 2) * kBlock);
  float* acc = buf.data();
  float* scratch = acc + kBlock;
  float* d0 = scratch + kBlock;
  std::vector<char> active(terms);
  for (size_t ti = 0; ti < terms; ++ti) active[ti] = term_adds_row(task.terms[ti], r);
  const size_t es = dtype_bits(task.dtype) / 8;
  for (uint64_t col = 0; col < w; col += kBlock) {
    const size_t n = size_t(std::min<uint64_t>(kBlock, w - col));
    for (size_t ti = 0; ti < terms; ++ti) {
      if (!active[ti]) continue;
      float* d = d0 + ti * kBlock;
      row_delta(task.terms[ti], state.terms[ti], r, w, col, n, d, scratch);
      shape_term(task.terms[ti], state.terms[ti], d, n);
    }
    task.target->read_f32(uint64_t(r.target_row) * w + col, n, acc);
    add_terms(task.ops.ties, d0, active, acc, n);
    convert_from_f32(acc, n, task.dtype, static_cast<uint8_t*>(out) + col * es);
  }
}

}  // namespace chatvec

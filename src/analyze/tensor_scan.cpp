#include "analyze/tensor_scan.h"

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>

#include "core/dtype.h"
#include "core/error.h"
#include "core/interrupt.h"

namespace chatvec {

namespace {

// The hot loops are compiled for AVX-512 (x86-64-v4), AVX2 and the
// baseline, chosen at load time by the CPU's features; every operation is
// the scalar one lane by lane (no FMA contraction: -ffp-contract=off), so
// the results are the same whichever runs.
// (clang, e.g. the fuzz build, has no target_clones on function templates:
// the default code there.)
#ifdef __clang__
#define CHATVEC_AN_CLONES
#else
#define CHATVEC_AN_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif

constexpr uint64_t B = kAnalyzeBlock;
// Every sum over a block runs in kLanes lanes: element i of the block goes
// to lane i mod kLanes, each lane adds its elements in order, and the lanes
// are added pairwise at the end of the block (fold() below).  The order
// depends on the position in the block only, so it is the same for any
// thread count and chunk size, and the compiler can keep the lanes in
// vector registers.
constexpr size_t kLanes = 8;

inline double fold(const double* a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

// The radix levels over the 63 bits of a non-negative double's pattern:
// the digit of level L is (key >> shift) & (2^width - 1); the bits above
// shift + width were fixed by the levels before.
struct Level {
  int shift, width;
};
constexpr Level kLevels[4] = {{47, 16}, {31, 16}, {15, 16}, {0, 15}};
constexpr size_t kBins = size_t(1) << 16;

inline uint64_t key_of(double d) {
  const double a = std::fabs(d);
  uint64_t k;
  std::memcpy(&k, &a, 8);
  return k;
}
inline double value_of(uint64_t k) {
  double d;
  std::memcpy(&d, &k, 8);
  return d;
}

// A histogram bin: how many keys fell in it, and the OR of the keys and of
// their complements.  All its keys are equal ("pure") exactly when
// any == ~any_not: then the bin holds one value, known without another pass.
struct Bin {
  uint64_t n = 0, any = 0, any_not = 0;
  bool pure() const { return n > 0 && any == ~any_not; }
};
inline void count_key(Bin* h, size_t d, uint64_t k) {
  Bin& b = h[d];
  ++b.n;
  b.any |= k;
  b.any_not |= ~k;
}
void merge_bins(std::vector<Bin>& into, const std::vector<Bin>& from) {
  for (size_t d = 0; d < into.size(); ++d) {
    into[d].n += from[d].n;
    into[d].any |= from[d].any;
    into[d].any_not |= from[d].any_not;
  }
}

// What the kernels read: the stored values as they are (BF16, F32, F64), or
// converted exactly to F32 (F16, and mixed 16/32-bit inputs) or to F64
// (inputs with an F64 among them) in a staging buffer.
enum class Repr { BF16, F32, F64 };

size_t repr_size(Repr r) { return r == Repr::BF16 ? 2 : r == Repr::F32 ? 4 : 8; }

template <Repr R>
inline double ld(const uint8_t* p, size_t i) {
  if constexpr (R == Repr::BF16) {
    uint16_t u;
    std::memcpy(&u, p + 2 * i, 2);
    const uint32_t w = uint32_t(u) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return double(f);
  } else if constexpr (R == Repr::F32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return double(f);
  } else {
    double d;
    std::memcpy(&d, p + 8 * i, 8);
    return d;
  }
}

// Four lanes at once (GCC vector extensions; kLanes = two of them): the
// compiler maps them onto the machine's registers, and every operation is
// the scalar one lane by lane, so the results are the same on every
// instruction set.
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef uint16_t v4h __attribute__((vector_size(8)));
static_assert(kLanes == 8);

template <Repr R>
inline __attribute__((always_inline)) v4d ld4(const uint8_t* p, size_t i) {
  if constexpr (R == Repr::BF16) {
    v4h h;
    std::memcpy(&h, p + 2 * i, sizeof h);
    const v4u w = __builtin_convertvector(h, v4u) << 16;
    v4f f;
    std::memcpy(&f, &w, sizeof f);
    return __builtin_convertvector(f, v4d);
  } else if constexpr (R == Repr::F32) {
    v4f f;
    std::memcpy(&f, p + 4 * i, sizeof f);
    return __builtin_convertvector(f, v4d);
  } else {
    v4d d;
    std::memcpy(&d, p + 8 * i, sizeof d);
    return d;
  }
}
inline __attribute__((always_inline)) v4d vabs(v4d x) {
  v4l b;
  std::memcpy(&b, &x, sizeof b);
  b &= INT64_MAX;
  std::memcpy(&x, &b, sizeof b);
  return x;
}
inline __attribute__((always_inline)) v4d vkeep(v4d x, v4l mask) {  // x where mask (all ones), else +0
  v4l b;
  std::memcpy(&b, &x, sizeof b);
  b &= mask;
  std::memcpy(&x, &b, sizeof b);
  return x;
}
// The kLanes lanes of a pair of vectors (lanes 0-3, 4-7).
template <class V, class T>
inline void lanes(const V* v, T* a) {
  std::memcpy(a, &v[0], sizeof(V));
  std::memcpy(a + 4, &v[1], sizeof(V));
}

// The sums of pass 1 over one block, lane by lane.
struct Sums1 {
  double bsq = 0, csq = 0, cl1 = 0, tsq = 0, dot = 0;
  uint64_t cnz = 0, both = 0, agree = 0;
  bool selected = false;  // the selection work of the block is done too (fused_kernel)
};

// Pass 1 over one block of m elements: δc to dc[], every sum.  δc and δt
// are computed in float64 from the exactly widened values.
template <Repr R, bool kT>
CHATVEC_AN_CLONES void pass1_kernel(const uint8_t* __restrict b,
                                                                    const uint8_t* __restrict c,
                                                                    const uint8_t* __restrict t, size_t m,
                                                                    double* __restrict dc, Sums1& out) {
  v4d vbsq[2] = {}, vcsq[2] = {}, vcl1[2] = {}, vtsq[2] = {}, vdot[2] = {};
  v4l vcnz[2] = {}, vboth[2] = {}, vagree[2] = {};  // minus the counts (a true comparison is -1)
  const size_t full = m / kLanes * kLanes;
  for (size_t i = 0; i < full; i += kLanes) {
    for (int h = 0; h < 2; ++h) {
      const size_t at = i + 4 * size_t(h);
      const v4d bv = ld4<R>(b, at), d = ld4<R>(c, at) - bv;
      std::memcpy(dc + at, &d, sizeof d);
      vbsq[h] += bv * bv;
      vcsq[h] += d * d;
      vcl1[h] += vabs(d);
      const v4l dnz = d != 0;
      vcnz[h] += dnz;
      if constexpr (kT) {
        const v4d e = ld4<R>(t, at) - bv;
        vtsq[h] += e * e;
        vdot[h] += d * e;
        const v4l nz = dnz & (e != 0);
        vboth[h] += nz;
        vagree[h] += nz & ((d > 0) == (e > 0));
      }
    }
  }
  double bsq[kLanes], csq[kLanes], cl1[kLanes], tsq[kLanes], dot[kLanes];
  int64_t cnz[kLanes], both[kLanes], agree[kLanes];
  lanes(vbsq, bsq), lanes(vcsq, csq), lanes(vcl1, cl1), lanes(vtsq, tsq), lanes(vdot, dot);
  lanes(vcnz, cnz), lanes(vboth, both), lanes(vagree, agree);
  for (size_t i = full; i < m; ++i) {  // the tail, into lanes 0, 1, ...
    const size_t j = i - full;
    const double bv = ld<R>(b, i), d = ld<R>(c, i) - bv;
    dc[i] = d;
    bsq[j] += bv * bv;
    csq[j] += d * d;
    cl1[j] += std::fabs(d);
    cnz[j] -= d != 0;
    if constexpr (kT) {
      const double e = ld<R>(t, i) - bv;
      tsq[j] += e * e;
      dot[j] += d * e;
      const bool nz = d != 0 && e != 0;
      both[j] -= nz;
      agree[j] -= nz && ((d > 0) == (e > 0));
    }
  }
  auto count = [](const int64_t* a) { return uint64_t(-(a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7])); };
  out.bsq = fold(bsq);
  out.csq = fold(csq);
  out.cl1 = fold(cl1);
  out.cnz = count(cnz);
  if constexpr (kT) {
    out.tsq = fold(tsq);
    out.dot = fold(dot);
    out.both = count(both);
    out.agree = count(agree);
  }
}

// δc only (the later passes).
template <Repr R>
CHATVEC_AN_CLONES void delta_kernel(const uint8_t* __restrict b,
                                                                    const uint8_t* __restrict c, size_t m,
                                                                    double* __restrict dc) {
  const size_t full = m / 4 * 4;
  for (size_t i = 0; i < full; i += 4) {
    const v4d d = ld4<R>(c, i) - ld4<R>(b, i);
    std::memcpy(dc + i, &d, sizeof d);
  }
  for (size_t i = full; i < m; ++i) dc[i] = ld<R>(c, i) - ld<R>(b, i);
}

struct Above {
  uint64_t count = 0;
  double l1 = 0, l2 = 0;
};

// The count, Σ|δc| and Σδc² of the block's elements with |δc| > lim, in
// lanes (an element at or below lim adds +0).
CHATVEC_AN_CLONES void above_kernel(const double* __restrict dc, size_t m,
                                                                    double lim, Above& out) {
  v4d vl1[2] = {}, vl2[2] = {};
  v4l vcnt[2] = {};
  const size_t full = m / kLanes * kLanes;
  for (size_t i = 0; i < full; i += kLanes)
    for (int h = 0; h < 2; ++h) {
      v4d x;
      std::memcpy(&x, dc + i + 4 * size_t(h), sizeof x);
      const v4d v = vabs(x);
      const v4l hi = v > lim;
      const v4d w = vkeep(v, hi);
      vcnt[h] += hi;
      vl1[h] += w;
      vl2[h] += w * w;
    }
  double l1[kLanes], l2[kLanes];
  int64_t cnt[kLanes];
  lanes(vl1, l1), lanes(vl2, l2), lanes(vcnt, cnt);
  for (size_t i = full; i < m; ++i) {
    const size_t j = i - full;
    const double v = std::fabs(dc[i]);
    const double w = v > lim ? v : 0.0;
    cnt[j] -= v > lim;
    l1[j] += w;
    l2[j] += w * w;
  }
  out.count = uint64_t(-(cnt[0] + cnt[1] + cnt[2] + cnt[3] + cnt[4] + cnt[5] + cnt[6] + cnt[7]));
  out.l1 = fold(l1);
  out.l2 = fold(l2);
}

// The keys of the block's elements with lo <= |δc| <= hi, appended to `out`
// while it holds fewer than `cap`; `count` counts them all.
CHATVEC_AN_CLONES void gather_kernel(const double* __restrict dc, size_t m,
                                                                     double lo, double hi,
                                                                     std::vector<uint64_t>& out, uint64_t& count,
                                                                     uint64_t cap) {
  auto take = [&](double v) {
    ++count;
    if (out.size() < cap) {
      uint64_t k;
      std::memcpy(&k, &v, 8);
      out.push_back(k);
    }
  };
  const size_t full = m / 4 * 4;
  for (size_t i = 0; i < full; i += 4) {
    v4d x;
    std::memcpy(&x, dc + i, sizeof x);
    const v4d v = vabs(x);
    const v4l in = (v >= lo) & (v <= hi);
    if ((in[0] | in[1] | in[2] | in[3]) == 0) continue;
    for (int j = 0; j < 4; ++j)
      if (in[j]) take(v[j]);
  }
  for (size_t i = full; i < m; ++i) {
    const double v = std::fabs(dc[i]);
    if (v >= lo && v <= hi) take(v);
  }
}

// Distinct keys and how often each occurred (open addressing, grown as
// needed); after kMaxDistinct distinct keys it stops taking new ones and
// says it overflowed.  Counts are integers, so merging the maps of several
// threads gives the same result in any order.
class KeyCounts {
 public:
  static constexpr size_t kMaxDistinct = size_t(1) << 18;
  void add(uint64_t k) {
    if (slots_.empty()) rehash(10);
    size_t i = slot_of(k);
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) {
        ++slots_[i].n;
        return;
      }
      if (slots_[i].key == kEmpty) break;
    }
    if (over_) return;
    slots_[i] = Slot{k, 1};
    if (++used_ >= kMaxDistinct) over_ = true;
    else if (used_ * 2 > slots_.size()) rehash(bits_ + 1);
  }
  bool overflowed() const { return over_; }
  template <class Fn>
  void each(Fn&& fn) const {
    for (const Slot& s : slots_)
      if (s.key != kEmpty) fn(s.key, s.n);
  }

 private:
  static constexpr uint64_t kEmpty = UINT64_MAX;  // no key of a finite |δc| has the top bit set
  struct Slot {
    uint64_t key = kEmpty, n = 0;
  };
  size_t slot_of(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> (64 - bits_)); }
  void rehash(int bits) {
    std::vector<Slot> old;
    old.swap(slots_);
    bits_ = bits;
    slots_.assign(size_t(1) << bits, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old)
      if (s.key != kEmpty) {
        size_t i = slot_of(s.key);
        while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
        slots_[i] = s;
      }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, used_ = 0;
  int bits_ = 0;
  bool over_ = false;
};

// For each window w < nw, the keys of the block's elements with
// lo[w] <= |δc| <= hi[w], counted in into[w]: one scan for all windows,
// branching only on groups of four that hold a candidate.
CHATVEC_AN_CLONES void window_kernel(const double* __restrict dc, size_t m,
                                                                     const double* lo, const double* hi,
                                                                     size_t nw, KeyCounts* into) {
  const size_t full = m / 4 * 4;
  for (size_t i = 0; i < full; i += 4) {
    v4d x;
    std::memcpy(&x, dc + i, sizeof x);
    const v4d v = vabs(x);
    v4l any = {};
    for (size_t w = 0; w < nw; ++w) any |= (v >= lo[w]) & (v <= hi[w]);
    if ((any[0] | any[1] | any[2] | any[3]) == 0) continue;
    for (int j = 0; j < 4; ++j)
      if (any[j])
        for (size_t w = 0; w < nw; ++w)
          if (v[j] >= lo[w] && v[j] <= hi[w]) into[w].add(key_of(v[j]));
  }
  for (size_t i = full; i < m; ++i) {
    const double v = std::fabs(dc[i]);
    for (size_t w = 0; w < nw; ++w)
      if (v >= lo[w] && v <= hi[w]) into[w].add(key_of(v));
  }
}

// Pass 1's selection work on one block with NW windows, in one scan of δc:
// the level-0 histogram (counts only), for each window the mass above it
// (in lanes, exactly as above_kernel) and its values (as window_kernel).
template <size_t NW, bool kHist = true>
CHATVEC_AN_CLONES void select_kernel(const double* __restrict dc, size_t m,
                                                                     const double* lo, const double* hi,
                                                                     Above* above, KeyCounts* into, Bin* h) {
  v4d vl1[NW][2] = {}, vl2[NW][2] = {};
  v4l vcnt[NW][2] = {};
  double wlo[NW], whi[NW];
  for (size_t w = 0; w < NW; ++w) wlo[w] = lo[w], whi[w] = hi[w];
  const size_t full = m / kLanes * kLanes;
  for (size_t i = 0; i < full; i += kLanes)
    for (int half = 0; half < 2; ++half) {
      const size_t at = i + 4 * size_t(half);
      v4d x;
      std::memcpy(&x, dc + at, sizeof x);
      const v4d v = vabs(x);
      v4l keys;
      std::memcpy(&keys, &v, sizeof keys);
      if constexpr (kHist)
        for (int j = 0; j < 4; ++j) ++h[uint64_t(keys[j]) >> kLevels[0].shift].n;
      v4l any = {};
      for (size_t w = 0; w < NW; ++w) {
        const v4l up = v > whi[w];
        const v4d kept = vkeep(v, up);
        vcnt[w][half] += up;
        vl1[w][half] += kept;
        vl2[w][half] += kept * kept;
        any |= (v >= wlo[w]) & ~up;
      }
      if ((any[0] | any[1] | any[2] | any[3]) == 0) continue;
      for (int j = 0; j < 4; ++j)
        if (any[j])
          for (size_t w = 0; w < NW; ++w)
            if (v[j] >= wlo[w] && v[j] <= whi[w]) into[w].add(uint64_t(keys[j]));
    }
  for (size_t w = 0; w < NW; ++w) {
    double l1[kLanes], l2[kLanes];
    int64_t cnt[kLanes];
    lanes(vl1[w], l1), lanes(vl2[w], l2), lanes(vcnt[w], cnt);
    for (size_t i = full; i < m; ++i) {
      const size_t j = i - full;
      const double v = std::fabs(dc[i]);
      const double kept = v > whi[w] ? v : 0.0;
      cnt[j] -= v > whi[w];
      l1[j] += kept;
      l2[j] += kept * kept;
      if (v >= wlo[w] && v <= whi[w]) into[w].add(key_of(v));
    }
    above[w].count = uint64_t(-(cnt[0] + cnt[1] + cnt[2] + cnt[3] + cnt[4] + cnt[5] + cnt[6] + cnt[7]));
    above[w].l1 = fold(l1);
    above[w].l2 = fold(l2);
  }
  if constexpr (kHist)
    for (size_t i = full; i < m; ++i) ++h[key_of(dc[i]) >> kLevels[0].shift].n;
}

// select_kernel for a window count known at run time (1 to 9).
template <bool kHist>
void select_windows(size_t nw, const double* dc, size_t m, const double* lo, const double* hi, Above* above,
                    KeyCounts* into, Bin* h) {
  switch (nw) {
    case 1: return select_kernel<1, kHist>(dc, m, lo, hi, above, into, h);
    case 2: return select_kernel<2, kHist>(dc, m, lo, hi, above, into, h);
    case 3: return select_kernel<3, kHist>(dc, m, lo, hi, above, into, h);
    case 4: return select_kernel<4, kHist>(dc, m, lo, hi, above, into, h);
    case 5: return select_kernel<5, kHist>(dc, m, lo, hi, above, into, h);
    case 6: return select_kernel<6, kHist>(dc, m, lo, hi, above, into, h);
    case 7: return select_kernel<7, kHist>(dc, m, lo, hi, above, into, h);
    case 8: return select_kernel<8, kHist>(dc, m, lo, hi, above, into, h);
    case 9: return select_kernel<9, kHist>(dc, m, lo, hi, above, into, h);
    default: throw std::logic_error("analyze: too many windows");
  }
}

// Pass 1 and its selection work fused (BF16 or F32 inputs, with windows;
// AVX-512 only, see fused_ok()): the sums of pass1_kernel and the scan of
// select_kernel<NW, true> in one loop over the stored values, eight
// elements (one register, element i of the block in lane i mod 8) at a
// time, δc kept in registers instead of a block buffer, the counts summed
// from the compare masks.  Each lane takes the same values in the same
// order as in the two kernels (an element at or below a window adds +0 to
// a sum that is never -0), the tail and the order in which window keys are
// added are theirs, so the bits are the same (tests/analyze: the JSON with
// CHATVEC_ANALYZE_UNFUSED=1 is the same file).
#if defined(__x86_64__)
bool fused_ok() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("popcnt");
  return yes;
}
#else
bool fused_ok() { return false; }
#endif

#if defined(__x86_64__)
#define CHATVEC_AN_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,popcnt")))


template <Repr R>
CHATVEC_AN_AVX512 inline __m512d ld8(const uint8_t* p, size_t i) {
  if constexpr (R == Repr::BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    return _mm512_maskz_cvtps_pd(__mmask8(0xFF), _mm256_castsi256_ps(w));  // (maskz: GCC 12 warns on the plain one)
  } else {
    static_assert(R == Repr::F32);
    return _mm512_maskz_cvtps_pd(__mmask8(0xFF), _mm256_loadu_ps(reinterpret_cast<const float*>(p + 4 * i)));
  }
}

template <Repr R, bool kT, size_t NW>
CHATVEC_AN_AVX512 void fused_kernel(const uint8_t* __restrict b, const uint8_t* __restrict c,
                                    const uint8_t* __restrict t, size_t m, Sums1& out, const double* lo,
                                    const double* hi, Above* above, KeyCounts* into) {
  const __m512d zero = _mm512_setzero_pd();
  const __m512i absmask = _mm512_set1_epi64(INT64_MAX);
  __m512d vbsq = zero, vcsq = zero, vcl1 = zero, vtsq = zero, vdot = zero;
  uint64_t ncnz = 0, nboth = 0, nagree = 0, ncnt[NW] = {};
  __m512d vl1[NW], vl2[NW], vlo[NW], vhi[NW];
  double wlo[NW], whi[NW];
  for (size_t w = 0; w < NW; ++w) {
    wlo[w] = lo[w], whi[w] = hi[w];
    vl1[w] = zero, vl2[w] = zero;
    vlo[w] = _mm512_set1_pd(lo[w]), vhi[w] = _mm512_set1_pd(hi[w]);
  }
  const size_t full = m / kLanes * kLanes;
  uint32_t cand[B / kLanes];
  __mmask8 candm[B / kLanes];
  size_t nc = 0;
  for (size_t i = 0; i < full; i += kLanes) {
    const __m512d bv = ld8<R>(b, i), d = _mm512_sub_pd(ld8<R>(c, i), bv);
    vbsq = _mm512_add_pd(vbsq, _mm512_mul_pd(bv, bv));
    vcsq = _mm512_add_pd(vcsq, _mm512_mul_pd(d, d));
    const __m512i keys = _mm512_and_si512(_mm512_castpd_si512(d), absmask);
    const __m512d v = _mm512_castsi512_pd(keys);
    vcl1 = _mm512_add_pd(vcl1, v);
    const __mmask8 dnz = _mm512_cmp_pd_mask(d, zero, _CMP_NEQ_UQ);
    ncnz += unsigned(__builtin_popcount(dnz));
    if constexpr (kT) {
      const __m512d e = _mm512_sub_pd(ld8<R>(t, i), bv);
      vtsq = _mm512_add_pd(vtsq, _mm512_mul_pd(e, e));
      vdot = _mm512_add_pd(vdot, _mm512_mul_pd(d, e));
      const __mmask8 nz = dnz & _mm512_cmp_pd_mask(e, zero, _CMP_NEQ_UQ);
      const __mmask8 same = __mmask8(~(_mm512_cmp_pd_mask(d, zero, _CMP_GT_OQ) ^ _mm512_cmp_pd_mask(e, zero, _CMP_GT_OQ)));
      nboth += unsigned(__builtin_popcount(nz));
      nagree += unsigned(__builtin_popcount(__mmask8(nz & same)));
    }
    __mmask8 any = 0;
    for (size_t w = 0; w < NW; ++w) {
      const __mmask8 up = _mm512_cmp_pd_mask(v, vhi[w], _CMP_GT_OQ);
      const __m512d kept = _mm512_maskz_mov_pd(up, v);
      ncnt[w] += unsigned(__builtin_popcount(up));
      vl1[w] = _mm512_add_pd(vl1[w], kept);
      vl2[w] = _mm512_add_pd(vl2[w], _mm512_mul_pd(kept, kept));
      any |= __mmask8(_mm512_cmp_pd_mask(v, vlo[w], _CMP_GE_OQ) & ~up);
    }
    // Candidates noted, added after the loop (no call in it, so the sums
    // stay in registers): the same keys in the same order.
    cand[nc] = uint32_t(i);
    candm[nc] = any;
    nc += any != 0;
  }
  for (size_t k = 0; k < nc; ++k)
    for (size_t j = 0; j < kLanes; ++j)
      if (candm[k] >> j & 1) {
        const size_t i = cand[k] + j;
        const double v = std::fabs(ld<R>(c, i) - ld<R>(b, i));
        for (size_t w = 0; w < NW; ++w)
          if (v >= wlo[w] && v <= whi[w]) into[w].add(key_of(v));
      }
  alignas(64) double bsq[kLanes], csq[kLanes], cl1[kLanes], tsq[kLanes], dot[kLanes];
  _mm512_store_pd(bsq, vbsq), _mm512_store_pd(csq, vcsq), _mm512_store_pd(cl1, vcl1);
  _mm512_store_pd(tsq, vtsq), _mm512_store_pd(dot, vdot);
  double dt[kLanes];  // the tail's δc (fewer than kLanes)
  for (size_t i = full; i < m; ++i) {  // the tail, into lanes 0, 1, ...
    const size_t j = i - full;
    const double bv = ld<R>(b, i), d = ld<R>(c, i) - bv;
    dt[j] = d;
    bsq[j] += bv * bv;
    csq[j] += d * d;
    cl1[j] += std::fabs(d);
    ncnz += d != 0;
    if constexpr (kT) {
      const double e = ld<R>(t, i) - bv;
      tsq[j] += e * e;
      dot[j] += d * e;
      const bool nz = d != 0 && e != 0;
      nboth += nz;
      nagree += nz && ((d > 0) == (e > 0));
    }
  }
  out.bsq = fold(bsq);
  out.csq = fold(csq);
  out.cl1 = fold(cl1);
  out.cnz = ncnz;
  if constexpr (kT) {
    out.tsq = fold(tsq);
    out.dot = fold(dot);
    out.both = nboth;
    out.agree = nagree;
  }
  for (size_t w = 0; w < NW; ++w) {  // as select_kernel's tail: window by window
    alignas(64) double l1[kLanes], l2[kLanes];
    _mm512_store_pd(l1, vl1[w]), _mm512_store_pd(l2, vl2[w]);
    for (size_t i = full; i < m; ++i) {
      const size_t j = i - full;
      const double v = std::fabs(dt[j]);
      const double kept = v > whi[w] ? v : 0.0;
      ncnt[w] += v > whi[w];
      l1[j] += kept;
      l2[j] += kept * kept;
      if (v >= wlo[w] && v <= whi[w]) into[w].add(key_of(v));
    }
    above[w].count = ncnt[w];
    above[w].l1 = fold(l1);
    above[w].l2 = fold(l2);
  }
}

// fused_kernel for a window count known at run time (1 to 9).
template <Repr R, bool kT>
void fused_windows(size_t nw, const uint8_t* b, const uint8_t* c, const uint8_t* t, size_t m, Sums1& out,
                   const double* lo, const double* hi, Above* above, KeyCounts* into) {
  switch (nw) {
    case 1: return fused_kernel<R, kT, 1>(b, c, t, m, out, lo, hi, above, into);
    case 2: return fused_kernel<R, kT, 2>(b, c, t, m, out, lo, hi, above, into);
    case 3: return fused_kernel<R, kT, 3>(b, c, t, m, out, lo, hi, above, into);
    case 4: return fused_kernel<R, kT, 4>(b, c, t, m, out, lo, hi, above, into);
    case 5: return fused_kernel<R, kT, 5>(b, c, t, m, out, lo, hi, above, into);
    case 6: return fused_kernel<R, kT, 6>(b, c, t, m, out, lo, hi, above, into);
    case 7: return fused_kernel<R, kT, 7>(b, c, t, m, out, lo, hi, above, into);
    case 8: return fused_kernel<R, kT, 8>(b, c, t, m, out, lo, hi, above, into);
    case 9: return fused_kernel<R, kT, 9>(b, c, t, m, out, lo, hi, above, into);
    default: throw std::logic_error("analyze: too many windows");
  }
}
#endif  // __x86_64__

// CHATVEC_ANALYZE_UNFUSED set (to anything but 0): pass 1 runs pass1_kernel
// then select_kernel, not fused_kernel (a test hook; the same figures).
bool env_flag(const char* name) {
  const char* e = std::getenv(name);
  return e && *e && std::string(e) != "0";
}
bool unfused() {
  static const bool yes = env_flag("CHATVEC_ANALYZE_UNFUSED");
  return yes;
}

// Stored values to fp64, exactly (the slow path that looks for a bad element).
void load_f64(const ScanOperand& op, uint64_t width, uint64_t first, size_t n, double* dst) {
  const CheckpointTensor& t = *op.tensor;
  if (!op.by_rows) {
    convert_to_f64(t.dtype(), t.element(first), n, dst);
    return;
  }
  while (n) {
    const uint64_t r = first / width, c = first % width;
    const size_t take = size_t(std::min<uint64_t>(n, width - c));
    convert_to_f64(t.dtype(), t.element(uint64_t(op.rows[size_t(r)]) * width + c), take, dst);
    first += take;
    dst += take;
    n -= take;
  }
}

// Stream elements [first, first+n) of `op` in representation `r`: the
// stored bytes themselves when they are contiguous and already `r`,
// otherwise copied or converted into `stage`.
const uint8_t* fetch(const ScanOperand& op, uint64_t width, uint64_t first, size_t n, Repr r, uint8_t* stage) {
  const CheckpointTensor& t = *op.tensor;
  const DType dt = t.dtype();
  const bool raw = (r == Repr::BF16 && dt == DType::BF16) || (r == Repr::F32 && dt == DType::F32) ||
                   (r == Repr::F64 && dt == DType::F64);
  if (raw && !op.by_rows) return t.element(first);
  const size_t es = repr_size(r);
  auto put = [&](const uint8_t* src, size_t take, uint8_t* dst) {
    if (raw) std::memcpy(dst, src, take * es);
    else if (r == Repr::F32) convert_to_f32(dt, src, take, reinterpret_cast<float*>(dst));
    else convert_to_f64(dt, src, take, reinterpret_cast<double*>(dst));
  };
  if (!op.by_rows) {
    put(t.element(first), n, stage);
    return stage;
  }
  uint8_t* out = stage;
  while (n) {
    const uint64_t row = first / width, c = first % width;
    const size_t take = size_t(std::min<uint64_t>(n, width - c));
    put(t.element(uint64_t(op.rows[size_t(row)]) * width + c), take, out);
    out += take * es;
    first += take;
    n -= take;
  }
  return stage;
}

// Hand back (or ask ahead for) the pages of stream elements [first, first+n).
void hint(const ScanOperand& op, uint64_t width, uint64_t first, uint64_t n, bool release) {
  if (!op.tensor || n == 0) return;
  const CheckpointTensor& t = *op.tensor;
  if (!op.by_rows) {
    if (release) t.release(first, n);
    else t.prefetch(first, n);
    return;
  }
  // Consecutive stored rows as one range.
  const uint64_t r0 = first / width, r1 = (first + n - 1) / width;
  uint64_t run_start = uint64_t(op.rows[size_t(r0)]), run_len = 1;
  auto flush = [&] {
    if (release) t.release_rows(run_start, run_len);
    else t.prefetch(run_start * width, run_len * width);
  };
  for (uint64_t r = r0 + 1; r <= r1; ++r) {
    const uint64_t s = uint64_t(op.rows[size_t(r)]);
    if (s == run_start + run_len) {
      ++run_len;
    } else {
      flush();
      run_start = s;
      run_len = 1;
    }
  }
  flush();
}

// The selection state of one top fraction.
struct Selection {
  uint64_t k = 0;
  uint64_t rank = 0;  // wanted: the rank-th largest key among those in range (1 = largest)
  int level = 0;      // the level whose histogram comes next
  uint64_t high = 0;  // elements in range: key >> (shift + width of `level`) == high
  enum { Histogram, Gather, Done } next = Histogram;
  uint64_t gather_match = 0;  // Gather: keys with key >> shift(level) == gather_match
  uint64_t threshold = 0;     // Done: the k-th largest key
  // The mass of the top k: from the level-0 histogram when every bin above
  // the threshold is pure; else from the gather pass (the elements above
  // the gathered bin, summed block by block, plus the gathered ones above
  // the threshold in descending order, plus the ties); else from one pass
  // summing the elements above the threshold block by block.
  bool have_mass = false;
  double l1 = 0, l2 = 0;
};

// Candidates gathered in memory at most (per top fraction); a bin with more
// is refined by another histogram pass.  A constant, so that which path a
// tensor takes, and so the order of every sum, depends on its data only.
constexpr uint64_t kGatherCapacity = uint64_t(1) << 20;

// Before pass 1, a sample of the tensor (every stride-th block, the stride
// fixed by n) estimates each threshold; pass 1 then gathers the elements of
// a window around the estimate and sums the mass above it, so that when
// the k-th largest falls in the window (and it holds at most
// kGatherCapacity elements) no second pass is needed.  The window spans
// kWindowSigmas standard deviations of the sample rank either side, and
// the sample is large enough for the window to hold about half the capacity.
constexpr double kWindowSigmas = 4;
constexpr uint64_t kSampleMinElements = uint64_t(1) << 16, kSampleMaxElements = uint64_t(1) << 20;
constexpr uint64_t kWindowMinElements = uint64_t(1) << 20;  // smaller tensors: two passes are cheap
struct Window {
  bool on = false;
  double lo = 0, hi = 0;  // gathered: lo <= |δc| <= hi; summed: |δc| > hi
};

// After the histogram of `s.level`: choose the bin holding the wanted rank.
void choose_bin(Selection& s, const std::vector<Bin>& h, uint64_t capacity, size_t* chosen) {
  const Level L = kLevels[s.level];
  uint64_t above = 0;
  size_t d = size_t(1) << L.width;
  bool found = false;
  while (d > 0) {
    --d;
    if (above + h[d].n >= s.rank) {
      found = true;
      break;
    }
    above += h[d].n;
  }
  if (!found) throw std::logic_error("analyze: radix selection ran out of elements");
  s.rank -= above;
  if (chosen) *chosen = d;
  const uint64_t prefix = (s.high << L.width) | uint64_t(d);  // key >> L.shift
  if (h[d].pure()) {
    s.threshold = h[d].any;
    s.next = Selection::Done;
  } else if (L.shift == 0) {
    s.threshold = prefix;
    s.next = Selection::Done;
  } else if (h[d].n <= capacity) {
    s.gather_match = prefix;
    s.next = Selection::Gather;
  } else {
    s.high = prefix;
    ++s.level;
    s.next = Selection::Histogram;
  }
}

class Scanner {
 public:
  Scanner(const ScanInput& in, const ScanOptions& opt) : in_(in), opt_(opt) {
    threads_ = std::max(1, opt.threads);
    chunk_ = std::max<uint64_t>(B, (opt.chunk_elements + B - 1) / B * B);
    has_target_ = in.target.tensor != nullptr;
    const DType bt = in.base.tensor->dtype(), ct = in.chat.tensor->dtype();
    const DType tt = has_target_ ? in.target.tensor->dtype() : ct;
    if (bt == DType::BF16 && ct == DType::BF16 && tt == DType::BF16) repr_ = Repr::BF16;
    else if (bt == DType::F64 || ct == DType::F64 || tt == DType::F64) repr_ = Repr::F64;
    else repr_ = Repr::F32;
    scratch_.resize(size_t(threads_));
    for (auto& s : scratch_) {
      s.dc.resize(B);
      for (auto& st : s.stage) st.resize(B);  // 8 bytes an element: room for any Repr
    }
    if (opt.percents.size() > 8) throw std::logic_error("analyze: at most 8 top fractions");
    if (opt.extra.size() > 6) throw std::logic_error("analyze: at most 6 extra windows");
  }

  ScanResult run() {
    ScanResult r;
    estimate_windows();
    first_pass(r);
    const uint64_t n = r.sums.elements;
    std::vector<Selection> sel(opt_.percents.size());
    for (size_t q = 0; q < sel.size(); ++q) {
      sel[q].k = (n * uint64_t(opt_.percents[q]) + 99) / 100;
      sel[q].rank = sel[q].k;
    }
    if (n == 0) {
      for (size_t q = 0; q < sel.size(); ++q) r.top.push_back(TopMass{opt_.percents[q], 0, 0, {}, {}});
      r.passes = passes_;
      return r;
    }
    // Level 0 was counted by the first pass (every quantile shares it).
    const uint64_t capacity = kGatherCapacity;
    for (size_t q = 0; q < sel.size(); ++q) {
      Selection& s = sel[q];
      if (window_hit(q, s)) continue;
      if (hist0_.empty()) hist_pass();
      size_t d = 0;
      choose_bin(s, hist0_, capacity, &d);
      if (s.next == Selection::Done) mass_from_bins(s, d);
    }
    while (std::any_of(sel.begin(), sel.end(),
                       [](const Selection& s) { return s.next != Selection::Done || !s.have_mass; }))
      refine_pass(sel, capacity);
    for (size_t q = 0; q < sel.size(); ++q) {
      TopMass m;
      m.percent = opt_.percents[q];
      m.k = sel[q].k;
      m.threshold = value_of(sel[q].threshold);
      if (r.sums.chat_l1 > 0) m.l1_share = sel[q].l1 / r.sums.chat_l1;
      if (r.sums.chat_sq > 0) m.l2_share = sel[q].l2 / r.sums.chat_sq;
      r.top.push_back(m);
    }
    if (opt_.want_hist && !hist0_.empty()) {  // else: every window hit (no histogram counted)
      r.hist.resize(kBins);
      for (size_t d = 0; d < kBins; ++d) r.hist[d] = hist0_[d].n;
    }
    r.passes = passes_;
    return r;
  }

  // One pass over δc: the level-0 histogram, counts only (as pass 1 with
  // windows would have counted it), into hist0_.
  void hist_pass() {
    std::vector<std::vector<Bin>> hist(static_cast<size_t>(threads_), std::vector<Bin>(kBins));
    pass(
        false,
        [&](int64_t, uint64_t, const double* dc, size_t m, int tid, const Sums1*) {
          Bin* h = hist[size_t(tid)].data();
          for (size_t i = 0; i < m; ++i) ++h[key_of(dc[i]) >> kLevels[0].shift].n;
        },
        [](uint64_t, int64_t) {});
    hist0_ = std::move(hist[0]);
    for (size_t t = 1; t < hist.size(); ++t) merge_bins(hist0_, hist[t]);
  }

  std::vector<uint64_t> hist_counts() {
    hist_pass();
    std::vector<uint64_t> out(kBins);
    for (size_t d = 0; d < kBins; ++d) out[d] = hist0_[d].n;
    return out;
  }

 private:
  struct Scratch {
    std::vector<double> dc;
    std::vector<double> stage[3];  // base, chat, target
  };

  // Runs fn(block, dc, n, tid, sums) over every block of the stream, blocks
  // of a chunk in parallel, then after(chunk_first, blocks) in order.
  // `full` (the first pass): the sums of pass1_kernel too, with the target;
  // otherwise δc only (sums null).
  template <class Fn, class After>
  void pass(bool full, Fn&& fn, After&& after) {
    ++passes_;
    const uint64_t n = in_.elements;
    const bool with_t = full && has_target_;
    for (uint64_t first = 0; first < n; first += chunk_) {
      check_interrupted();
      const uint64_t count = std::min(chunk_, n - first);
      const int64_t blocks = int64_t((count + B - 1) / B);
      if (first + count < n) {
        const uint64_t ahead = std::min(chunk_, n - first - count);
        for (const ScanOperand* op : {&in_.chat, &in_.base}) hint(*op, in_.width, first + count, ahead, false);
        if (with_t) hint(in_.target, in_.width, first + count, ahead, false);
      }
      const int threads = blocks > 1 ? threads_ : 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) if (threads > 1)
      for (int64_t bi = 0; bi < blocks; ++bi) {
        const int tid = threads > 1 ? omp_get_thread_num() : 0;
        const uint64_t off = first + uint64_t(bi) * B;
        const size_t m = size_t(std::min<uint64_t>(B, n - off));
        Scratch& s = scratch_[size_t(tid)];
        auto st = [&](int i) { return reinterpret_cast<uint8_t*>(s.stage[i].data()); };
        const uint8_t* pb = fetch(in_.base, in_.width, off, m, repr_, st(0));
        const uint8_t* pc = fetch(in_.chat, in_.width, off, m, repr_, st(1));
        double* dc = s.dc.data();
        if (full) {
          const uint8_t* pt = with_t ? fetch(in_.target, in_.width, off, m, repr_, st(2)) : nullptr;
          Sums1 sums;
          if (fused_.nu && repr_ != Repr::F64) {
            const FusedSelect& f = fused_;
            run_fused(pb, pc, pt, m, sums, &f.blocks[size_t(bi) * f.nu], (*f.keys)[size_t(tid)].data());
            fn(bi, off, static_cast<const double*>(nullptr), m, tid, &sums);
          } else {
            run_pass1(pb, pc, pt, m, dc, sums);
            fn(bi, off, static_cast<const double*>(dc), m, tid, &sums);
          }
        } else {
          delta(pb, pc, m, dc);
          fn(bi, off, dc, m, tid, static_cast<const Sums1*>(nullptr));
        }
      }
      for (const ScanOperand* op : {&in_.chat, &in_.base}) hint(*op, in_.width, first, count, true);
      if (with_t) hint(in_.target, in_.width, first, count, true);
      after(first, size_t(blocks));
    }
  }

  void run_fused(const uint8_t* pb, const uint8_t* pc, const uint8_t* pt, size_t m, Sums1& s, Above* above,
                 KeyCounts* into) const {
#if defined(__x86_64__)
    const FusedSelect& f = fused_;
    s.selected = true;
    if (pt) {
      if (repr_ == Repr::BF16) return fused_windows<Repr::BF16, true>(f.nu, pb, pc, pt, m, s, f.lo, f.hi, above, into);
      return fused_windows<Repr::F32, true>(f.nu, pb, pc, pt, m, s, f.lo, f.hi, above, into);
    }
    if (repr_ == Repr::BF16) return fused_windows<Repr::BF16, false>(f.nu, pb, pc, pt, m, s, f.lo, f.hi, above, into);
    return fused_windows<Repr::F32, false>(f.nu, pb, pc, pt, m, s, f.lo, f.hi, above, into);
#else
    (void)pb, (void)pc, (void)pt, (void)m, (void)s, (void)above, (void)into;
    throw std::logic_error("analyze: no fused kernel on this machine");
#endif
  }

  void run_pass1(const uint8_t* pb, const uint8_t* pc, const uint8_t* pt, size_t m, double* dc, Sums1& s) const {
    if (pt) {
      switch (repr_) {
        case Repr::BF16: return pass1_kernel<Repr::BF16, true>(pb, pc, pt, m, dc, s);
        case Repr::F32: return pass1_kernel<Repr::F32, true>(pb, pc, pt, m, dc, s);
        case Repr::F64: return pass1_kernel<Repr::F64, true>(pb, pc, pt, m, dc, s);
      }
    }
    switch (repr_) {
      case Repr::BF16: return pass1_kernel<Repr::BF16, false>(pb, pc, pt, m, dc, s);
      case Repr::F32: return pass1_kernel<Repr::F32, false>(pb, pc, pt, m, dc, s);
      case Repr::F64: return pass1_kernel<Repr::F64, false>(pb, pc, pt, m, dc, s);
    }
  }

  // The sample and the windows (none for a tensor smaller than the sample).
  void estimate_windows() {
    const uint64_t n = in_.elements;
    windows_.clear();
    win_.assign(opt_.percents.size(), WindowSums{});
    const uint64_t s_elems = std::clamp<uint64_t>(n / 64, kSampleMinElements, kSampleMaxElements);
    if (!opt_.estimate || n < kWindowMinElements || s_elems * 4 > n) return;
    windows_.assign(opt_.percents.size(), Window{});
    double weight = 1;
    std::vector<double> sample = this->sample(&weight);
    // A NaN would break the selection's ordering; pass 1 reports it.
    if (std::any_of(sample.begin(), sample.end(), [](double v) { return !std::isfinite(v); })) {
      windows_.clear();
      return;
    }
    const double s = double(sample.size());
    // The ranks wanted (1 = largest), selected from the largest rank down:
    // after nth_element at index i, the i elements before it are the i
    // largest, so a smaller rank is selected among them only (the values
    // are the exact order statistics whatever the order of the calls).
    std::vector<std::pair<size_t, double*>> ranks;
    for (size_t q = 0; q < windows_.size(); ++q) {
      const double p = opt_.percents[size_t(q)] / 100.0;
      const double r = std::ceil(p * s), w = kWindowSigmas * std::sqrt(s * p * (1 - p)) + 16;
      Window& x = windows_[q];
      x.on = true;
      x.hi = HUGE_VAL;
      x.lo = 0.0;
      if (!(r - w < 1)) ranks.emplace_back(size_t(std::clamp(r - w, 1.0, s)) - 1, &x.hi);
      if (!(r + w > s)) ranks.emplace_back(size_t(std::clamp(r + w, 1.0, s)) - 1, &x.lo);
    }
    std::stable_sort(ranks.begin(), ranks.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    size_t bound = sample.size();
    for (const auto& [i, to] : ranks) {
      if (i < bound) {
        std::nth_element(sample.begin(), sample.begin() + ptrdiff_t(i), sample.begin() + ptrdiff_t(bound),
                         std::greater<double>());
        bound = i;
      }
      *to = sample[i];
    }
    for (Window& x : windows_)
      if (std::isnan(x.lo) || std::isnan(x.hi)) x.on = false;
    if (analyze_force_miss())
      for (Window& x : windows_) x.lo = x.hi = 0;  // the test hook: every window misses (unless k-th is 0)
    // All windows or none (the first pass scans for all of them at once).
    if (std::any_of(windows_.begin(), windows_.end(), [](const Window& x) { return !x.on; })) windows_.clear();
  }

  // After pass 1: the threshold and mass of selection q from its window,
  // when the k-th largest is in it.
  bool window_hit(size_t q, Selection& s) {
    if (q >= windows_.size() || !windows_[q].on) return false;
    WindowSums& w = win_[q];
    if (w.over || w.above.count >= s.k || w.above.count + w.count < s.k) {
      w.keys.clear();
      return false;
    }
    // The mass: above the window (block by block), then the window's
    // values above the threshold, largest first (count · v), then the ties.
    Above a = w.above;
    for (const auto& [k, c] : w.keys) {
      if (a.count + c >= s.k) {
        s.threshold = k;
        break;
      }
      const double v = value_of(k);
      a.count += c;
      a.l1 += double(c) * v;
      a.l2 += double(c) * (v * v);
    }
    finish_mass(s, a);
    s.next = Selection::Done;
    std::vector<std::pair<uint64_t, uint64_t>>().swap(w.keys);
    return true;
  }

  void delta(const uint8_t* pb, const uint8_t* pc, size_t m, double* dc) const {
    switch (repr_) {
      case Repr::BF16: delta_kernel<Repr::BF16>(pb, pc, m, dc); break;
      case Repr::F32: delta_kernel<Repr::F32>(pb, pc, m, dc); break;
      case Repr::F64: delta_kernel<Repr::F64>(pb, pc, m, dc); break;
    }
  }

  // The first element of the block at `off` that is not finite (or whose
  // delta is not); UINT64_MAX when none is (the sums overflowed).
  uint64_t first_bad(uint64_t off, size_t m) const {
    std::vector<double> b(m), c(m), t(has_target_ ? m : 0);
    load_f64(in_.base, in_.width, off, m, b.data());
    load_f64(in_.chat, in_.width, off, m, c.data());
    if (has_target_) load_f64(in_.target, in_.width, off, m, t.data());
    for (size_t i = 0; i < m; ++i)
      if (!std::isfinite(b[i]) || !std::isfinite(c[i] - b[i]) || (has_target_ && !std::isfinite(t[i] - b[i])))
        return off + i;
    return UINT64_MAX;
  }

  void first_pass(ScanResult& r) {
    std::vector<DeltaSums> blocks;
    std::vector<uint64_t> bad(static_cast<size_t>(threads_), UINT64_MAX);
    std::vector<uint8_t> any_bad(static_cast<size_t>(threads_), 0);
    // With the tensor's windows no histogram is counted (hist_pass() on a miss).
    std::vector<std::vector<Bin>> hist(static_cast<size_t>(threads_),
                                       std::vector<Bin>(windows_.size() == 3 ? 0 : kBins));
    blocks.resize(size_t(std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B);
    const size_t nw = windows_.size(), nx = opt_.extra.size(), nall = nw + nx;
    std::vector<double> wlo(nall), whi(nall);
    for (size_t q = 0; q < nw; ++q) {
      wlo[q] = windows_[q].lo;
      whi[q] = windows_[q].hi;
    }
    for (size_t q = 0; q < nx; ++q) {
      wlo[nw + q] = opt_.extra[q].lo;
      whi[nw + q] = opt_.extra[q].hi;
    }
    // The windows scanned: with the tensor's own windows, overlapping ones
    // (a layer's window near the tensor's) merged into one, their figures
    // derived after the pass from the union's values (the union holds each
    // of them whole).
    std::vector<size_t> unit(nall);
    std::vector<double> ulo, uhi;
    if (nw == 3) {
      std::vector<size_t> order(nall);
      for (size_t j = 0; j < nall; ++j) order[j] = j;
      std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return wlo[x] < wlo[y]; });
      for (size_t j : order) {
        if (!ulo.empty() && wlo[j] <= uhi.back()) {
          uhi.back() = std::max(uhi.back(), whi[j]);
        } else {
          ulo.push_back(wlo[j]);
          uhi.push_back(whi[j]);
        }
        unit[j] = ulo.size() - 1;
      }
    } else {
      ulo = wlo;
      uhi = whi;
      for (size_t j = 0; j < nall; ++j) unit[j] = j;
    }
    const size_t nu = ulo.size();
    std::vector<Above> wblocks(nu * blocks.size()), uabove(nu);
    std::vector<std::vector<KeyCounts>> wkeys(static_cast<size_t>(threads_), std::vector<KeyCounts>(nu));
    // With the tensor's windows, the selection work runs in pass 1's own
    // loop (fused_kernel) unless CHATVEC_ANALYZE_UNFUSED is set (the tests'
    // check that both give the same bits).
    fused_ = FusedSelect{};
    if (nw == 3 && nu <= 9 && fused_ok() && !unfused()) fused_ = FusedSelect{nu, ulo.data(), uhi.data(), wblocks.data(), &wkeys};
    pass(
        true,
        [&](int64_t bi, uint64_t off, const double* dc, size_t m, int tid, const Sums1* x) {
          Bin* h = hist[size_t(tid)].data();
          // With windows (they decide nearly always) no histogram: when one
          // misses, hist_pass() counts it (every bin "mixed" for the fallback).
          if (nw == 3) {
            if (!x->selected)
              select_windows<false>(nu, dc, m, ulo.data(), uhi.data(), &wblocks[size_t(bi) * nu],
                                 wkeys[size_t(tid)].data(), h);
          } else {
            if (nw) {
              for (size_t i = 0; i < m; ++i) ++h[key_of(dc[i]) >> kLevels[0].shift].n;
              for (size_t q = 0; q < nw; ++q) above_kernel(dc, m, windows_[q].hi, wblocks[size_t(bi) * nu + q]);
              window_kernel(dc, m, ulo.data(), uhi.data(), nw, wkeys[size_t(tid)].data());
            } else {
              for (size_t i = 0; i < m; ++i) {
                const uint64_t k = key_of(dc[i]);
                count_key(h, size_t(k >> kLevels[0].shift), k);
              }
            }
            if (nx)  // the extra windows (a layer's) after the tensor's own
              select_windows<false>(nx, dc, m, ulo.data() + nw, uhi.data() + nw, &wblocks[size_t(bi) * nu + nw],
                                    wkeys[size_t(tid)].data() + nw, h);
          }
          DeltaSums s;
          s.elements = m;
          s.base_sq = x->bsq;
          s.chat_sq = x->csq;
          s.chat_l1 = x->cl1;
          s.chat_nonzero = x->cnz;
          if (has_target_) {
            s.target_sq = x->tsq;
            s.dot = x->dot;
            s.both_nonzero = x->both;
            s.sign_agree = x->agree;
          }
          // A NaN or infinity anywhere makes a sum non-finite: found after the pass.
          if (!std::isfinite(s.base_sq + s.chat_sq + (has_target_ ? s.target_sq + s.dot : 0.0))) {
            any_bad[size_t(tid)] = 1;
            bad[size_t(tid)] = std::min(bad[size_t(tid)], first_bad(off, m));
          }
          blocks[size_t(bi)] = s;
        },
        [&](uint64_t, size_t nb) {
          for (size_t i = 0; i < nb; ++i) {
            r.sums.add(blocks[i]);
            for (size_t u = 0; u < nu; ++u) {
              const Above& a = wblocks[i * nu + u];
              uabove[u].count += a.count;
              uabove[u].l1 += a.l1;
              uabove[u].l2 += a.l2;
            }
          }
        });
    fused_ = FusedSelect{};
    // The scanned windows' distinct keys and counts, whichever thread saw them.
    std::vector<std::vector<std::pair<uint64_t, uint64_t>>> ukeys(nu);
    std::vector<uint8_t> uover(nu, 0);
    for (size_t u = 0; u < nu; ++u) {
      std::map<uint64_t, uint64_t, std::greater<uint64_t>> all;
      for (int t = 0; t < threads_ && !uover[u]; ++t) {
        const KeyCounts& kc = wkeys[size_t(t)][u];
        uover[u] = kc.overflowed();
        if (!uover[u]) kc.each([&](uint64_t k, uint64_t c) { all[k] += c; });
      }
      if (!uover[u]) ukeys[u].assign(all.begin(), all.end());
    }
    // Each window from its union: the mass above the union, plus the
    // union's values above the window (largest first); the values inside.
    auto derive = [&](size_t j, Above& a, bool& over, std::vector<std::pair<uint64_t, uint64_t>>& keys,
                      uint64_t& count) {
      const size_t u = unit[j];
      a = uabove[u];
      over = uover[u];
      count = 0;
      keys.clear();
      if (over) return;
      for (const auto& [k, c] : ukeys[u]) {
        const double v = value_of(k);
        if (v > whi[j]) {
          a.count += c;
          a.l1 += double(c) * v;
          a.l2 += double(c) * (v * v);
        } else if (v >= wlo[j]) {
          keys.emplace_back(k, c);
          count += c;
        }
      }
    };
    for (size_t q = 0; q < nw; ++q) {
      WindowSums& w = win_[q];
      derive(q, w.above, w.over, w.keys, w.count);
    }
    r.extra.assign(nx, WindowTally{});
    for (size_t x = 0; x < nx; ++x) {
      WindowTally& t = r.extra[x];
      Above a;
      uint64_t count = 0;
      derive(nw + x, a, t.over, t.keys, count);
      t.above_count = a.count;
      t.above_l1 = a.l1;
      t.above_l2 = a.l2;
    }
    bool nbad = false;
    uint64_t first = UINT64_MAX;
    for (int t = 0; t < threads_; ++t) {
      nbad = nbad || any_bad[size_t(t)];
      first = std::min(first, bad[size_t(t)]);
    }
    if (nbad && first == UINT64_MAX)
      throw InputError("tensor \"" + in_.name + "\": its sums of squares overflow float64");
    if (nbad)
      throw InputError("tensor \"" + in_.name + "\": an element is not finite (NaN or infinity in an input, or "
                       "their difference), the first at element " + std::to_string(first) +
                       ": the figures would be meaningless");
    if (nw != 3) {
      hist0_ = std::move(hist[0]);
      for (size_t t = 1; t < hist.size(); ++t) merge_bins(hist0_, hist[t]);
    }
  }

  // The extra windows' tallies: the mass above each (xabove_), the
  // distinct keys in it whichever thread saw them (wkeys[thread][first + w]).
  std::vector<WindowTally> tallies_of(const std::vector<std::vector<KeyCounts>>& wkeys, size_t first) const {
    std::vector<WindowTally> out(opt_.extra.size());
    for (size_t w = 0; w < out.size(); ++w) {
      WindowTally& t = out[w];
      t.above_count = xabove_[w].count;
      t.above_l1 = xabove_[w].l1;
      t.above_l2 = xabove_[w].l2;
      std::map<uint64_t, uint64_t> all;
      for (int th = 0; th < threads_ && !t.over; ++th) {
        const KeyCounts& kc = wkeys[size_t(th)][first + w];
        t.over = kc.overflowed();
        if (!t.over) kc.each([&](uint64_t k, uint64_t c) { all[k] += c; });
      }
      if (!t.over) t.keys.assign(all.begin(), all.end());
    }
    return out;
  }

 public:
  // One pass of δc for the extra windows only.
  std::vector<WindowTally> tally_only() {
    const size_t nx = opt_.extra.size(), nb = size_t((std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B);
    if (nx == 0) return {};
    xabove_.assign(nx, Above{});
    std::vector<Above> wblocks(nx * nb);
    std::vector<std::vector<KeyCounts>> wkeys(static_cast<size_t>(threads_), std::vector<KeyCounts>(nx));
    std::vector<double> wlo(nx), whi(nx);
    for (size_t q = 0; q < nx; ++q) {
      wlo[q] = opt_.extra[q].lo;
      whi[q] = opt_.extra[q].hi;
    }
    pass(
        false,
        [&](int64_t bi, uint64_t, const double* dc, size_t m, int tid, const Sums1*) {
          select_windows<false>(nx, dc, m, wlo.data(), whi.data(), &wblocks[size_t(bi) * nx],
                                wkeys[size_t(tid)].data(), nullptr);
        },
        [&](uint64_t, size_t n) {
          for (size_t i = 0; i < n; ++i)
            for (size_t q = 0; q < nx; ++q) {
              const Above& a = wblocks[i * nx + q];
              xabove_[q].count += a.count;
              xabove_[q].l1 += a.l1;
              xabove_[q].l2 += a.l2;
            }
        });
    return tallies_of(wkeys, 0);
  }

  // The sample of estimate_windows (every block of a small tensor).
  std::vector<double> sample(double* weight) {
    const uint64_t n = in_.elements, nblocks = (n + B - 1) / B;
    const uint64_t s_elems = std::clamp<uint64_t>(n / 64, kSampleMinElements, kSampleMaxElements);
    const uint64_t stride = n < kWindowMinElements || s_elems * 4 > n ? 1 : std::max<uint64_t>(1, n / s_elems);
    std::vector<double> out;
    Scratch& sc = scratch_[0];
    auto st = [&](int i) { return reinterpret_cast<uint8_t*>(sc.stage[i].data()); };
    for (uint64_t bi = 0; bi < nblocks; bi += stride) {
      const uint64_t off = bi * B;
      const size_t m = size_t(std::min<uint64_t>(B, n - off));
      const uint8_t* pb = fetch(in_.base, in_.width, off, m, repr_, st(0));
      const uint8_t* pc = fetch(in_.chat, in_.width, off, m, repr_, st(1));
      delta(pb, pc, m, sc.dc.data());
      for (size_t i = 0; i < m; ++i) out.push_back(std::fabs(sc.dc[i]));
      // Hand the sampled pages back: the layer's other tensors are sampled
      // before this one's passes map them again.
      for (const ScanOperand* op : {&in_.chat, &in_.base}) hint(*op, in_.width, off, m, true);
    }
    *weight = out.empty() ? 1.0 : double(n) / double(out.size());
    return out;
  }

 private:
  // A threshold the level-0 histogram fixed (its bin `d` is pure): when
  // every bin above is pure too, the mass above is Σ count·v and
  // Σ count·v² over those bins (largest first), without another pass.
  void mass_from_bins(Selection& s, size_t d) const {
    Above a;
    for (size_t e = kBins; e-- > d + 1;) {
      const Bin& b = hist0_[e];
      if (b.n == 0) continue;
      if (!b.pure()) return;
      const double v = value_of(b.any);
      a.count += b.n;
      a.l1 += double(b.n) * v;
      a.l2 += double(b.n) * (v * v);
    }
    finish_mass(s, a);
  }

  // One pass: a histogram for every selection that needs one; for every
  // selection ready to gather, its candidates and the mass above their bin;
  // for every selection with a threshold but no mass, the mass above it.
  void refine_pass(std::vector<Selection>& sel, uint64_t capacity) {
    const size_t nq = sel.size();
    const size_t nt = static_cast<size_t>(threads_);
    std::vector<std::vector<std::vector<Bin>>> hist(nt, std::vector<std::vector<Bin>>(nq));
    std::vector<std::vector<std::vector<uint64_t>>> got(nt, std::vector<std::vector<uint64_t>>(nq));
    for (auto& per_thread : hist)
      for (size_t q = 0; q < nq; ++q)
        if (sel[q].next == Selection::Histogram) per_thread[q].assign(kBins, Bin{});
    // What each selection does in this pass, fixed before it starts.
    enum Mode { Idle, Hist, Gather, Mass };
    struct Q {
      Mode mode = Idle;
      int shift = 0, up = 0;
      uint64_t match = 0, mask = 0;
      double lim = 0;  // Gather, Mass: the mass of |δc| > lim
      double lo = 0;   // Gather: the bin is lo <= |δc| <= lim
    };
    std::vector<Q> qs(nq);
    for (size_t q = 0; q < nq; ++q) {
      const Selection& s = sel[q];
      const Level L = kLevels[s.level];
      Q& x = qs[q];
      x.shift = L.shift;
      x.up = L.shift + L.width;
      x.mask = (uint64_t(1) << L.width) - 1;
      if (s.next == Selection::Histogram) {
        x.mode = Hist;
        x.match = s.high;
      } else if (s.next == Selection::Gather) {
        x.mode = Gather;
        x.match = s.gather_match;
        x.lim = value_of(((s.gather_match + 1) << L.shift) - 1);  // the largest key in the bin
        x.lo = value_of(s.gather_match << L.shift);               // the smallest
      } else if (!s.have_mass) {
        x.mode = Mass;
        x.lim = value_of(s.threshold);
      }
    }
    std::vector<Above> total(nq);
    std::vector<Above> blocks(nq * size_t((std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B));
    pass(
        false,
        [&](int64_t bi, uint64_t, const double* dc, size_t m, int tid, const Sums1*) {
          for (size_t q = 0; q < nq; ++q) {
            const Q& x = qs[q];
            if (x.mode == Gather || x.mode == Mass) above_kernel(dc, m, x.lim, blocks[size_t(bi) * nq + q]);
            if (x.mode == Gather) {
              uint64_t seen = 0;  // at most the bin's count: no cap
              gather_kernel(dc, m, x.lo, x.lim, got[size_t(tid)][q], seen, UINT64_MAX);
            } else if (x.mode == Hist) {
              Bin* h = hist[size_t(tid)][q].data();
              for (size_t i = 0; i < m; ++i) {
                const uint64_t k = key_of(dc[i]);
                if ((k >> x.up) == x.match) count_key(h, size_t((k >> x.shift) & x.mask), k);
              }
            }
          }
        },
        [&](uint64_t, size_t nb) {
          for (size_t b = 0; b < nb; ++b)
            for (size_t q = 0; q < nq; ++q) {
              if (qs[q].mode != Gather && qs[q].mode != Mass) continue;
              const Above& a = blocks[b * nq + q];
              total[q].count += a.count;
              total[q].l1 += a.l1;
              total[q].l2 += a.l2;
            }
        });
    for (size_t q = 0; q < nq; ++q) {
      Selection& s = sel[q];
      if (qs[q].mode == Hist) {
        std::vector<Bin> h = std::move(hist[0][q]);
        for (size_t t = 1; t < nt; ++t) merge_bins(h, hist[t][q]);
        choose_bin(s, h, capacity, nullptr);
      } else if (qs[q].mode == Gather) {
        std::vector<uint64_t> all;
        for (auto& per_thread : got) {
          all.insert(all.end(), per_thread[q].begin(), per_thread[q].end());
          std::vector<uint64_t>().swap(per_thread[q]);
        }
        if (s.rank == 0 || s.rank > all.size())
          throw std::logic_error("analyze: radix selection of " + in_.name + " lost its rank");
        std::sort(all.begin(), all.end(), std::greater<uint64_t>());
        s.threshold = all[size_t(s.rank - 1)];
        // The mass: above the bin, then the bin's elements above the
        // threshold (largest first), then the ties at the threshold.
        Above a = total[q];
        for (size_t i = 0; i < all.size() && all[i] > s.threshold; ++i) {
          const double v = value_of(all[i]);
          ++a.count;
          a.l1 += v;
          a.l2 += v * v;
        }
        finish_mass(s, a);
        s.next = Selection::Done;
      } else if (qs[q].mode == Mass) {
        finish_mass(s, total[q]);
      }
    }
  }

  void finish_mass(Selection& s, const Above& a) const {
    if (a.count > s.k) throw std::logic_error("analyze: threshold of " + in_.name + " is not the k-th");
    const double t = value_of(s.threshold);
    const double ties = double(s.k - a.count);
    s.l1 = a.l1 + ties * t;
    s.l2 = a.l2 + ties * (t * t);
    s.have_mass = true;
  }

  const ScanInput& in_;
  const ScanOptions& opt_;
  int threads_ = 1;
  uint64_t chunk_ = B;
  bool has_target_ = false;
  Repr repr_ = Repr::F64;
  int passes_ = 0;
  std::vector<Scratch> scratch_;
  std::vector<Bin> hist0_;
  struct WindowSums {
    Above above;         // |δc| > hi, block by block
    uint64_t count = 0;  // in the window
    bool over = false;   // too many distinct values in it
    std::vector<std::pair<uint64_t, uint64_t>> keys;  // distinct, largest first, with their counts
  };
  std::vector<Window> windows_;
  std::vector<WindowSums> win_;
  std::vector<Above> xabove_;  // the extra windows': |δc| > hi, block by block
  // Pass 1 with fused_kernel (nu > 0): the scanned windows and where their
  // block figures, keys and histogram go.
  struct FusedSelect {
    size_t nu = 0;
    const double *lo = nullptr, *hi = nullptr;
    Above* blocks = nullptr;
    std::vector<std::vector<KeyCounts>>* keys = nullptr;
  };
  FusedSelect fused_;
};

}  // namespace

void DeltaSums::add(const DeltaSums& o) {
  elements += o.elements;
  base_sq += o.base_sq;
  chat_sq += o.chat_sq;
  target_sq += o.target_sq;
  dot += o.dot;
  chat_l1 += o.chat_l1;
  chat_nonzero += o.chat_nonzero;
  both_nonzero += o.both_nonzero;
  sign_agree += o.sign_agree;
}

std::optional<double> DeltaSums::rel_chat() const {
  if (!(base_sq > 0)) return std::nullopt;
  return std::sqrt(chat_sq / base_sq);
}
std::optional<double> DeltaSums::rel_target() const {
  if (!(base_sq > 0)) return std::nullopt;
  return std::sqrt(target_sq / base_sq);
}
std::optional<double> DeltaSums::cosine() const {
  if (!(chat_sq > 0) || !(target_sq > 0)) return std::nullopt;
  return dot / (std::sqrt(chat_sq) * std::sqrt(target_sq));
}
std::optional<double> DeltaSums::sign_agreement() const {
  if (both_nonzero == 0) return std::nullopt;
  return double(sign_agree) / double(both_nonzero);
}

ScanResult scan_tensor(const ScanInput& in, const ScanOptions& opt) { return Scanner(in, opt).run(); }

std::vector<WindowTally> tally_windows(const ScanInput& in, const ScanOptions& opt) {
  return Scanner(in, opt).tally_only();
}

bool analyze_force_miss() {
  static const bool yes = env_flag("CHATVEC_ANALYZE_MISS");
  return yes;
}

std::vector<uint64_t> level0_hist(const ScanInput& in, const ScanOptions& opt) { return Scanner(in, opt).hist_counts(); }

std::vector<double> sample_abs_delta(const ScanInput& in, const ScanOptions& opt, double* weight) {
  return Scanner(in, opt).sample(weight);
}

double rows_sum_sq(const CheckpointTensor& t, const std::vector<int64_t>& rows) {
  const uint64_t w = t.row_elements();
  std::vector<double> buf(static_cast<size_t>(w));
  double total = 0;
  for (int64_t r : rows) {
    convert_to_f64(t.dtype(), t.row(uint64_t(r)), size_t(w), buf.data());
    double s = 0;
    for (double x : buf) s += x * x;
    total += s;
    t.release_rows(uint64_t(r), 1);
  }
  return total;
}

}  // namespace chatvec

#include "merge/vector_ops.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/dtype.h"
#include "core/interrupt.h"

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

// delta of `term` for elements [g, g + n) into d, DARE applied: the same
// float operations as the plain kernel (plus - minus), then the mask.
void term_delta(const TensorTerm& term, const TermOpsState& st, uint64_t g, size_t n, float* d, float* scratch) {
  const CheckpointTensor* plus = term.vector ? term.vector : term.chat;
  convert_to_f32(plus->dtype(), plus->element(g), n, d);
  if (!term.vector) {
    convert_to_f32(term.base->dtype(), term.base->element(g), n, scratch);
    for (size_t i = 0; i < n; ++i) d[i] = d[i] - scratch[i];
  }
  if (st.dare_threshold) {
    const float s = st.dare_scale;
    for (size_t i = 0; i < n; ++i) {
      const bool drop = (dare_bits(st.dare_state, g + i) >> 11) < st.dare_threshold;
      d[i] = drop ? 0.0f : d[i] * s;
    }
  }
}

enum PassKind { kFirst, kLowBits, kKept };

struct PassResult {
  std::vector<uint64_t> hist;            // kFirst: by the top 16 bits; kLowBits: by the low 16 bits
  std::vector<double> l1, l2, tl2;       // per statistics block
};

// One pass over term `ti` of `task` (and the target for its norm).
PassResult run_pass(const TensorTask& task, const TermOpsState& st, size_t ti, PassKind kind, uint32_t top_bin,
                    bool want_hist, bool want_target, uint64_t step, int threads) {
  const uint64_t n = task.numel();
  const uint64_t blocks = (n + kStatBlock - 1) / kStatBlock;
  PassResult r;
  r.l1.assign(blocks, 0);
  r.l2.assign(blocks, 0);
  if (want_target) r.tl2.assign(blocks, 0);
  if (want_hist) r.hist.assign(1u << 16, 0);
  const TensorTerm& term = task.terms[ti];
  const int nt = std::max(1, threads);
  std::vector<std::vector<uint64_t>> local(static_cast<size_t>(nt));
  for (uint64_t first = 0; first < n; first += step) {
    check_interrupted();
    const uint64_t count = std::min(step, n - first);
    const int64_t b0 = int64_t(first / kStatBlock), b1 = int64_t((first + count + kStatBlock - 1) / kStatBlock);
#pragma omp parallel num_threads(nt) if (nt > 1 && b1 - b0 > 1)
    {
      const int me = omp_get_thread_num();
      std::vector<uint64_t>& h = local[size_t(me)];
      if (want_hist && h.empty()) h.assign(1u << 16, 0);
      std::vector<float> d(kStatBlock), scratch(kStatBlock);
#pragma omp for schedule(static)
      for (int64_t b = b0; b < b1; ++b) {
        const uint64_t g = uint64_t(b) * kStatBlock;
        const size_t m = size_t(std::min(kStatBlock, n - g));
        term_delta(term, st, g, m, d.data(), scratch.data());
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < m; ++i) {
          const uint32_t a = abs_bits(d[i]);
          if (kind == kFirst) {
            if (want_hist) ++h[a >> 16];
          } else if (kind == kLowBits) {
            if ((a >> 16) == top_bin) ++h[a & 0xffffu];
            continue;
          } else if (a < st.keep_bits) {
            continue;  // kKept: only what pruning keeps
          }
          const double v = double(d[i]);
          s1 += std::fabs(v);
          s2 += v * v;
        }
        r.l1[size_t(b)] = s1;
        r.l2[size_t(b)] = s2;
        if (want_target) {
          convert_to_f32(task.target->dtype(), task.target->element(g), m, d.data());
          double t2 = 0;
          for (size_t i = 0; i < m; ++i) t2 += double(d[i]) * double(d[i]);
          r.tl2[size_t(b)] = t2;
        }
      }
    }
    for (const CheckpointTensor* in : task.inputs()) in->release(first, count);
  }
  if (want_hist)
    for (const auto& h : local)
      if (!h.empty())
        for (size_t i = 0; i < h.size(); ++i) r.hist[i] += h[i];
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

}  // namespace

OpsState prepare_vector_ops(const TensorTask& task, uint64_t chunk_elements, int threads) {
  const VectorOps& ops = task.ops;
  const uint64_t n = task.numel();
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
  for (size_t ti = 0; ti < task.terms.size(); ++ti) {
    TermOpsState& st = s.terms[ti];
    PassResult first = run_pass(task, st, ti, kFirst, 0, prune, clip, step, threads);
    st.l1_all = ordered_sum(first.l1);
    st.l2sq_all = ordered_sum(first.l2);
    st.l1_kept = st.l1_all;
    st.l2sq_kept = st.l2sq_all;
    if (clip) st.target_l2sq = ordered_sum(first.tl2);
    double rescale_factor = 1;
    if (prune) {
      const uint64_t rank = std::clamp<uint64_t>(uint64_t(std::ceil(ops.keep * double(n))), 1, n);
      st.kept_threshold_rank = rank;
      const auto [bin, in_bin] = find_rank(first.hist, rank);
      PassResult low = run_pass(task, st, ti, kLowBits, bin, true, false, step, threads);
      const auto [lo, unused] = find_rank(low.hist, in_bin);
      (void)unused;
      st.prune = true;
      st.keep_bits = (bin << 16) | lo;
      if (rescale || clip) {
        PassResult kept = run_pass(task, st, ti, kKept, 0, false, false, step, threads);
        st.l1_kept = ordered_sum(kept.l1);
        st.l2sq_kept = ordered_sum(kept.l2);
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

void combine_ops_range(const TensorTask& task, const OpsState& state, void* out, uint64_t out_first, uint64_t begin,
                       uint64_t end) {
  const size_t terms = task.terms.size();
  const bool ties = task.ops.ties;
  std::vector<float> buf((terms + 2) * kBlock);
  float* acc = buf.data();
  float* scratch = acc + kBlock;
  float* d0 = scratch + kBlock;
  const size_t es = dtype_bits(task.dtype) / 8;
  for (uint64_t b = begin; b < end; b += kBlock) {
    const size_t n = size_t(std::min<uint64_t>(kBlock, end - b));
    for (size_t ti = 0; ti < terms; ++ti) {
      const TensorTerm& term = task.terms[ti];
      const TermOpsState& st = state.terms[ti];
      float* d = d0 + ti * kBlock;
      term_delta(term, st, b, n, d, scratch);
      if (st.prune)
        for (size_t i = 0; i < n; ++i)
          if (abs_bits(d[i]) < st.keep_bits) d[i] = 0.0f;
      if (st.factor != 1.0f)
        for (size_t i = 0; i < n; ++i) d[i] = d[i] * st.factor;
      const float r = float(term.ratio);
      if (r != 1.0f)
        for (size_t i = 0; i < n; ++i) d[i] = r * d[i];
    }
    convert_to_f32(task.target->dtype(), task.target->element(b), n, acc);
    if (!ties) {
      for (size_t ti = 0; ti < terms; ++ti) {
        const float* d = d0 + ti * kBlock;
        for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + d[i];
      }
    } else {
      // TIES: the sign of the total, then the mean of the nonzero values of
      // that sign (term order); nothing added where the total is zero.
      for (size_t i = 0; i < n; ++i) {
        float total = 0.0f;
        for (size_t ti = 0; ti < terms; ++ti) total = total + d0[ti * kBlock + i];
        float sum = 0.0f;
        int count = 0;
        for (size_t ti = 0; ti < terms; ++ti) {
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
    convert_from_f32(acc, n, task.dtype, static_cast<uint8_t*>(out) + (b - out_first) * es);
  }
}

}  // namespace chatvec

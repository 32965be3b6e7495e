#include "analyze/tensor_scan.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

#include "core/dtype.h"
#include "core/error.h"
#include "core/interrupt.h"

namespace chatvec {

namespace {

constexpr uint64_t B = kAnalyzeBlock;

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

// Stored values to fp64, exactly: the 16-bit types and F32 through the
// (vectorised) fp32 conversion, F64 directly.
void widen(DType dt, const uint8_t* src, size_t n, double* dst, float* tmp) {
  if (dt == DType::F64) {
    convert_to_f64(dt, src, n, dst);
    return;
  }
  convert_to_f32(dt, src, n, tmp);
  for (size_t i = 0; i < n; ++i) dst[i] = double(tmp[i]);
}

void load(const ScanOperand& op, uint64_t width, uint64_t first, size_t n, double* dst, float* tmp) {
  const CheckpointTensor& t = *op.tensor;
  if (!op.by_rows) {
    widen(t.dtype(), t.element(first), n, dst, tmp);
    return;
  }
  while (n) {
    const uint64_t r = first / width, c = first % width;
    const size_t take = size_t(std::min<uint64_t>(n, width - c));
    widen(t.dtype(), t.element(uint64_t(op.rows[size_t(r)]) * width + c), take, dst, tmp);
    first += take;
    dst += take;
    n -= take;
  }
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
  // The mass of the top k, when the gather pass could compute it: the
  // elements above the gathered bin (summed block by block) plus the
  // gathered ones above the threshold (in descending order) plus the ties.
  bool have_mass = false;
  double l1 = 0, l2 = 0;
};

// Candidates gathered in memory at most (per top fraction); a bin with more
// is refined by another histogram pass.  A constant, so that which path a
// tensor takes, and so the order of every sum, depends on its data only.
constexpr uint64_t kGatherCapacity = uint64_t(1) << 20;

struct Above {
  uint64_t count = 0;
  double l1 = 0, l2 = 0;
};

// After the histogram of `s.level`: choose the bin holding the wanted rank.
void choose_bin(Selection& s, const std::vector<uint64_t>& h, uint64_t capacity) {
  const Level L = kLevels[s.level];
  uint64_t above = 0;
  size_t d = size_t(1) << L.width;
  bool found = false;
  while (d > 0) {
    --d;
    if (above + h[d] >= s.rank) {
      found = true;
      break;
    }
    above += h[d];
  }
  if (!found) throw std::logic_error("analyze: radix selection ran out of elements");
  s.rank -= above;
  const uint64_t prefix = (s.high << L.width) | uint64_t(d);  // key >> L.shift
  if (L.shift == 0) {
    s.threshold = prefix;
    s.next = Selection::Done;
  } else if (h[d] <= capacity) {
    s.gather_match = prefix;
    s.next = Selection::Gather;
  } else {
    s.high = prefix;
    ++s.level;
    s.next = Selection::Histogram;
  }
}

// The δc of a tensor that fits in a chunk, kept for the later passes: one
// buffer for the whole run, grown to the largest such tensor (not zeroed,
// not given back between tensors).
double* cache_buffer(size_t n) {
  static std::unique_ptr<double[]> buf;
  static size_t size = 0;
  if (n > size) {
    buf.reset();
    buf.reset(new double[n]);
    size = n;
  }
  return buf.get();
}

class Scanner {
 public:
  Scanner(const ScanInput& in, const ScanOptions& opt) : in_(in), opt_(opt) {
    threads_ = std::max(1, opt.threads);
    chunk_ = std::max<uint64_t>(B, (opt.chunk_elements + B - 1) / B * B);
    cached_ = in.elements <= chunk_;
    has_target_ = in.target.tensor != nullptr;
    scratch_.resize(size_t(threads_));
    for (auto& s : scratch_) {
      s.b.resize(B);
      s.c.resize(B);
      s.t.resize(has_target_ ? B : 0);
      s.d.resize(cached_ ? 0 : B);
      s.f.resize(B);
    }
    if (opt.percents.size() > 8) throw std::logic_error("analyze: at most 8 top fractions");
    if (cached_) cache_ = cache_buffer(size_t(in.elements));
  }

  ScanResult run() {
    ScanResult r;
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
    for (auto& s : sel) choose_bin(s, hist0_, capacity);
    while (std::any_of(sel.begin(), sel.end(), [](const Selection& s) { return s.next != Selection::Done; }))
      refine_pass(sel, capacity);
    if (std::any_of(sel.begin(), sel.end(), [](const Selection& s) { return !s.have_mass; })) sum_pass(sel);
    for (size_t q = 0; q < sel.size(); ++q) {
      TopMass m;
      m.percent = opt_.percents[q];
      m.k = sel[q].k;
      m.threshold = value_of(sel[q].threshold);
      if (r.sums.chat_l1 > 0) m.l1_share = sel[q].l1 / r.sums.chat_l1;
      if (r.sums.chat_sq > 0) m.l2_share = sel[q].l2 / r.sums.chat_sq;
      r.top.push_back(m);
    }
    r.passes = passes_;
    return r;
  }

 private:
  struct Scratch {
    std::vector<double> b, c, t, d;
    std::vector<float> f;
  };

  // Runs fn(block, dc, db, dt, n, tid) over every block of the stream,
  // blocks of a chunk in parallel, then after(chunk_first, blocks) in order.
  // `full`: base and target values too (the first pass); otherwise δc only,
  // from the cache when there is one.
  template <class Fn, class After>
  void pass(bool full, Fn&& fn, After&& after) {
    ++passes_;
    const uint64_t n = in_.elements;
    const bool from_cache = cached_ && !full;
    for (uint64_t first = 0; first < n; first += chunk_) {
      check_interrupted();
      const uint64_t count = std::min(chunk_, n - first);
      const int64_t blocks = int64_t((count + B - 1) / B);
      if (!from_cache && first + count < n) {
        const uint64_t ahead = std::min(chunk_, n - first - count);
        for (const ScanOperand* op : {&in_.chat, &in_.base})
          hint(*op, in_.width, first + count, ahead, false);
        if (full && has_target_) hint(in_.target, in_.width, first + count, ahead, false);
      }
      const int threads = blocks > 1 ? threads_ : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
      for (int64_t bi = 0; bi < blocks; ++bi) {
        const int tid = threads > 1 ? omp_get_thread_num() : 0;
        const uint64_t off = first + uint64_t(bi) * B;
        const size_t m = size_t(std::min<uint64_t>(B, n - off));
        if (from_cache) {
          fn(bi, cache_ + off, nullptr, nullptr, m, tid);
          continue;
        }
        Scratch& s = scratch_[size_t(tid)];
        load(in_.base, in_.width, off, m, s.b.data(), s.f.data());
        load(in_.chat, in_.width, off, m, s.c.data(), s.f.data());
        double* dc = cached_ ? cache_ + off : s.d.data();
        for (size_t i = 0; i < m; ++i) dc[i] = s.c[i] - s.b[i];
        double* dt = nullptr;
        if (full && has_target_) {
          load(in_.target, in_.width, off, m, s.t.data(), s.f.data());
          for (size_t i = 0; i < m; ++i) s.t[i] -= s.b[i];
          dt = s.t.data();
        }
        fn(bi, dc, full ? s.b.data() : nullptr, dt, m, tid);
      }
      if (!from_cache) {
        for (const ScanOperand* op : {&in_.chat, &in_.base}) hint(*op, in_.width, first, count, true);
        if (full && has_target_) hint(in_.target, in_.width, first, count, true);
      }
      after(first, size_t(blocks));
    }
  }

  void first_pass(ScanResult& r) {
    std::vector<DeltaSums> blocks;
    std::vector<uint64_t> bad(static_cast<size_t>(threads_), 0), bad_at(static_cast<size_t>(threads_), UINT64_MAX);
    std::vector<std::vector<uint64_t>> hist(static_cast<size_t>(threads_), std::vector<uint64_t>(kBins, 0));
    blocks.resize(size_t(std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B);
    uint64_t chunk_first = 0;
    pass(
        true,
        [&](int64_t bi, const double* dc, const double* db, const double* dt, size_t m, int tid) {
          DeltaSums s;
          uint64_t* h = hist[size_t(tid)].data();
          const uint64_t off = chunk_first + uint64_t(bi) * B;
          double bsq = 0, csq = 0, cl1 = 0;
          uint64_t cnz = 0;
          for (size_t i = 0; i < m; ++i) {
            const double c = dc[i], b = db[i];
            bsq += b * b;
            csq += c * c;
            cl1 += std::fabs(c);
            cnz += c != 0;
            ++h[key_of(c) >> kLevels[0].shift];
          }
          s.base_sq = bsq;
          s.chat_sq = csq;
          s.chat_l1 = cl1;
          s.chat_nonzero = cnz;
          if (dt) {
            double tsq = 0, dot = 0;
            uint64_t both = 0, agree = 0;
            for (size_t i = 0; i < m; ++i) {
              const double c = dc[i], t = dt[i];
              tsq += t * t;
              dot += c * t;
              const uint64_t nz = uint64_t(c != 0) & uint64_t(t != 0);
              both += nz;
              agree += nz & uint64_t((c > 0) == (t > 0));
            }
            s.target_sq = tsq;
            s.dot = dot;
            s.both_nonzero = both;
            s.sign_agree = agree;
          }
          // A NaN or infinity anywhere makes a sum non-finite: found after the pass.
          if (!std::isfinite(bsq + csq + (dt ? s.target_sq + s.dot : 0.0))) {
            ++bad[size_t(tid)];
            for (size_t i = 0; i < m; ++i)
              if (!std::isfinite(dc[i]) || !std::isfinite(db[i]) || (dt && !std::isfinite(dt[i]))) {
                bad_at[size_t(tid)] = std::min(bad_at[size_t(tid)], off + i);
                break;
              }
          }
          s.elements = m;
          blocks[size_t(bi)] = s;
        },
        [&](uint64_t first, size_t nb) {
          for (size_t i = 0; i < nb; ++i) r.sums.add(blocks[i]);
          chunk_first = first + chunk_;
        });
    uint64_t nbad = 0, first_bad = UINT64_MAX;
    for (int t = 0; t < threads_; ++t) {
      nbad += bad[size_t(t)];
      first_bad = std::min(first_bad, bad_at[size_t(t)]);
    }
    if (nbad && first_bad == UINT64_MAX)
      throw InputError("tensor \"" + in_.name + "\": its sums of squares overflow float64");
    if (nbad)
      throw InputError("tensor \"" + in_.name + "\": an element is not finite (NaN or infinity in an input, or "
                       "their difference), the first at element " + std::to_string(first_bad) +
                       ": the figures would be meaningless");
    hist0_.assign(kBins, 0);
    for (const auto& h : hist)
      for (size_t d = 0; d < kBins; ++d) hist0_[d] += h[d];
  }

  // One pass: a histogram for every selection that needs one; for every
  // selection ready to gather, its candidates and the mass above their bin.
  void refine_pass(std::vector<Selection>& sel, uint64_t capacity) {
    const size_t nq = sel.size();
    const size_t nt = static_cast<size_t>(threads_);
    std::vector<std::vector<std::vector<uint64_t>>> hist(nt, std::vector<std::vector<uint64_t>>(nq));
    std::vector<std::vector<std::vector<uint64_t>>> got(nt, std::vector<std::vector<uint64_t>>(nq));
    for (auto& per_thread : hist)
      for (size_t q = 0; q < nq; ++q)
        if (sel[q].next == Selection::Histogram) per_thread[q].assign(kBins, 0);
    std::vector<Above> total(nq);
    std::vector<Above> blocks(nq * size_t((std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B));
    pass(
        false,
        [&](int64_t bi, const double* dc, const double*, const double*, size_t m, int tid) {
          // One loop over the elements for every selection (at most three).
          struct Q {
            int mode;  // 0 idle, 1 histogram, 2 gather
            int shift, up;
            uint64_t match, mask;
            uint64_t* h;
            std::vector<uint64_t>* g;
          };
          Q qs[8];
          const size_t n_q = std::min<size_t>(nq, 8);
          Above a[8];
          for (size_t q = 0; q < n_q; ++q) {
            const Selection& s = sel[q];
            const Level L = kLevels[s.level];
            qs[q] = Q{s.next == Selection::Histogram ? 1 : s.next == Selection::Gather ? 2 : 0,
                      L.shift,
                      L.shift + L.width,
                      s.next == Selection::Histogram ? s.high : s.gather_match,
                      (uint64_t(1) << L.width) - 1,
                      s.next == Selection::Histogram ? hist[size_t(tid)][q].data() : nullptr,
                      &got[size_t(tid)][q]};
          }
          for (size_t i = 0; i < m; ++i) {
            const uint64_t k = key_of(dc[i]);
            const double v = std::fabs(dc[i]);
            for (size_t q = 0; q < n_q; ++q) {
              const Q& x = qs[q];
              if (x.mode == 2) {
                const uint64_t d = k >> x.shift;
                const bool hi = d > x.match;
                a[q].count += hi;
                a[q].l1 += hi ? v : 0.0;
                a[q].l2 += hi ? v * v : 0.0;
                if (d == x.match) x.g->push_back(k);
              } else if (x.mode == 1) {
                if ((k >> x.up) == x.match) ++x.h[(k >> x.shift) & x.mask];
              }
            }
          }
          for (size_t q = 0; q < n_q; ++q)
            if (qs[q].mode == 2) blocks[size_t(bi) * nq + q] = a[q];
        },
        [&](uint64_t, size_t nb) {
          for (size_t b = 0; b < nb; ++b)
            for (size_t q = 0; q < nq; ++q) {
              if (sel[q].next != Selection::Gather) continue;
              const Above& a = blocks[b * nq + q];
              total[q].count += a.count;
              total[q].l1 += a.l1;
              total[q].l2 += a.l2;
            }
        });
    for (size_t q = 0; q < nq; ++q) {
      Selection& s = sel[q];
      if (s.next == Selection::Histogram) {
        std::vector<uint64_t> h(kBins, 0);
        for (const auto& per_thread : hist)
          for (size_t d = 0; d < kBins; ++d) h[d] += per_thread[q][d];
        choose_bin(s, h, capacity);
      } else if (s.next == Selection::Gather) {
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
      }
    }
  }

  void finish_mass(Selection& s, const Above& a) {
    if (a.count > s.k) throw std::logic_error("analyze: threshold of " + in_.name + " is not the k-th");
    const double t = value_of(s.threshold);
    const double ties = double(s.k - a.count);
    s.l1 = a.l1 + ties * t;
    s.l2 = a.l2 + ties * (t * t);
    s.have_mass = true;
  }

  // For selections whose threshold a histogram fixed (no gather): the mass
  // above it, summed block by block.
  void sum_pass(std::vector<Selection>& sel) {
    const size_t nq = sel.size();
    std::vector<Above> total(nq);
    std::vector<Above> blocks(nq * size_t((std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B));
    pass(
        false,
        [&](int64_t bi, const double* dc, const double*, const double*, size_t m, int) {
          for (size_t q = 0; q < nq; ++q) {
            if (sel[q].have_mass) continue;
            Above a;
            const uint64_t t = sel[q].threshold;
            for (size_t i = 0; i < m; ++i) {
              const double v = std::fabs(dc[i]);
              const bool hi = key_of(dc[i]) > t;
              a.count += hi;
              a.l1 += hi ? v : 0.0;
              a.l2 += hi ? v * v : 0.0;
            }
            blocks[size_t(bi) * nq + q] = a;
          }
        },
        [&](uint64_t, size_t nb) {
          for (size_t b = 0; b < nb; ++b)
            for (size_t q = 0; q < nq; ++q) {
              if (sel[q].have_mass) continue;
              const Above& a = blocks[b * nq + q];
              total[q].count += a.count;
              total[q].l1 += a.l1;
              total[q].l2 += a.l2;
            }
        });
    for (size_t q = 0; q < nq; ++q)
      if (!sel[q].have_mass) finish_mass(sel[q], total[q]);
  }

  const ScanInput& in_;
  const ScanOptions& opt_;
  int threads_ = 1;
  uint64_t chunk_ = B;
  bool cached_ = false, has_target_ = false;
  int passes_ = 0;
  std::vector<Scratch> scratch_;
  double* cache_ = nullptr;
  std::vector<uint64_t> hist0_;
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

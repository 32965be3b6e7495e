#include "analyze/tensor_scan.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

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

void load(const ScanOperand& op, uint64_t width, uint64_t first, size_t n, double* dst) {
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
    }
    if (cached_) cache_.resize(size_t(in.elements));
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
    const uint64_t capacity = std::max<uint64_t>(1, chunk_ / 4);
    for (auto& s : sel) choose_bin(s, hist0_, capacity);
    while (std::any_of(sel.begin(), sel.end(), [](const Selection& s) { return s.next != Selection::Done; }))
      refine_pass(sel, capacity);
    sum_pass(sel, r);
    r.passes = passes_;
    return r;
  }

 private:
  struct Scratch {
    std::vector<double> b, c, t, d;
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
          fn(bi, cache_.data() + off, nullptr, nullptr, m, tid);
          continue;
        }
        Scratch& s = scratch_[size_t(tid)];
        load(in_.base, in_.width, off, m, s.b.data());
        load(in_.chat, in_.width, off, m, s.c.data());
        double* dc = cached_ ? cache_.data() + off : s.d.data();
        for (size_t i = 0; i < m; ++i) dc[i] = s.c[i] - s.b[i];
        double* dt = nullptr;
        if (full && has_target_) {
          load(in_.target, in_.width, off, m, s.t.data());
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
          for (size_t i = 0; i < m; ++i) {
            const double c = dc[i], b = db[i];
            const bool finite = std::isfinite(c) && std::isfinite(b) && (!dt || std::isfinite(dt[i]));
            if (!finite) {
              ++bad[size_t(tid)];
              bad_at[size_t(tid)] = std::min(bad_at[size_t(tid)], off + i);
              continue;
            }
            s.base_sq += b * b;
            s.chat_sq += c * c;
            s.chat_l1 += std::fabs(c);
            s.chat_nonzero += c != 0;
            if (dt) {
              const double t = dt[i];
              s.target_sq += t * t;
              s.dot += c * t;
              if (c != 0 && t != 0) {
                ++s.both_nonzero;
                s.sign_agree += (c > 0) == (t > 0);
              }
            }
            ++h[key_of(c) >> kLevels[0].shift];
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
    if (nbad)
      throw InputError("tensor \"" + in_.name + "\": " + std::to_string(nbad) +
                       " elements are not finite (NaN or infinity in an input, or their difference), the first at "
                       "element " + std::to_string(first_bad) + ": the figures would be meaningless");
    hist0_.assign(kBins, 0);
    for (const auto& h : hist)
      for (size_t d = 0; d < kBins; ++d) hist0_[d] += h[d];
  }

  // One pass: a histogram for every selection that needs one, the
  // candidates of every selection ready to gather.
  void refine_pass(std::vector<Selection>& sel, uint64_t capacity) {
    const size_t nq = sel.size();
    std::vector<std::vector<std::vector<uint64_t>>> hist(static_cast<size_t>(threads_), std::vector<std::vector<uint64_t>>(nq));
    std::vector<std::vector<std::vector<uint64_t>>> got(static_cast<size_t>(threads_), std::vector<std::vector<uint64_t>>(nq));
    for (auto& per_thread : hist)
      for (size_t q = 0; q < nq; ++q)
        if (sel[q].next == Selection::Histogram) per_thread[q].assign(kBins, 0);
    pass(
        false,
        [&](int64_t, const double* dc, const double*, const double*, size_t m, int tid) {
          for (size_t q = 0; q < nq; ++q) {
            const Selection& s = sel[q];
            if (s.next == Selection::Histogram) {
              const Level L = kLevels[s.level];
              const uint64_t mask = (uint64_t(1) << L.width) - 1;
              uint64_t* h = hist[size_t(tid)][q].data();
              for (size_t i = 0; i < m; ++i) {
                const uint64_t k = key_of(dc[i]);
                if ((k >> (L.shift + L.width)) == s.high) ++h[(k >> L.shift) & mask];
              }
            } else if (s.next == Selection::Gather) {
              const int shift = kLevels[s.level].shift;
              auto& g = got[size_t(tid)][q];
              for (size_t i = 0; i < m; ++i) {
                const uint64_t k = key_of(dc[i]);
                if ((k >> shift) == s.gather_match) g.push_back(k);
              }
            }
          }
        },
        [](uint64_t, size_t) {});
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
        std::nth_element(all.begin(), all.begin() + int64_t(s.rank - 1), all.end(), std::greater<uint64_t>());
        s.threshold = all[size_t(s.rank - 1)];
        s.next = Selection::Done;
      }
    }
  }

  // The mass above each threshold: Σ|δc| and Σδc² over |δc| > t, plus the
  // tied elements at t that complete the k.
  void sum_pass(const std::vector<Selection>& sel, ScanResult& r) {
    const size_t nq = sel.size();
    struct Above {
      uint64_t count = 0;
      double l1 = 0, l2 = 0;
    };
    std::vector<Above> total(nq);
    std::vector<Above> blocks(nq * ((std::min<uint64_t>(chunk_, in_.elements) + B - 1) / B));
    pass(
        false,
        [&](int64_t bi, const double* dc, const double*, const double*, size_t m, int) {
          for (size_t q = 0; q < nq; ++q) {
            Above a;
            const uint64_t t = sel[q].threshold;
            for (size_t i = 0; i < m; ++i) {
              if (key_of(dc[i]) > t) {
                const double v = std::fabs(dc[i]);
                ++a.count;
                a.l1 += v;
                a.l2 += v * v;
              }
            }
            blocks[size_t(bi) * nq + q] = a;
          }
        },
        [&](uint64_t, size_t nb) {
          for (size_t b = 0; b < nb; ++b)
            for (size_t q = 0; q < nq; ++q) {
              const Above& a = blocks[b * nq + q];
              total[q].count += a.count;
              total[q].l1 += a.l1;
              total[q].l2 += a.l2;
            }
        });
    for (size_t q = 0; q < nq; ++q) {
      TopMass m;
      m.percent = opt_.percents[q];
      m.k = sel[q].k;
      m.threshold = value_of(sel[q].threshold);
      if (total[q].count > m.k) throw std::logic_error("analyze: threshold of " + in_.name + " is not the k-th");
      const double ties = double(m.k - total[q].count);
      const double l1 = total[q].l1 + ties * m.threshold;
      const double l2 = total[q].l2 + ties * (m.threshold * m.threshold);
      if (r.sums.chat_l1 > 0) m.l1_share = l1 / r.sums.chat_l1;
      if (r.sums.chat_sq > 0) m.l2_share = l2 / r.sums.chat_sq;
      r.top.push_back(m);
    }
  }

  const ScanInput& in_;
  const ScanOptions& opt_;
  int threads_ = 1;
  uint64_t chunk_ = B;
  bool cached_ = false, has_target_ = false;
  int passes_ = 0;
  std::vector<Scratch> scratch_;
  std::vector<double> cache_;
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

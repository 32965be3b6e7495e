#include "analyze/analyze.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>
#include <unordered_map>

#include "analyze/tensor_scan.h"
#include "core/error.h"
#include "formats/architecture.h"
#include "merge/plan.h"

namespace chatvec {

namespace fs = std::filesystem;

std::string tensor_group(const std::string& name, NormLayout layout, int64_t* layer) {
  *layer = -1;
  if (auto w = parse_hf_weight_name(name, layout)) {
    *layer = w->layer;
    switch (w->role) {
      case WeightRole::TokenEmbedding: return "embeddings";
      case WeightRole::LmHead: return "lm_head";
      case WeightRole::FinalNorm:
      case WeightRole::AttnNorm:
      case WeightRole::QNorm:
      case WeightRole::KNorm:
      case WeightRole::AttnPostNorm:
      case WeightRole::FfnNorm:
      case WeightRole::FfnPostNorm: return "norms";
      case WeightRole::Q:
      case WeightRole::K:
      case WeightRole::V:
      case WeightRole::O:
      case WeightRole::QBias:
      case WeightRole::KBias:
      case WeightRole::VBias:
      case WeightRole::OBias: return "attention";
      case WeightRole::Gate:
      case WeightRole::Up:
      case WeightRole::Down:
      case WeightRole::GateBias:
      case WeightRole::UpBias:
      case WeightRole::DownBias: return "mlp";
      case WeightRole::RotaryInvFreq: return "other";
    }
  }
  // Names outside the table may still sit in a layer.
  static const std::regex layer_re(R"((?:^|\.)layers\.(\d+)\.)");
  std::smatch m;
  if (std::regex_search(name, m, layer_re)) *layer = std::stoll(m[1].str());
  if (is_vocab_tensor(name)) return name.find("lm_head") != std::string::npos ? "lm_head" : "embeddings";
  return "other";
}

namespace {

NormLayout layout_of(const Checkpoint& c) {
  const Json& cfg = c.config();
  if (cfg.is_object() && cfg.contains("architectures") && cfg["architectures"].is_array() &&
      !cfg["architectures"].empty() && cfg["architectures"][0].is_string())
    return norm_layout_of(cfg["architectures"][0].get<std::string>());
  return NormLayout::PreNorm;
}

std::unique_ptr<Checkpoint> open_input(ModelInputs& inputs, const std::string& path, const char* role,
                                       JobReporter& report) {
  std::vector<std::string> warnings;
  auto c = std::make_unique<Checkpoint>(inputs.open(path, role, warnings));
  for (const auto& w : warnings) report.warning(w);
  return c;
}

// Without a target: the vocabulary rows as `chatvec extract` pairs them
// (each base row with the chat model's row of the same token), the rows of
// the tokens the chat model added apart.
struct ExtractRows {
  std::shared_ptr<const RowMap> map;  // null: element-wise
  std::vector<int64_t> chat_added;
  uint64_t base_without_chat = 0;
};

ExtractRows extract_rows(const Checkpoint& base, const Checkpoint& chat, std::vector<std::string>& lines) {
  ExtractRows x;
  const std::vector<std::string> names = vocab_tensor_names(chat);
  if (names.empty()) return x;
  std::vector<std::string> notes;
  auto dir_of = [](const Checkpoint& m) { return m.is_directory() ? m.dir() : std::string(); };
  auto bv = load_tokenizer_of(dir_of(base), "the base", notes);
  auto cv = load_tokenizer_of(dir_of(chat), "the chat model", notes);
  const uint64_t rows_base = vocab_rows(base, names, "base"), rows_chat = vocab_rows(chat, names, "chat");
  if (!bv || !cv) {
    if (rows_base != rows_chat)
      throw InputError("tensor \"" + names.front() + "\": the base has " + std::to_string(rows_base) +
                       " rows and the chat model " + std::to_string(rows_chat) + ", and " + notes.front() +
                       ": the rows cannot be paired (leave the vocabulary tensors out with --exclude "
                       "'embed_tokens|lm_head')");
    lines.push_back("vocabulary: rows paired by index (" + notes.front() + ")");
    return x;
  }
  const std::vector<int64_t> chat_of_base = chat_rows_of_base(bv.get(), cv.get(), rows_base, rows_chat);
  x.chat_added = chat_added_rows(*bv, *cv, rows_chat);
  bool identity = rows_base == rows_chat;
  auto map = std::make_shared<RowMap>();
  for (int64_t b = 0; b < int64_t(rows_base); ++b) {
    const int64_t c = chat_of_base[size_t(b)];
    identity = identity && c == b;
    if (c >= 0) map->rows.push_back(RowOp{RowOp::Combine, -1, c, b});
    else ++x.base_without_chat;
  }
  lines.push_back("vocabulary: base " + std::to_string(bv->size()) + " tokens, " + std::to_string(rows_base) +
                  " rows; chat " + std::to_string(cv->size()) + " tokens, " + std::to_string(rows_chat) +
                  " rows; rows paired by token string" +
                  (x.chat_added.empty() ? std::string()
                                        : "; " + std::to_string(x.chat_added.size()) + " rows only in the chat model") +
                  (x.base_without_chat ? "; " + std::to_string(x.base_without_chat) + " base rows the chat model lacks"
                                       : std::string()));
  if (!identity) x.map = map;
  return x;
}

// The top fractions of a layer: the k = ⌈p·n/100⌉ largest |δc| among all n
// elements of the layer's tensors together.  A sample of every member
// estimates each threshold; pass 1 of every member counts a window around
// each estimate (the mass above it, the distinct values in it); when the
// k-th largest lies in the window, that settles threshold and mass
// exactly.  Otherwise, from the members' level-0 histograms, the bin
// holding the k-th largest, then passes over the members counting the two
// halves of the key range, until a half holds it with few enough distinct
// values.
constexpr int kSetPercents[3] = {1, 10, 25};
constexpr size_t kMaxSetKeys = size_t(1) << 21;  // distinct values kept per window of a set
constexpr uint64_t kHistShift = 47;              // tensor_scan's level-0 bins: key >> 47

uint64_t key_bits(double v) {
  uint64_t k;
  std::memcpy(&k, &v, 8);
  return k;
}
double key_value(uint64_t k) {
  double v;
  std::memcpy(&v, &k, 8);
  return v;
}

// A window's figures summed over the members scanned so far, in order.
struct SetTally {
  uint64_t count = 0;
  double l1 = 0, l2 = 0;
  bool over = false;
  std::unordered_map<uint64_t, uint64_t> keys;
  void add(const WindowTally& t) {
    count += t.above_count;
    l1 += t.above_l1;
    l2 += t.above_l2;
    over = over || t.over;
    if (!over)
      for (const auto& [k, c] : t.keys) keys[k] += c;
    if (over || keys.size() > kMaxSetKeys) {
      over = true;
      std::unordered_map<uint64_t, uint64_t>().swap(keys);
    }
  }
  // The k-th largest and the mass of the k largest, when the window holds it.
  bool settle(uint64_t k, TopMass& m) const {
    if (over || count >= k) return false;
    std::vector<std::pair<uint64_t, uint64_t>> desc(keys.begin(), keys.end());
    std::sort(desc.begin(), desc.end(), std::greater<>());
    uint64_t cnt = count;
    double a1 = l1, a2 = l2;
    for (const auto& [key, c] : desc) {
      const double v = key_value(key);
      if (cnt + c >= k) {
        const double ties = double(k - cnt);
        m.threshold = v;
        m.l1_share = a1 + ties * v;  // the masses; divided by the totals later
        m.l2_share = a2 + ties * (v * v);
        return true;
      }
      cnt += c;
      a1 += double(c) * v;
      a2 += double(c) * (v * v);
    }
    return false;
  }
};

struct SetSelect {
  std::vector<size_t> members;  // indices of the scan inputs, in the order they are scanned
  size_t left = 0;              // members not scanned yet
  bool started = false;
  uint64_t n = 0;
  std::vector<ExtraWindow> win;  // one per percent, or none
  std::vector<SetTally> tally;
  std::vector<uint64_t> hist;  // the members' level-0 histograms, summed
  std::vector<size_t> unhist;  // members whose windows decided: no histogram counted (added on a miss)
  int passes = 0;              // further reads of the members
};

// Windows from the members' samples: each sample element stands for
// `weight` elements of its tensor; the window spans 4 standard deviations
// of the estimated rank either side (sampled blocks as independent draws,
// the same rule as a tensor's own windows).
// Sorts descending, by a radix sort (16-bit digits, least significant first).
void sort_desc(std::vector<uint64_t>& a) {
  std::vector<uint64_t> tmp(a.size());
  std::vector<size_t> count(size_t(1) << 16);
  for (int shift = 0; shift < 64; shift += 16) {
    std::fill(count.begin(), count.end(), 0);
    for (uint64_t x : a) ++count[0xFFFF - ((x >> shift) & 0xFFFF)];
    if (std::find(count.begin(), count.end(), a.size()) != count.end()) continue;  // one digit: in order
    size_t at = 0;
    for (size_t& c : count) {
      const size_t n = c;
      c = at;
      at += n;
    }
    for (uint64_t x : a) tmp[count[0xFFFF - ((x >> shift) & 0xFFFF)]++] = x;
    a.swap(tmp);
  }
}

std::vector<ExtraWindow> estimate_set(const std::vector<ScanInput>& ins, const SetSelect& set, const ScanOptions& so) {
  // Each sample value as its bit pattern, the low 8 bits replaced by the
  // member's index (an estimate: 2^-44 of the value does not matter).
  struct S {
    double v;
    uint32_t member;
  };
  if (set.members.size() > 256) return {};
  std::vector<uint64_t> packed;
  std::vector<double> weight, size;
  for (size_t i = 0; i < set.members.size(); ++i) {
    double w = 1;
    const std::vector<double> smp = sample_abs_delta(ins[set.members[i]], so, &w);
    for (double v : smp) {
      if (!std::isfinite(v)) return {};  // pass 1 reports it
      packed.push_back((key_bits(v) & ~uint64_t(0xFF)) | uint64_t(i));
    }
    weight.push_back(w);
    size.push_back(double(smp.size()));
  }
  if (packed.empty()) return {};
  sort_desc(packed);
  struct View {  // the sorted sample as (value, member)
    const std::vector<uint64_t>& p;
    size_t size() const { return p.size(); }
    S operator[](size_t i) const { return S{key_value(p[i] & ~uint64_t(0xFF)), uint32_t(p[i] & 0xFF)}; }
  } all{packed};
  std::vector<double> cum(all.size());
  double c = 0, wmax = 0;
  for (size_t i = 0; i < all.size(); ++i) cum[i] = c += weight[all[i].member];
  for (size_t i = 0; i < weight.size(); ++i)
    if (size[i] > 0 && weight[i] > 1) wmax = std::max(wmax, weight[i]);
  auto at = [&](double r) {  // the first sample value at cumulative weight r
    const size_t i = size_t(std::lower_bound(cum.begin(), cum.end(), r) - cum.begin());
    return i;
  };
  std::vector<ExtraWindow> out;
  for (int p : kSetPercents) {
    const double k = double((set.n * uint64_t(p) + 99) / 100);
    const size_t star = std::min(at(k), all.size() - 1);
    std::vector<double> above(weight.size(), 0);
    for (size_t i = 0; i <= star; ++i) above[all[i].member] += 1;
    double var = 0;
    for (size_t i = 0; i < weight.size(); ++i) {
      if (size[i] == 0 || weight[i] <= 1) continue;  // sampled whole: counted exactly
      const double q = above[i] / size[i];
      var += weight[i] * weight[i] * size[i] * q * (1 - q) * (1 - 1 / weight[i]);
    }
    const double w = 4 * std::sqrt(var) + 16 * std::max(1.0, wmax);
    ExtraWindow x;
    x.hi = k - w < 1 ? HUGE_VAL : all[std::min(at(k - w), all.size() - 1)].v;
    x.lo = k + w > cum.back() ? 0.0 : all[std::min(at(k + w), all.size() - 1)].v;
    out.push_back(x);
  }
  return out;
}

// After every member's pass 1: the top fractions, from the windows or by
// bisection passes.
std::vector<TopMass> finish_set(const std::vector<ScanInput>& ins, SetSelect& set, const ScanOptions& so,
                                double l1_total, double l2_total) {
  const size_t nq = std::size(kSetPercents);
  std::vector<TopMass> top(nq);
  std::vector<uint64_t> klo(nq), khi(nq);
  std::vector<bool> pending(nq, false);
  for (size_t q = 0; q < nq; ++q) {
    TopMass& m = top[q];
    m.percent = kSetPercents[q];
    m.k = (set.n * uint64_t(m.percent) + 99) / 100;
    if (m.k == 0) continue;
    if (!set.win.empty() && set.tally[q].settle(m.k, m)) continue;
    // The level-0 bin holding the k-th largest (the members whose windows
    // decided counted no histogram: one pass over them first).
    if (!set.unhist.empty()) {
      ScanOptions o = so;
      o.extra.clear();
      o.want_hist = false;
      for (size_t i : set.unhist) {
        const std::vector<uint64_t> h = level0_hist(ins[i], o);
        for (size_t d = 0; d < h.size(); ++d) set.hist[d] += h[d];
      }
      set.unhist.clear();
      ++set.passes;
    }
    uint64_t above = 0;
    size_t d = set.hist.size();
    while (d > 0) {
      --d;
      if (above + set.hist[d] >= m.k) break;
      above += set.hist[d];
    }
    klo[q] = uint64_t(d) << kHistShift;
    khi[q] = std::min((uint64_t(d + 1) << kHistShift) - 1, key_bits(HUGE_VAL));
    pending[q] = true;
  }
  while (std::find(pending.begin(), pending.end(), true) != pending.end()) {
    // Per pending fraction: the lower and upper halves of its key range
    // (or the range itself when it is one key).
    ScanOptions o = so;
    o.extra.clear();
    o.want_hist = false;
    std::vector<size_t> first(nq);
    std::vector<uint64_t> mid(nq);
    for (size_t q = 0; q < nq; ++q) {
      if (!pending[q]) continue;
      first[q] = o.extra.size();
      if (klo[q] == khi[q]) {
        o.extra.push_back(ExtraWindow{key_value(klo[q]), key_value(khi[q])});
      } else {
        mid[q] = klo[q] + (khi[q] - klo[q]) / 2;
        o.extra.push_back(ExtraWindow{key_value(klo[q]), key_value(mid[q])});
        o.extra.push_back(ExtraWindow{key_value(mid[q] + 1), key_value(khi[q])});
      }
    }
    std::vector<SetTally> t(o.extra.size());
    for (size_t i : set.members) {
      const std::vector<WindowTally> w = tally_windows(ins[i], o);
      for (size_t x = 0; x < w.size(); ++x) t[x].add(w[x]);
    }
    ++set.passes;
    for (size_t q = 0; q < nq; ++q) {
      if (!pending[q]) continue;
      TopMass& m = top[q];
      if (klo[q] == khi[q]) {
        if (!t[first[q]].settle(m.k, m)) throw std::logic_error("analyze: a layer's selection lost its rank");
        pending[q] = false;
        continue;
      }
      const bool upper = t[first[q]].count >= m.k;  // more than k above the middle
      const SetTally& half = t[first[q] + (upper ? 1 : 0)];
      if (half.settle(m.k, m)) {
        pending[q] = false;
      } else if (upper) {
        klo[q] = mid[q] + 1;
      } else {
        khi[q] = mid[q];
      }
    }
  }
  for (TopMass& m : top) {
    if (m.k == 0) continue;
    const double l1 = *m.l1_share, l2 = *m.l2_share;
    m.l1_share = l1_total > 0 ? std::optional<double>(l1 / l1_total) : std::nullopt;
    m.l2_share = l2_total > 0 ? std::optional<double>(l2 / l2_total) : std::nullopt;
  }
  return top;
}

}  // namespace

AnalyzeResult analyze(const AnalyzeJob& job, JobReporter& report) {
  const auto t0 = std::chrono::steady_clock::now();
  AnalyzeResult res;
  res.base = job.base;
  res.chat = job.chat;
  res.target = job.target;
  res.has_target = !job.target.empty();
  if (job.chunk_elements == 0) throw InputError("--chunk must be at least 1 element");
  res.chunk_elements = (job.chunk_elements + kAnalyzeBlock - 1) / kAnalyzeBlock * kAnalyzeBlock;

  // GGUF inputs are imported into a hidden temporary directory.
  const std::string scratch = (fs::temp_directory_path() / ("chatvec-analyze-" + std::to_string(::getpid()))).string();
  ModelInputs inputs(scratch);
  auto base = open_input(inputs, job.base, "base", report);
  auto chat = open_input(inputs, job.chat, "chat", report);
  std::unique_ptr<Checkpoint> target;
  if (res.has_target) target = open_input(inputs, job.target, "target", report);

  PlanOptions po;
  po.selection = make_selection(job.include, job.exclude);
  PlanInputs in;
  in.vectors.push_back(VectorSource{1.0, chat.get(), base.get(), nullptr, "chat"});
  ExtractRows xrows;
  if (target) {
    VocabOptions vo;
    vo.policy = job.embeddings;
    vo.transplant = job.transplant_special_tokens;
    const VocabDecision vocab = decide_vocabulary(*base, *chat, *target, vo);
    for (const auto& name : vocab_tensor_names(*target)) {
      if (vocab.row_map) po.row_maps[name] = vocab.row_map;
      if (vocab.skip_tensors) po.keep_target[name] = "--embeddings skip";
    }
    res.vocabulary = describe_vocabulary(vocab);
    in.target = target.get();
  } else {
    xrows = extract_rows(*base, *chat, res.vocabulary);
    if (xrows.map)
      for (const auto& name : vocab_tensor_names(*chat)) po.row_maps[name] = xrows.map;
  }
  const MergePlan plan = build_plan(in, po);
  const NormLayout layout = layout_of(target ? *target : *chat);

  // Which names the plan analyses (the rest: skipped, with the reason).
  std::vector<const TensorTask*> work;
  uint64_t total_bytes = 0;
  for (const TensorTask& t : plan.tasks) {
    if (t.kind == TaskKind::Copy) {
      res.skipped.emplace_back(t.name, t.note);
      continue;
    }
    work.push_back(&t);
    for (const CheckpointTensor* p : t.inputs()) total_bytes += p->nbytes();
  }
  if (!target) {  // the extract plan leaves out what it does not combine
    std::set<std::string> planned;
    for (const TensorTask& t : plan.tasks) planned.insert(t.name);
    for (const std::string& name : chat->names())
      if (!planned.count(name))
        res.skipped.emplace_back(name, dtype_is_float(chat->at(name).dtype()) ? "outside the selection"
                                                                              : "integer/bool tensor");
  }
  if (work.empty()) throw InputError("no tensor selected: nothing to analyse");
  res.bytes_read = total_bytes;

  ScanOptions so;
  so.chunk_elements = res.chunk_elements;
  so.threads = job.threads > 0 ? job.threads : omp_get_max_threads();
  so.estimate = job.estimate;

  // Every tensor's stream first (the layers' selections need their members).
  std::vector<ScanInput> inputs_of(work.size());
  std::vector<TensorAnalysis> pending(work.size());
  std::map<int64_t, SetSelect> sets;
  for (size_t wi = 0; wi < work.size(); ++wi) {
    const TensorTask* task = work[wi];
    const TensorTerm& term = task->terms.at(0);
    TensorAnalysis& a = pending[wi];
    a.name = task->name;
    a.shape = term.chat->shape();
    a.dtype = std::string(dtype_name(term.chat->dtype()));
    a.group = tensor_group(a.name, layout, &a.layer);
    ScanInput& si = inputs_of[wi];
    si.name = a.name;
    si.chat.tensor = term.chat;
    si.base.tensor = term.base;
    si.target.tensor = task->target;
    if (task->kind == TaskKind::Rows) {
      RowSummary rs;
      std::vector<int64_t> chat_only, target_only;
      for (const RowOp& r : task->row_map->rows) {
        switch (r.kind) {
          case RowOp::Combine:
            si.chat.rows.push_back(r.chat_row);
            si.base.rows.push_back(r.base_row);
            if (task->target) si.target.rows.push_back(r.target_row);
            break;
          case RowOp::FromChat: chat_only.push_back(r.chat_row); break;
          case RowOp::KeepTarget: target_only.push_back(r.target_row); break;
          case RowOp::Zero: ++rs.base_only; break;
        }
      }
      if (!task->target) {
        chat_only = xrows.chat_added;
        rs.base_only = xrows.base_without_chat;
      }
      si.chat.by_rows = si.base.by_rows = si.target.by_rows = true;
      si.width = term.chat->row_elements();
      si.elements = uint64_t(si.chat.rows.size()) * si.width;
      rs.combined = si.chat.rows.size();
      rs.chat_only = chat_only.size();
      rs.target_only = target_only.size();
      rs.chat_only_sq = rows_sum_sq(*term.chat, chat_only);
      if (task->target) rs.target_only_sq = rows_sum_sq(*task->target, target_only);
      a.rows = rs;
    } else {
      si.elements = term.chat->numel();
    }
    if (a.layer >= 0) {
      SetSelect& set = sets[a.layer];
      set.members.push_back(wi);
      ++set.left;
      set.n += si.elements;
    }
  }

  report.progress_begin("analyze");
  uint64_t done = 0;
  std::map<int64_t, std::pair<std::vector<TopMass>, int>> layer_top;
  std::map<int64_t, DeltaSums> layer_sums;
  for (size_t wi = 0; wi < work.size(); ++wi) {
    const TensorTask* task = work[wi];
    TensorAnalysis a = std::move(pending[wi]);
    SetSelect* set = a.layer >= 0 ? &sets.at(a.layer) : nullptr;
    ScanOptions to = so;
    if (set) {
      if (!set->started) {
        set->started = true;
        if (job.estimate) set->win = estimate_set(inputs_of, *set, so);
        if (analyze_force_miss())
          for (ExtraWindow& x : set->win) x.lo = x.hi = 0;
        set->tally.resize(set->win.size());
        set->hist.assign(size_t(1) << (63 - kHistShift), 0);
      }
      to.extra = set->win;
      to.want_hist = true;
    }
    const ScanResult sr = scan_tensor(inputs_of[wi], to);
    a.sums = sr.sums;
    a.top = sr.top;
    a.passes = sr.passes;
    if (set) {
      for (size_t q = 0; q < sr.extra.size(); ++q) set->tally[q].add(sr.extra[q]);
      if (sr.hist.empty()) set->unhist.push_back(wi);
      for (size_t d = 0; d < sr.hist.size(); ++d) set->hist[d] += sr.hist[d];
      layer_sums[a.layer].add(a.sums);
      if (--set->left == 0) {
        const DeltaSums& ls = layer_sums[a.layer];
        layer_top[a.layer] = {finish_set(inputs_of, *set, so, ls.chat_l1, ls.chat_sq), set->passes};
        sets.erase(a.layer);
      }
    }
    res.tensors.push_back(std::move(a));
    for (const CheckpointTensor* p : task->inputs()) done += p->nbytes();
    report.progress(done, total_bytes);
  }
  report.progress_end();

  // Aggregates.
  std::map<int64_t, LayerAnalysis> layers;
  for (const TensorAnalysis& t : res.tensors) {
    res.total.add(t.sums);
    res.groups[t.group].add(t.sums);
    if (t.layer >= 0) {
      LayerAnalysis& l = layers[t.layer];
      l.layer = t.layer;
      l.sums.add(t.sums);
      l.groups[t.group].add(t.sums);
    }
  }
  for (TensorAnalysis& t : res.tensors) t.share = res.total.chat_sq > 0 ? t.sums.chat_sq / res.total.chat_sq : 0;
  for (auto& [i, l] : layers) {
    const auto& t = layer_top.at(i);
    l.top = t.first;
    l.passes = t.second;
    res.layers.push_back(l);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace chatvec

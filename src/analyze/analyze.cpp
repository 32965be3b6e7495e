#include "analyze/analyze.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <set>

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

  report.progress_begin("analyze");
  uint64_t done = 0;
  for (const TensorTask* task : work) {
    const TensorTerm& term = task->terms.at(0);
    TensorAnalysis a;
    a.name = task->name;
    a.shape = term.chat->shape();
    a.dtype = std::string(dtype_name(term.chat->dtype()));
    a.group = tensor_group(a.name, layout, &a.layer);
    ScanInput si;
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
    const ScanResult sr = scan_tensor(si, so);
    a.sums = sr.sums;
    a.top = sr.top;
    a.passes = sr.passes;
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
  for (auto& [i, l] : layers) res.layers.push_back(l);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace chatvec

#include "merge/pipeline.h"

#include <omp.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fmt/core.h>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "core/staging.h"
#include "formats/architecture.h"
#include "formats/model_dir.h"
#include "gguf/gguf_export.h"
#include "merge/recipe.h"

namespace chatvec {

namespace fs = std::filesystem;

std::string dtype_label(const std::optional<DType>& dtype) {
  if (!dtype) return "auto";
  std::string s(dtype_name(*dtype));
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

namespace {

void check_ratio(const RatioSchedule& r) {
  if (r.points.empty()) throw InputError("--ratio: an empty ratio schedule");
  for (double v : r.points)
    if (!std::isfinite(v)) throw InputError("--ratio must be a finite number");
  for (const auto& o : r.overrides)
    if (!std::isfinite(o.value)) throw InputError("--ratio-for \"" + o.pattern + "\": not a finite number");
}

// A ratio schedule in a formula: the number, or "ratio(0.2,1 by layer)".
std::string ratio_text(const RatioSchedule& r) {
  if (r.is_constant()) return fmt::format("{}", r.constant());
  std::string s = r.points.size() == 1 ? r.points_string() : r.points_string() + " by layer";
  for (const auto& o : r.overrides) s += fmt::format("; {}={}", o.pattern, o.value);
  return "ratio(" + s + ")";
}

// Options of the operations, checked before anything is opened.
void check_ops(const MergeJob& job) {
  check_vector_ops(job.ops);
  if (job.ops.any() && job.kind == JobKind::Extract)
    throw InputError("extract writes chat - base as it is: give the operations (--dare, --keep, --clip, --ties) to "
                     "merge or apply");
  if (job.ops.ties && (job.kind == JobKind::Merge || job.vectors.size() < 2))
    throw InputError("--ties needs at least two vectors: use apply with two or more --vector (merge adds one)");
}

// Open one input (a directory, a .safetensors file, or a .gguf imported
// beside the output); its warnings go to the report.
std::unique_ptr<Checkpoint> open_input(ModelInputs& inputs, const std::string& path, const char* role,
                                       JobReporter& report) {
  std::vector<std::string> warnings;
  auto c = std::make_unique<Checkpoint>(inputs.open(path, role, warnings));
  for (const auto& w : warnings) report.warning(w);
  return c;
}

std::map<std::string, std::string> metadata_for(const Json& extra) {
  std::map<std::string, std::string> m{{"format", "pt"}};
  for (auto it = extra.begin(); it != extra.end(); ++it)
    m["chatvec." + it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  return m;
}

PlanOptions plan_options(const MergeJob& job) {
  PlanOptions p;
  p.dtype = job.dtype;
  p.selection = make_selection(job.include, job.exclude);
  p.ops = job.ops;
  return p;
}

std::string output_title(const MergeJob& job) { return fs::path(job.output).filename().string(); }

void prepare_merge(PreparedJob& p, JobReporter& report) {
  const MergeJob& job = p.job;
  check_ratio(job.ratio);
  p.base = open_input(*p.inputs, job.base, "base", report);
  p.chat = open_input(*p.inputs, job.chat, "chat", report);
  p.target = open_input(*p.inputs, job.target, "target", report);
  const Checkpoint &base = *p.base, &chat = *p.chat, &target = *p.target;

  PlanOptions po = plan_options(job);
  VocabOptions vo;
  vo.policy = job.embeddings;
  vo.transplant = job.transplant_special_tokens;
  auto vocab = std::make_shared<VocabDecision>(decide_vocabulary(base, chat, target, vo));
  for (const auto& name : vocab_tensor_names(target)) {
    if (vocab->row_map) po.row_maps[name] = vocab->row_map;
    if (vocab->skip_tensors) po.keep_target[name] = "--embeddings skip";
  }
  PlanInputs in;
  in.target = &target;
  in.vectors.push_back(VectorSource{job.ratio, &chat, &base, nullptr, "chat"});
  p.plan = build_plan(in, po);
  const bool dirs = chat.is_directory() && target.is_directory();
  p.vocab = vocab;
  if (dirs) p.eos = std::make_shared<EosDecision>(decide_eos(chat.dir(), target.dir(), *vocab));

  p.preamble = describe_vocabulary(*vocab);
  if (p.eos && !p.eos->token.empty())
    p.preamble.push_back("eos: the chat model's \"" + p.eos->token + "\" (" + p.eos->source + ") -> output id " +
                         std::to_string(p.eos->output_id));
  p.exec.metadata =
      metadata_for(Json{{"recipe", fmt::format("target + {} * (chat - base)", ratio_text(job.ratio))}});
  p.files_from = target.is_directory() ? target.dir() : "";
  p.template_from = chat.is_directory() ? chat.dir() : "";
  p.card.title = output_title(job);
  p.card.inputs = {{"target", job.target}, {"chat", job.chat}, {"base", job.base}};
  p.card.base_models = {job.target, job.chat, job.base};
  p.card.recipe = fmt::format("out = target + {} * (chat - base)", ratio_text(job.ratio));
  if (job.ops.any()) p.card.details.push_back("operations on the chat vector: " + job.ops.to_string());
  p.card.details.push_back(
      fmt::format("{} tensors combined, {} copied from the target unchanged", p.plan.combined, p.plan.copied));
  p.card.details.push_back("arithmetic in fp32, rounded to the output dtype to nearest-even");
}

// The tokenizer files of a base model, kept in a vector under this name so
// that apply can align the vector's rows to any target's vocabulary.
constexpr const char* kBaseTokenizerDir = "base_tokenizer";
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                           "special_tokens_map.json", "added_tokens.json"};

void prepare_extract(PreparedJob& p, JobReporter& report) {
  const MergeJob& job = p.job;
  p.base = open_input(*p.inputs, job.base, "base", report);
  p.chat = open_input(*p.inputs, job.chat, "chat", report);
  const Checkpoint &base = *p.base, &chat = *p.chat;
  PlanOptions po = plan_options(job);

  // Vocabulary tensors: the vector has one row per base token (chat - base
  // of the same token, by string), and the chat model's rows of the tokens it
  // added are kept beside it, so that apply can do what merge does with any
  // target's vocabulary.
  Json vocab_record;
  const std::vector<std::string> names = vocab_tensor_names(chat);
  std::vector<std::string> notes;
  const auto dir_of = [](const Checkpoint& m) { return m.is_directory() ? m.dir() : std::string(); };
  std::shared_ptr<const Vocabulary> bv, cv;
  if (!names.empty()) {
    bv = load_tokenizer_of(dir_of(base), "the base", notes);
    cv = load_tokenizer_of(dir_of(chat), "the chat model", notes);
  }
  if (bv && cv) {
    const uint64_t rows_base = vocab_rows(base, names, "base"), rows_chat = vocab_rows(chat, names, "chat");
    const std::vector<int64_t> chat_of_base = chat_rows_of_base(bv.get(), cv.get(), rows_base, rows_chat);
    const std::vector<int64_t> added = chat_added_rows(*bv, *cv, rows_chat);
    bool identity = rows_base == rows_chat;
    Json missing = Json::array();
    for (int64_t b = 0; b < int64_t(rows_base); ++b) {
      identity = identity && chat_of_base[size_t(b)] == b;
      if (chat_of_base[size_t(b)] < 0) missing.push_back(b);
    }
    if (!identity) {
      auto map = std::make_shared<RowMap>();
      for (int64_t b = 0; b < int64_t(rows_base); ++b)
        map->rows.push_back(chat_of_base[size_t(b)] >= 0 ? RowOp{RowOp::Combine, -1, chat_of_base[size_t(b)], b}
                                                         : RowOp{RowOp::Zero, -1, -1, -1});
      for (const auto& n : names) po.row_maps[n] = map;
    }
    Json tokens = Json::array();
    if (!added.empty()) {
      auto rows = std::make_shared<RowMap>();
      for (int64_t k : added) {
        rows->rows.push_back(RowOp{RowOp::FromChat, -1, k, -1});
        tokens.push_back({{"content", cv->token(int(k))}, {"chat_id", k}});
      }
      for (const auto& n : names) po.chat_rows_tensors.push_back({chat_rows_tensor_name(n), n, rows});
    }
    vocab_record = {{"base_rows", rows_base},
                    {"chat_rows", rows_chat},
                    {"base_tokens", bv->size()},
                    {"chat_tokens", cv->size()},
                    {"added_tokens", tokens},
                    {"base_rows_without_chat", missing},
                    {"base_tokenizer", kBaseTokenizerDir}};
    p.preamble.push_back(fmt::format(
        "vocabulary: base {} tokens, {} rows; chat {} tokens, {} rows; the vector has one row per base token{}",
        bv->size(), rows_base, cv->size(), rows_chat,
        added.empty() ? std::string() : fmt::format("; {} chat rows kept for the tokens the chat model added", added.size())));
    for (const Json& t : tokens)
      p.preamble.push_back(fmt::format("  token \"{}\": chat id {}", t["content"].get<std::string>(), t["chat_id"].get<int64_t>()));
    if (!missing.empty())
      p.preamble.push_back(fmt::format("  {} base tokens the chat model lacks: zero rows (apply keeps the target's)",
                                       missing.size()));
    p.base_tokenizer_from = base.dir();
  } else {
    for (const auto& n : notes) p.preamble.push_back("vocabulary: " + n + " (apply will need equal vocabularies)");
  }

  PlanInputs in;
  in.vectors.push_back(VectorSource{1.0, p.chat.get(), p.base.get(), nullptr, "chat"});
  p.plan = build_plan(in, po);
  if (p.plan.tasks.empty()) throw InputError("no tensor selected: the vector would be empty");

  p.recipe = {{"kind", "chat-vector"},        {"chatvec_version", CHATVEC_VERSION},
              {"base", job.base},             {"chat", job.chat},
              {"dtype", dtype_label(job.dtype)}, {"include", job.include},
              {"exclude", job.exclude}};
  if (!vocab_record.is_null()) p.recipe["vocabulary"] = vocab_record;
  p.exec.metadata = metadata_for(Json{{"kind", "chat-vector"}, {"base", job.base}, {"chat", job.chat}});
  p.files_from = p.chat->is_directory() ? p.chat->dir() : "";
  p.card.title = output_title(job) + " (chat vector)";
  p.card.inputs = {{"chat", job.chat}, {"base", job.base}};
  p.card.base_models = {job.chat, job.base};
  p.card.recipe = "vector = chat - base";
  p.card.details.push_back(
      "a chat vector, not a model: add it to a model with `chatvec apply --target T --vector THIS -o OUT`");
}

// What apply knows of a vector's vocabulary: from its chatvec.json record,
// its base_tokenizer/ and the chat model's tokenizer files it carries.
VectorVocabulary vector_vocabulary(const Checkpoint& vector, const Json& recipe, const std::string& path,
                                   const std::vector<std::string>& names, const VocabSide& target,
                                   const VocabOptions& vo, std::shared_ptr<const std::vector<bool>>& present) {
  VectorVocabulary v;
  v.path = path;
  const uint64_t rows = vocab_rows(vector, names, "vector");
  const Json rec = recipe.value("vocabulary", Json());
  std::vector<std::string> notes;
  VocabSide base{rows, nullptr, path + "/" + kBaseTokenizerDir};
  VocabSide chat{rows, nullptr, path};
  if (rec.is_object()) {
    chat.rows = rec.value("chat_rows", rows);
    if (rec.value("base_rows", rows) != rows)
      throw InputError(path + "/chatvec.json: \"vocabulary.base_rows\" says " + rec["base_rows"].dump() +
                       " rows but the vector has " + std::to_string(rows));
    base.vocab = load_tokenizer_of(base.path, "the vector's base", notes);
    const Json& added = rec.value("added_tokens", Json::array());
    for (const Json& t : added) v.stored_chat_rows.push_back(t.value("chat_id", int64_t(-1)));
    const Json& missing = rec.value("base_rows_without_chat", Json::array());
    if (!missing.empty()) {
      auto mask = std::make_shared<std::vector<bool>>(rows, true);
      for (const Json& b : missing)
        if (b.is_number_integer() && b.get<int64_t>() >= 0 && uint64_t(b.get<int64_t>()) < rows)
          (*mask)[size_t(b.get<int64_t>())] = false;
      present = mask;
    }
  } else {
    notes.push_back("the vector " + path + " records no base tokenizer (made by an older chatvec)");
  }
  chat.vocab = load_tokenizer_of(path, "the vector's chat model", notes);
  v.decision = decide_vocabulary(base, chat, target, vo, std::move(notes));
  // A vector made from another family of tokenizer than the target's.
  if (v.decision.base && v.decision.target && v.decision.overlap * 2 < v.decision.base->size())
    throw InputError(path + ": the vector's base vocabulary (" + std::to_string(v.decision.base->size()) +
                     " tokens) shares only " + std::to_string(v.decision.overlap) + " tokens with the target's (" +
                     std::to_string(v.decision.target->size()) +
                     "): the vector was made for another model family");
  return v;
}

void prepare_apply(PreparedJob& p, JobReporter& report) {
  const MergeJob& job = p.job;
  if (job.vectors.empty()) throw InputError("apply needs at least one --vector");
  for (const auto& v : job.vectors) check_ratio(v.ratio);
  if (job.token_rows_from < 0 || size_t(job.token_rows_from) > job.vectors.size())
    throw InputError("--token-rows-from " + std::to_string(job.token_rows_from) + ": there are " +
                     std::to_string(job.vectors.size()) + " vectors");
  p.target = open_input(*p.inputs, job.target, "target", report);
  const Checkpoint& target = *p.target;
  PlanInputs in;
  in.target = &target;
  for (const auto& v : job.vectors) {
    const std::string recipe_path = v.path + "/chatvec.json";
    if (!is_directory(v.path) || !path_exists(recipe_path))
      throw InputError(v.path + ": not a chat vector made by `chatvec extract` (no chatvec.json); to add chat - base "
                                "directly use `chatvec merge`");
    Json r = read_json_file(recipe_path);
    if (!r.is_object() || r.value("kind", std::string()) != "chat-vector")
      throw InputError(recipe_path + ": \"kind\" is not \"chat-vector\"");
    auto c = std::make_unique<Checkpoint>(Checkpoint::open(v.path));
    for (const auto& w : c->warnings()) report.warning("vector model: " + w);
    in.vectors.push_back(VectorSource{v.ratio, nullptr, nullptr, c.get(), "vector " + v.path});
    p.vectors.push_back(std::move(c));
    p.vector_recipes.push_back(std::move(r));
  }

  // The vocabulary, as merge decides it, from what each vector recorded.
  PlanOptions po = plan_options(job);
  const std::vector<std::string> names = vocab_tensor_names(target);
  size_t with_vocab = 0;
  for (const auto& v : p.vectors) {
    bool all = !names.empty();
    for (const auto& n : names) all = all && v->find(n);
    with_vocab += all;
  }
  if (with_vocab && with_vocab != p.vectors.size())
    throw InputError("some vectors hold the embedding and LM-head tensors and some do not: apply them one at a time");
  if (with_vocab && target.is_directory()) {
    std::vector<std::string> notes;
    VocabSide ts{vocab_rows(target, names, "target"), load_tokenizer_of(target.dir(), "the target", notes),
                 target.path()};
    VocabOptions vo;
    vo.policy = job.embeddings;
    vo.transplant = job.transplant_special_tokens;
    std::vector<VectorVocabulary> vvs;
    for (size_t i = 0; i < p.vectors.size(); ++i)
      vvs.push_back(vector_vocabulary(*p.vectors[i], p.vector_recipes[i], job.vectors[i].path, names, ts, vo,
                                      in.vectors[i].base_rows_present));
    // Rows two vectors store for the same token: equal value for value.
    auto same_rows = [&](size_t i, int64_t a, size_t j, int64_t b) {
      for (const auto& n : names) {
        const CheckpointTensor* ti = p.vectors[i]->find(chat_rows_tensor_name(n));
        const CheckpointTensor* tj = p.vectors[j]->find(chat_rows_tensor_name(n));
        if (!ti || !tj || ti->row_elements() != tj->row_elements()) return false;
        std::vector<float> x(ti->row_elements()), y(tj->row_elements());
        convert_to_f32(ti->dtype(), ti->row(uint64_t(a)), x.size(), x.data());
        convert_to_f32(tj->dtype(), tj->row(uint64_t(b)), y.size(), y.data());
        if (std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0) return false;
      }
      return true;
    };
    auto vocab = std::make_shared<VocabDecision>(decide_for_vectors(vvs, job.token_rows_from - 1, same_rows));
    vocab->notes.insert(vocab->notes.begin(), notes.begin(), notes.end());
    for (const auto& name : names) {
      if (vocab->row_map) po.row_maps[name] = vocab->row_map;
      if (vocab->skip_tensors) po.keep_target[name] = "--embeddings skip";
    }
    p.vocab = vocab;
    p.eos = std::make_shared<EosDecision>(decide_eos(job.vectors.front().path, target.dir(), *vocab));
    p.preamble = describe_vocabulary(*vocab);
    if (!p.eos->token.empty())
      p.preamble.push_back("eos: the chat model's \"" + p.eos->token + "\" (" + p.eos->source + ") -> output id " +
                           std::to_string(p.eos->output_id));
  }
  p.plan = build_plan(in, po);

  std::string recipe = "out = target";
  for (size_t i = 0; i < job.vectors.size(); ++i)
    recipe += fmt::format(" + {} * vector{}", ratio_text(job.vectors[i].ratio), i + 1);
  p.exec.metadata = metadata_for(Json{{"recipe", recipe}});
  p.files_from = target.is_directory() ? target.dir() : "";
  p.template_from = job.vectors.front().path;
  p.card.title = output_title(job);
  p.card.inputs = {{"target", job.target}};
  p.card.base_models = {job.target};
  for (size_t i = 0; i < job.vectors.size(); ++i) {
    p.card.inputs.push_back(
        {fmt::format("vector{} (ratio {})", i + 1, ratio_text(job.vectors[i].ratio)), job.vectors[i].path});
    const Json& r = p.vector_recipes[i];
    if (r.contains("chat") && r["chat"].is_string()) p.card.base_models.push_back(r["chat"].get<std::string>());
  }
  p.card.recipe = recipe;
  if (job.ops.any()) p.card.details.push_back("operations on the vectors: " + job.ops.to_string());
  p.card.details.push_back(
      fmt::format("{} tensors combined, {} copied from the target unchanged", p.plan.combined, p.plan.copied));
}

void report_plan(const PreparedJob& p, JobReporter& report) {
  const MergePlan& plan = p.plan;
  report.line(fmt::format("plan: {} tensors: {} combined, {} copied unchanged", plan.tasks.size(), plan.combined,
                          plan.copied));
  size_t shown = 0;
  for (const auto& t : plan.tasks) {
    if (t.kind != TaskKind::Copy) continue;
    if (shown++ < 5) report.line(fmt::format("  copied: {} ({})", t.name, t.note));
  }
  if (shown > 5) report.line(fmt::format("  ... and {} more copied", shown - 5));
  for (const auto& n : plan.notes) report.line("  note: " + n);
  report.line(fmt::format("read {}, write {} to {}", human_bytes(plan.bytes_read),
                          human_bytes(planned_output_bytes(plan, p.exec)), p.job.output));
}

// Throughputs behind the --dry-run time estimate: fixed figures fitted to
// chatvec's median wall times on the `1b` benchmark (bench/run_merge_bench.py,
// docs/benchmarks.md: 9.0 GB read, 3.0 GB written, 4.2 s warm, 9.9 s cold)
// on the benchmark machine (2 shared cores, virtual disk), not measured on
// the machine running the dry run.  Reading inputs already in the page
// cache, reading them from disk, and writing (and syncing) the output; the
// model adds the three times.
constexpr double kCachedReadBytesPerSec = 5.0e9;
constexpr double kDiskReadBytesPerSec = 1.2e9;
constexpr double kWriteBytesPerSec = 1.25e9;

// --dry-run: the resolved ratio and operations by tensor group: the tensor
// names with their layer index as "*", each with its ratios in layer order;
// groups with the same ratios and operations share a line.
void report_ratio_groups(const PreparedJob& p, JobReporter& report) {
  struct Group {
    std::vector<std::string> ratios;  // one per tensor, in layer (storage) order
    std::string ops;
    std::vector<int64_t> layers;
  };
  std::map<std::string, Group> groups;
  std::vector<std::string> order;
  for (const auto& t : p.plan.tasks) {
    if (t.kind == TaskKind::Copy || t.terms.empty() || !t.target) continue;
    std::string key = t.name;
    const int64_t l = layer_of(t.name);
    if (l >= 0) {
      const std::string needle = "layers." + std::to_string(l) + ".";
      const size_t at = key.find(needle);
      if (at != std::string::npos) key.replace(at, needle.size(), "layers.*.");
    }
    auto [it, fresh] = groups.try_emplace(key);
    if (fresh) order.push_back(key);
    std::string r;
    for (size_t i = 0; i < t.terms.size(); ++i) r += (i ? "/" : "") + fmt::format("{:.4g}", t.terms[i].ratio);
    it->second.ratios.push_back(r);
    it->second.layers.push_back(l);
    it->second.ops = t.ops.to_string() + (t.kind == TaskKind::Rows && t.ops.any() ? " (on the combined rows)" : "");
  }
  // Sort each group by layer, then join groups with equal lines.
  std::map<std::string, std::vector<std::string>> lines;
  std::vector<std::string> line_order;
  for (const auto& key : order) {
    Group& g = groups[key];
    std::vector<size_t> idx(g.ratios.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return g.layers[a] < g.layers[b]; });
    std::string rs;
    for (size_t i = 0; i < idx.size(); ++i) rs += (i ? " " : "") + g.ratios[idx[i]];
    const std::string line = (idx.size() > 1 ? "ratio by layer " : "ratio ") + rs + "; operations: " + g.ops;
    if (!lines.count(line)) line_order.push_back(line);
    lines[line].push_back(key);
  }
  report.line(fmt::format("ratios and operations ({} layers):", p.plan.layers));
  for (const auto& line : line_order) {
    std::string names;
    for (const auto& k : lines[line]) names += (names.empty() ? "" : ", ") + k;
    report.line("  " + names + ": " + line);
  }
}

// --dry-run: where the output would go, disk, predicted memory and time.
void report_dry_run(const PreparedJob& p, JobReporter& report) {
  const MergeJob& job = p.job;
  const uint64_t out_bytes = planned_output_bytes(p.plan, p.exec);
  if (path_exists(job.output))
    report.line(fmt::format("note: {} exists{}", job.output, job.force ? " and would be replaced" : ": use --force"));
  std::string parent = fs::path(job.output).parent_path().string();
  if (parent.empty()) parent = ".";
  if (is_directory(parent))
    report.line(fmt::format("disk: need {}, {} free at {}", human_bytes(out_bytes), human_bytes(free_space(parent)),
                            parent));
  const MemoryEstimate m = estimate_peak_memory(p.plan, p.exec);
  report.line(fmt::format("memory: predicted peak {} (chunk buffers {}, input pages mapped at once {}, program {}); "
                          "does not grow with the model",
                          human_bytes(m.total), human_bytes(m.buffers), human_bytes(m.mapped_inputs),
                          human_bytes(m.fixed)));
  const InputResidency r = input_residency(p.plan);
  const double cached = double(r.resident), uncached = double(r.bytes - std::min(r.resident, r.bytes));
  const double seconds =
      cached / kCachedReadBytesPerSec + uncached / kDiskReadBytesPerSec + double(out_bytes) / kWriteBytesPerSec;
  report.line(fmt::format(
      "time: about {} ({:.0f}% of the {} of inputs in the page cache now; estimate from fixed throughputs measured "
      "on the benchmark machine, not this one: cached read {}/s, disk read {}/s, write {}/s)",
      format_duration(seconds), r.bytes ? 100.0 * cached / double(r.bytes) : 100.0, human_bytes(r.bytes),
      human_bytes(uint64_t(kCachedReadBytesPerSec)), human_bytes(uint64_t(kDiskReadBytesPerSec)),
      human_bytes(uint64_t(kWriteBytesPerSec))));
  report_ratio_groups(p, report);
  report.line("dry run: nothing written");
}

// Everything after the tensors: side files, chat template, tokenizer and
// EOS, the vector's recipe, the model card.
void write_model_side(const PreparedJob& p, const std::string& dir, JobReporter& report) {
  const MergeJob& job = p.job;
  const std::string torch_dtype = job.dtype ? torch_dtype_name(*job.dtype) : "";
  const ModelFilesReport files =
      write_model_files(p.files_from, p.template_from, dir, torch_dtype, job.chat_template_file);
  for (const auto& n : files.notes) report.line("note: " + n);
  if (!files.chat_template_source.empty()) report.line("chat template: " + files.chat_template_source);
  if (p.vocab && p.eos && p.target && p.target->is_directory())
    for (const auto& line : finalize_output_tokenizer(dir, p.target->dir(), *p.vocab, *p.eos)) report.line(line);
  if (job.kind == JobKind::Extract) {
    // The chat model's config is kept for reference under another name, so
    // that the vector directory is never mistaken for a loadable model.
    const std::string cfg = dir + "/config.json";
    if (path_exists(cfg)) fs::rename(cfg, dir + "/chat_config.json");
    if (!p.base_tokenizer_from.empty()) {
      const std::string bt = dir + "/" + kBaseTokenizerDir;
      fs::create_directory(bt);
      for (const char* f : kTokenizerFiles)
        if (path_exists(p.base_tokenizer_from + "/" + f)) copy_file(p.base_tokenizer_from + "/" + f, bt + "/" + f);
    }
  }
  // extract: the vector's record; merge and apply: the resolved recipe.
  if (!p.recipe.is_null()) write_file(dir + "/chatvec.json", dump_json_pretty(p.recipe));
  ModelCard card = p.card;
  card.command_line = job.command_line;
  write_file(dir + "/README.md", render_model_card(card));
}

}  // namespace

PreparedJob prepare_job(const MergeJob& job, JobReporter& report) {
  PreparedJob p;
  p.job = job;
  p.inputs = std::make_unique<ModelInputs>(job.output);
  p.exec.shard_size = job.shard_size;
  if (job.chunk_bytes < 4096) throw InputError("--chunk-size must be at least 4KiB");
  p.exec.chunk_bytes = job.chunk_bytes;
  check_ops(job);
  switch (job.kind) {
    case JobKind::Merge: prepare_merge(p, report); break;
    case JobKind::Extract: prepare_extract(p, report); break;
    case JobKind::Apply: prepare_apply(p, report); break;
  }
  for (const auto& w : p.plan.warnings) report.warning(w);
  if (job.kind != JobKind::Extract) {
    // The job as run, so that `--recipe OUT/chatvec.json` reruns it.
    MergeJob recorded = with_absolute_paths(job);
    recorded.output.clear();
    p.recipe = recipe_to_json(recorded);
    p.card.details.push_back("recipe: chatvec.json (rerun with `chatvec " +
                             std::string(job.kind == JobKind::Merge ? "merge" : "apply") +
                             " --recipe chatvec.json -o OUT`): `" + p.recipe.dump() + "`");
    if (!job.recipe_file.empty()) p.card.details.push_back("read from the recipe " + job.recipe_file);
  }
  // Inputs from the Hugging Face cache: their ids and commits in the card
  // (and in an extracted vector's recipe).
  for (const ResolvedInput& r : p.inputs->resolved()) {
    if (!r.hub) continue;
    p.card.details.push_back(fmt::format("{}: Hugging Face model `{}`, revision `{}`, commit `{}`", r.role,
                                         r.hub->repo_id, r.hub->revision, r.hub->commit));
    if (job.kind == JobKind::Extract)
      p.recipe["hub"][r.role] = {{"id", r.hub->repo_id}, {"revision", r.hub->revision}, {"commit", r.hub->commit}};
  }
  return p;
}

JobResult run_job(const MergeJob& job, JobReporter& report) {
  const auto t0 = std::chrono::steady_clock::now();
  if (job.threads > 0) omp_set_num_threads(job.threads);
  PreparedJob p = prepare_job(job, report);
  const uint64_t out_bytes = planned_output_bytes(p.plan, p.exec);

  for (const auto& line : p.inputs->notes()) report.line("note: " + line);
  for (const auto& line : p.preamble) report.line(line);
  JobResult result;
  result.output = job.output;
  if (job.dry_run) {
    report_plan(p, report);
    report_dry_run(p, report);
    result.dry_run = true;
    return result;
  }

  // --format gguf: the model directory is staged next to the output and never
  // committed (removed on exit); the GGUF file is staged and committed alone.
  const bool to_gguf = job.format == OutputFormat::Gguf;
  std::unique_ptr<StagedOutput> gguf_out;
  if (to_gguf) gguf_out = std::make_unique<StagedOutput>(job.output, StagedOutput::Kind::File, job.force);
  StagedOutput staged(to_gguf ? gguf_out->path() + "-dir" : job.output, StagedOutput::Kind::Directory,
                      to_gguf || job.force);
  const uint64_t free = free_space(staged.parent());
  const uint64_t margin = 16ull << 20;  // config, tokenizer, card
  if (free < out_bytes + margin)
    throw RuntimeFailure("not enough free space at " + staged.parent() + ": need " + human_bytes(out_bytes + margin) +
                         ", " + human_bytes(free) + " available");
  report_plan(p, report);

  report.progress_begin(job.kind == JobKind::Extract ? "extract" : "merge");
  p.exec.progress = [&report](uint64_t d, uint64_t t) { report.progress(d, t); };
  execute_plan(p.plan, staged.path(), p.exec);
  report.progress_end();
  write_model_side(p, staged.path(), report);

  StagedOutput* done = &staged;
  result.bytes = out_bytes;
  if (to_gguf) {
    gguf::ExportOptions eo;
    eo.type = gguf::TensorType::F16;
    if (job.gguf_type) {
      eo.type = *job.gguf_type;
    } else if (job.dtype) {
      const auto t = gguf::tensor_type_from_user(dtype_name(*job.dtype));
      if (!t) throw InputError("--format gguf: no GGUF tensor type for --dtype " + dtype_label(job.dtype));
      eo.type = *t;
    }
    eo.name = fs::path(job.output).stem().string();
    const std::string gguf_type_label = job.gguf_type ? gguf::type_name(uint32_t(*job.gguf_type))
                                        : job.dtype   ? std::string(dtype_name(*job.dtype))
                                                      : "f16";
    const gguf::ExportSummary es = gguf::export_gguf(staged.path(), gguf_out->path(), eo);
    report.line(fmt::format("gguf: {} tensors as {}, tokenizer {}{}{}", es.tensors, gguf_type_label,
                            es.tokenizer_model, es.chat_template ? ", chat template" : "",
                            es.recipe ? ", recipe (rerun with --recipe)" : ""));
    for (const std::string& n : es.notes) report.line("gguf: " + n);
    done = gguf_out.get();
    result.bytes = es.bytes;
  }
  done->commit();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace chatvec

// inspect and diff: look at checkpoints without changing them.
#include <omp.h>

#include <cmath>
#include <fmt/core.h>
#include <map>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/architecture.h"
#include "formats/checkpoint.h"
#include "gguf/gguf_reader.h"
#include "merge/kernels.h"

namespace chatvec::cli {

namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
  bool tensors = true;
};

Json config_summary(const Json& c) {
  Json s = Json::object();
  if (!c.is_object()) return s;
  for (const char* k : {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                        "rope_theta", "tie_word_embeddings", "torch_dtype", "bos_token_id", "eos_token_id"})
    if (c.contains(k)) s[k] = c[k];
  return s;
}

// config.json's architecture name, when it has one.
std::optional<std::string> architecture_name(const Checkpoint& c) {
  if (!c.has_config() || !c.config().is_object()) return std::nullopt;
  auto it = c.config().find("architectures");
  if (it == c.config().end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) return std::nullopt;
  return (*it)[0].get<std::string>();
}

int run_inspect(const InspectOptions& o) {
  const std::string path = model_path(o.path);
  if (!is_directory(path) && gguf::looks_like_gguf(path)) return run_inspect_gguf(path, o.json, o.tensors);
  Checkpoint c = Checkpoint::open(path);
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_dtype;  // dtype -> (tensors, params)
  for (const auto& name : c.names()) {
    const CheckpointTensor* t = c.find(name);
    auto& e = by_dtype[std::string(dtype_name(t->dtype()))];
    e.first++;
    e.second += t->numel();
  }
  Json recipe;
  if (c.is_directory() && path_exists(c.dir() + "/chatvec.json")) recipe = read_json_file(c.dir() + "/chatvec.json");

  if (o.json) {
    Json j = Json::object();
    j["path"] = o.path;
    j["kind"] = recipe.is_object() && recipe.value("kind", std::string()) == "chat-vector" ? "chat-vector" : "model";
    j["tensor_count"] = c.tensor_count();
    j["parameter_count"] = c.parameter_count();
    j["tensor_bytes"] = c.tensor_bytes();
    Json shards = Json::array();
    for (const auto& s : c.shards()) shards.push_back({{"file", s.path}, {"bytes", s.file_size}, {"tensors", s.tensors}});
    j["shards"] = shards;
    j["format"] = c.format();
    if (path != o.path) j["resolved_path"] = path;
    if (!c.quantization().scheme.empty())
      j["quantization"] = {{"scheme", c.quantization().scheme},
                           {"weight_dtype", "F8_E4M3"},
                           {"block", {c.quantization().block_rows, c.quantization().block_cols}},
                           {"block_source", c.quantization().block_source},
                           {"scale_dtype", c.quantization().scale_dtype},
                           {"weights", c.quantization().weights},
                           {"scale_tensors", c.fp8_scale_names().size()}};
    Json dt = Json::object();
    for (const auto& [k, v] : by_dtype) dt[k] = {{"tensors", v.first}, {"parameters", v.second}};
    j["dtypes"] = dt;
    if (c.has_config()) j["config"] = config_summary(c.config());
    if (const auto arch = architecture_name(c)) {
      const ArchitectureSupport sup = architecture_support(*arch);
      j["support"] = {{"architecture", sup.architecture}, {"known", sup.known},       {"merge", sup.merge},
                      {"engine", sup.engine},             {"gguf_export", sup.gguf_export},
                      {"gguf_import", sup.gguf_import},   {"gguf_architecture", sup.gguf_arch},
                      {"note", sup.note}};
    }
    if (!recipe.is_null()) j["recipe"] = recipe;
    if (o.tensors) {
      Json ts = Json::array();
      for (const auto& name : c.names()) {
        const CheckpointTensor* t = c.find(name);
        Json row = {{"name", name}, {"dtype", std::string(dtype_name(t->dtype()))}, {"shape", t->shape()},
                    {"bytes", t->nbytes()}};
        if (t->fp8_block_scales()) row["block_scales"] = name + "_scale_inv";
        ts.push_back(row);
      }
      j["tensors"] = ts;
    }
    j["warnings"] = c.warnings();
    fmt::print("{}\n", j.dump(2));
    return 0;
  }

  const bool vector = recipe.is_object() && recipe.value("kind", std::string()) == "chat-vector";
  fmt::print("{}: {}\n", o.path, vector ? "chat vector" : "model");
  if (vector)
    fmt::print("  recipe: {} - {}\n", recipe.value("chat", std::string("?")), recipe.value("base", std::string("?")));
  else if (recipe.is_object())
    fmt::print("  made by chatvec {} (recipe: chatvec.json)\n", recipe.value("kind", std::string("?")));
  if (path != o.path) fmt::print("  from {}\n", path);
  fmt::print("  {} tensors, {} parameters, {} in {} {} file(s)\n", c.tensor_count(), c.parameter_count(),
             human_bytes(c.tensor_bytes()), c.shards().size(), c.format() == "pytorch" ? "PyTorch" : "safetensors");
  if (const CheckpointQuantization& q = c.quantization(); !q.scheme.empty())
    fmt::print("  quantisation: FP8 block-scaled, {} F8_E4M3 weights with {}x{} blocks of {} scales ({} "
               "*_scale_inv tensors; block size from {}); dequantised to fp32 on read\n",
               q.weights, q.block_rows, q.block_cols, q.scale_dtype, c.fp8_scale_names().size(), q.block_source);
  for (const auto& [k, v] : by_dtype) fmt::print("  {}: {} tensors, {} parameters\n", k, v.first, v.second);
  if (const auto arch = architecture_name(c)) fmt::print("  architecture {}\n", describe(architecture_support(*arch)));
  if (c.has_config()) {
    Json s = config_summary(c.config());
    for (auto it = s.begin(); it != s.end(); ++it) fmt::print("  config {}: {}\n", it.key(), it.value().dump());
  }
  for (const auto& w : c.warnings()) fmt::print("  warning: {}\n", w);
  if (o.tensors) {
    fmt::print("\n{:<60} {:<6} {:<20} {:>12}\n", "tensor", "dtype", "shape", "bytes");
    for (const auto& name : c.names()) {
      const CheckpointTensor* t = c.find(name);
      fmt::print("{:<60} {:<6} {:<20} {:>12}{}\n", name, dtype_name(t->dtype()), shape_string(t->shape()), t->nbytes(),
                 t->fp8_block_scales() ? "  (block scales: " + name + "_scale_inv)" : std::string());
    }
  }
  return 0;
}

struct DiffOptions {
  std::string a, b;
  bool json = false;
  bool only_different = false;
};

struct DiffStats {
  double max_abs = 0;
  double rel = 0;  // ||A-B|| / ||B||
  bool nan_mismatch = false;
};

// Elements [s, s + n) of a float tensor (FP8 block-scaled ones dequantised)
// in double precision.
void load_f64(const CheckpointTensor& t, size_t s, size_t n, double* out) {
  if (!t.fp8_block_scales()) return convert_to_f64(t.dtype(), t.element(s), n, out);
  std::vector<float> f(n);
  t.read_f32(s, n, f.data());
  for (size_t i = 0; i < n; ++i) out[i] = f[i];
}

// Compare two float tensors in double precision, in parallel over blocks.
DiffStats diff_tensors(const CheckpointTensor& ta, const CheckpointTensor& tb) {
  const size_t n = ta.numel();
  constexpr size_t kBlock = 1 << 14;
  const int64_t blocks = int64_t((n + kBlock - 1) / kBlock);
  double max_abs = 0, sum_d2 = 0, sum_b2 = 0;
  bool nan_mismatch = false;
#pragma omp parallel reduction(max : max_abs) reduction(+ : sum_d2, sum_b2) reduction(|| : nan_mismatch)
  {
    std::vector<double> va(kBlock), vb(kBlock);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const size_t s = size_t(blk) * kBlock, e = std::min(n, s + kBlock);
      load_f64(ta, s, e - s, va.data());
      load_f64(tb, s, e - s, vb.data());
      for (size_t i = 0; i < e - s; ++i) {
        const double x = va[i], y = vb[i];
        if (std::isnan(x) || std::isnan(y)) {
          if (std::isnan(x) != std::isnan(y)) nan_mismatch = true;
          continue;
        }
        const double d = std::fabs(x - y);
        if (d > max_abs) max_abs = d;
        sum_d2 += d * d;
        sum_b2 += y * y;
      }
    }
  }
  DiffStats st;
  st.max_abs = max_abs;
  st.rel = sum_b2 > 0 ? std::sqrt(sum_d2 / sum_b2) : (sum_d2 > 0 ? INFINITY : 0.0);
  st.nan_mismatch = nan_mismatch;
  return st;
}

int run_diff(const DiffOptions& o) {
  Checkpoint a = Checkpoint::open(model_path(o.a));
  Checkpoint b = Checkpoint::open(model_path(o.b));
  Json rows = Json::array();
  std::vector<std::string> only_a, only_b, mismatched;
  size_t identical = 0;
  for (const auto& name : a.names()) {
    const CheckpointTensor& ta = a.at(name);
    const CheckpointTensor* tb = b.find(name);
    if (!tb) {
      only_a.push_back(name);
      continue;
    }
    const bool fa = ta.readable_as_f32(), fb = tb->readable_as_f32();
    if (ta.shape() != tb->shape() || fa != fb || (!fa && ta.dtype() != tb->dtype())) {
      mismatched.push_back(name + ": " + std::string(dtype_name(ta.dtype())) + " " + shape_string(ta.shape()) +
                           " vs " + std::string(dtype_name(tb->dtype())) + " " + shape_string(tb->shape()));
      continue;
    }
    DiffStats st;
    if (fa) {
      st = diff_tensors(ta, *tb);
    } else {
      const bool same = std::memcmp(ta.data(), tb->data(), ta.nbytes()) == 0;
      st.max_abs = same ? 0 : INFINITY;
      st.rel = same ? 0 : INFINITY;
    }
    const bool same = st.max_abs == 0 && !st.nan_mismatch;
    identical += same;
    if (o.only_different && same) continue;
    rows.push_back({{"name", name},
                    {"max_abs", st.max_abs},
                    {"rel_norm", st.rel},
                    {"nan_mismatch", st.nan_mismatch},
                    {"dtype_a", std::string(dtype_name(ta.dtype()))},
                    {"dtype_b", std::string(dtype_name(tb->dtype()))}});
  }
  for (const auto& name : b.names())
    if (!a.find(name)) only_b.push_back(name);

  if (o.json) {
    Json j = {{"a", o.a}, {"b", o.b}, {"tensors", rows}, {"identical", identical}, {"only_in_a", only_a},
              {"only_in_b", only_b}, {"mismatched", mismatched}};
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("{:<60} {:>14} {:>14}\n", "tensor", "max|A-B|", "|A-B|/|B|");
  for (const auto& r : rows)
    fmt::print("{:<60} {:>14.6g} {:>14.6g}{}\n", r["name"].get<std::string>(), r["max_abs"].get<double>(),
               r["rel_norm"].get<double>(), r["nan_mismatch"].get<bool>() ? "  NaN differs" : "");
  fmt::print("\n{} tensors compared, {} identical\n", rows.size() + (o.only_different ? identical : 0), identical);
  for (const auto& n : only_a) fmt::print("only in A: {}\n", n);
  for (const auto& n : only_b) fmt::print("only in B: {}\n", n);
  for (const auto& n : mismatched) fmt::print("mismatched: {}\n", n);
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "Tensors, dtypes, shapes, parameters, bytes and config of a model");
  sub->add_option("path", o->path, "Model directory, .safetensors, .bin or .gguf file, or Hugging Face id org/name[@revision] in the local cache")->required();
  sub->add_flag("--json", o->json, "JSON output");
  sub->add_flag("!--no-tensors", o->tensors, "Summary only, no per-tensor table");
  sub->callback([o, &run] { run = [o] { return run_inspect(*o); }; });
}

void register_diff(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<DiffOptions>();
  CLI::App* sub = app.add_subcommand("diff", "Per tensor max|A-B| and ||A-B||/||B||; missing or mismatched tensors");
  sub->add_option("a", o->a, "Model A (a path or a cached Hugging Face id)")->required();
  sub->add_option("b", o->b, "Model B")->required();
  sub->add_flag("--json", o->json, "JSON output");
  sub->add_flag("--only-different", o->only_different, "List only tensors that differ");
  sub->callback([o, &run] { run = [o] { return run_diff(*o); }; });
}

}  // namespace chatvec::cli

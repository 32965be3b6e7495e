#include "merge/recipe.h"

#include <cmath>
#include <fmt/core.h>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "formats/hf_cache.h"
#include "gguf/gguf_export.h"
#include "gguf/gguf_reader.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {

constexpr int kRecipeVersion = 1;

Json ratio_to_json(const RatioSchedule& r) {
  if (r.points.size() == 1) return r.points.front();
  return Json(r.points);
}

Json overrides_to_json(const RatioSchedule& r) {
  Json a = Json::array();
  for (const auto& o : r.overrides) a.push_back({{"pattern", o.pattern}, {"ratio", o.value}});
  return a;
}

// Reading: every message names the recipe (`where`) and the key.
class Reader {
 public:
  explicit Reader(std::string where) : where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw InputError(where_ + ": \"" + key + "\": " + problem);
  }
  void check_keys(const Json& obj, const std::string& prefix, const std::set<std::string>& allowed) const {
    if (!obj.is_object()) fail(prefix.empty() ? "(top level)" : prefix, "must be a JSON object");
    for (auto it = obj.begin(); it != obj.end(); ++it)
      if (!allowed.count(it.key()))
        throw InputError(where_ + ": unknown key \"" + prefix + (prefix.empty() ? "" : ".") + it.key() + "\"");
  }
  std::string string(const Json& v, const std::string& key) const {
    if (!v.is_string()) fail(key, "must be a string");
    return v.get<std::string>();
  }
  double number(const Json& v, const std::string& key) const {
    if (!v.is_number()) fail(key, "must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(key, "must be a finite number");
    return d;
  }
  bool boolean(const Json& v, const std::string& key) const {
    if (!v.is_boolean()) fail(key, "must be true or false");
    return v.get<bool>();
  }
  std::vector<std::string> strings(const Json& v, const std::string& key) const {
    if (!v.is_array()) fail(key, "must be an array of strings");
    std::vector<std::string> out;
    for (const Json& e : v) out.push_back(string(e, key));
    return out;
  }
  std::string path(const Json& v, const std::string& key, const fs::path& base) const {
    const std::string s = string(v, key);
    if (s.empty()) fail(key, "must not be empty");
    const fs::path p(s);
    if (p.is_absolute() || base.empty()) return s;
    const std::string local = (base / p).lexically_normal().string();
    // A Hugging Face id (org/name[@rev]) of a cached model stays an id
    // unless it names a local path.
    const auto ref = parse_hf_model_ref(s);
    const bool cached = ref && is_directory(hf_hub_cache_dir().path + "/" + hf_cache_folder_name(ref->repo_id));
    return cached && !path_exists(local) ? s : local;
  }
  std::vector<double> points(const Json& v, const std::string& key) const {
    if (v.is_number()) return {number(v, key)};
    if (v.is_string()) {
      try {
        return parse_ratio_points(v.get<std::string>(), "\"" + key + "\"");
      } catch (const InputError& e) {
        throw InputError(where_ + ": " + e.what());
      }
    }
    if (!v.is_array() || v.empty()) fail(key, "must be a number or a non-empty array of numbers");
    std::vector<double> out;
    for (const Json& e : v) out.push_back(number(e, key));
    return out;
  }
  std::vector<RatioOverride> overrides(const Json& v, const std::string& key) const {
    if (!v.is_array()) fail(key, "must be an array of {\"pattern\": REGEX, \"ratio\": VALUE} (or \"REGEX=VALUE\")");
    std::vector<RatioOverride> out;
    for (const Json& e : v) {
      if (e.is_string()) {
        try {
          out.push_back(parse_ratio_override(e.get<std::string>(), "\"" + key + "\""));
        } catch (const InputError& err) {
          throw InputError(where_ + ": " + err.what());
        }
        continue;
      }
      check_keys(e, key + "[]", {"pattern", "ratio"});
      if (!e.contains("pattern") || !e.contains("ratio")) fail(key, "each entry needs \"pattern\" and \"ratio\"");
      out.push_back(RatioOverride{string(e["pattern"], key + ".pattern"), number(e["ratio"], key + ".ratio")});
    }
    return out;
  }

 private:
  std::string where_;
};

void read_ops(const Reader& r, const Json& j, VectorOps& ops) {
  r.check_keys(j, "operations", {"dare", "magnitude", "clip", "ties"});
  if (j.contains("dare")) {
    const Json& d = j["dare"];
    r.check_keys(d, "operations.dare", {"p", "seed"});
    if (!d.contains("p")) r.fail("operations.dare", "needs \"p\"");
    ops.dare = r.number(d["p"], "operations.dare.p");
    if (d.contains("seed")) {
      if (!d["seed"].is_number_unsigned() && !(d["seed"].is_number_integer() && d["seed"].get<int64_t>() >= 0))
        r.fail("operations.dare.seed", "must be an integer >= 0");
      ops.seed = d["seed"].get<uint64_t>();
    }
  }
  if (j.contains("magnitude")) {
    const Json& m = j["magnitude"];
    r.check_keys(m, "operations.magnitude", {"keep", "rescale"});
    if (!m.contains("keep")) r.fail("operations.magnitude", "needs \"keep\"");
    ops.keep = r.number(m["keep"], "operations.magnitude.keep");
    if (m.contains("rescale")) {
      const auto rs = rescale_from_name(r.string(m["rescale"], "operations.magnitude.rescale"));
      if (!rs) r.fail("operations.magnitude.rescale", "must be \"none\", \"l1\" or \"l2\"");
      ops.rescale = *rs;
    }
  }
  if (j.contains("clip")) ops.clip = r.number(j["clip"], "operations.clip");
  if (j.contains("ties")) ops.ties = r.boolean(j["ties"], "operations.ties");
}

MergeJob from_json(const Json& j, const fs::path& rel, const std::string& where) {
  const Reader r(where);
  r.check_keys(j, "",
               {"chatvec_recipe", "chatvec_version", "kind", "base", "chat", "target", "ratio", "ratio_for", "vectors",
                "output", "dtype", "format", "gguf_type", "include", "exclude", "embeddings", "special_tokens",
                "token_rows_from", "chat_template", "shard_size", "operations"});
  if (j.contains("chatvec_recipe") && (!j["chatvec_recipe"].is_number_integer() ||
                                       j["chatvec_recipe"].get<int64_t>() != kRecipeVersion))
    r.fail("chatvec_recipe", fmt::format("this chatvec reads recipe format {}", kRecipeVersion));
  if (!j.contains("kind")) r.fail("kind", "missing: \"merge\" or \"apply\"");
  MergeJob job;
  const std::string kind = r.string(j["kind"], "kind");
  if (kind == "merge") job.kind = JobKind::Merge;
  else if (kind == "apply") job.kind = JobKind::Apply;
  else if (kind == "chat-vector")
    r.fail("kind", "this is a chat vector's record (from extract), not a recipe: use it with `chatvec apply --vector`");
  else r.fail("kind", "must be \"merge\" or \"apply\"");
  const bool merge = job.kind == JobKind::Merge;
  auto only = [&](const char* key, bool allowed) {
    if (j.contains(key) && !allowed) r.fail(key, std::string("is not a key of a ") + kind + " recipe");
  };
  only("base", merge);
  only("chat", merge);
  only("chat_template", merge);
  only("vectors", !merge);
  only("token_rows_from", !merge);
  if (j.contains("base")) job.base = r.path(j["base"], "base", rel);
  if (j.contains("chat")) job.chat = r.path(j["chat"], "chat", rel);
  if (j.contains("target")) job.target = r.path(j["target"], "target", rel);
  if (j.contains("output")) job.output = r.path(j["output"], "output", rel);
  if (j.contains("chat_template")) job.chat_template_file = r.path(j["chat_template"], "chat_template", rel);
  std::vector<RatioOverride> top_overrides;
  if (j.contains("ratio_for")) top_overrides = r.overrides(j["ratio_for"], "ratio_for");
  if (merge) {
    if (j.contains("ratio")) job.ratio.points = r.points(j["ratio"], "ratio");
    job.ratio.overrides = top_overrides;
  } else {
    only("ratio", false);
    if (j.contains("vectors")) {
      if (!j["vectors"].is_array()) r.fail("vectors", "must be an array of {\"path\": DIR, \"ratio\": ...}");
      for (const Json& v : j["vectors"]) {
        ApplyVector av;
        if (v.is_string()) {
          av.path = r.path(v, "vectors[]", rel);
        } else {
          r.check_keys(v, "vectors[]", {"path", "ratio", "ratio_for"});
          if (!v.contains("path")) r.fail("vectors[]", "each vector needs \"path\"");
          av.path = r.path(v["path"], "vectors[].path", rel);
          if (v.contains("ratio")) av.ratio.points = r.points(v["ratio"], "vectors[].ratio");
          if (v.contains("ratio_for")) av.ratio.overrides = r.overrides(v["ratio_for"], "vectors[].ratio_for");
        }
        // Top-level overrides apply to every vector, after its own.
        av.ratio.overrides.insert(av.ratio.overrides.end(), top_overrides.begin(), top_overrides.end());
        job.vectors.push_back(std::move(av));
      }
    }
  }
  if (j.contains("dtype")) {
    const std::string d = r.string(j["dtype"], "dtype");
    if (d != "auto") {
      const auto dt = dtype_from_user(d);
      if (!dt) r.fail("dtype", "must be auto, bf16, f16 or f32");
      job.dtype = dt;
    }
  }
  if (j.contains("format")) {
    const std::string f = r.string(j["format"], "format");
    if (f == "safetensors") job.format = OutputFormat::Safetensors;
    else if (f == "gguf") job.format = OutputFormat::Gguf;
    else r.fail("format", "must be safetensors or gguf");
  }
  if (j.contains("gguf_type") && !j["gguf_type"].is_null()) {
    const auto t = gguf::tensor_type_from_user(r.string(j["gguf_type"], "gguf_type"));
    if (!t) r.fail("gguf_type", "must be f32, f16, bf16 or q8_0");
    job.gguf_type = t;
  }
  if (j.contains("include")) job.include = r.strings(j["include"], "include");
  if (j.contains("exclude")) job.exclude = r.strings(j["exclude"], "exclude");
  if (j.contains("embeddings")) {
    const auto e = embedding_policy_from_name(r.string(j["embeddings"], "embeddings"));
    if (!e) r.fail("embeddings", "must be auto, full, shared, align or skip");
    job.embeddings = *e;
  }
  if (j.contains("special_tokens")) {
    const std::string s = r.string(j["special_tokens"], "special_tokens");
    if (s != "transplant" && s != "none") r.fail("special_tokens", "must be transplant or none");
    job.transplant_special_tokens = s == "transplant";
  }
  if (j.contains("token_rows_from")) {
    if (!j["token_rows_from"].is_number_integer()) r.fail("token_rows_from", "must be an integer");
    job.token_rows_from = int(j["token_rows_from"].get<int64_t>());
  }
  if (j.contains("shard_size")) {
    const Json& s = j["shard_size"];
    if (s.is_number_unsigned() || (s.is_number_integer() && s.get<int64_t>() > 0)) {
      job.shard_size = s.get<uint64_t>();
    } else if (s.is_string()) {
      try {
        job.shard_size = parse_size(s.get<std::string>());
      } catch (const Error& e) {
        r.fail("shard_size", e.what());
      }
    } else {
      r.fail("shard_size", "must be a number of bytes or a size such as \"5GB\"");
    }
  }
  if (j.contains("operations")) read_ops(r, j["operations"], job.ops);
  return job;
}

std::string absolute(const std::string& p) {
  if (p.empty()) return p;
  // A Hugging Face id that is not a local path is recorded as the id.
  if (parse_hf_model_ref(p) && !path_exists(p)) return p;
  return fs::absolute(fs::path(p)).lexically_normal().string();
}

}  // namespace

Json recipe_to_json(const MergeJob& job) {
  if (job.kind == JobKind::Extract) throw std::logic_error("recipe_to_json: extract writes a vector record");
  const bool merge = job.kind == JobKind::Merge;
  Json j = Json::object();
  j["chatvec_recipe"] = kRecipeVersion;
  j["chatvec_version"] = CHATVEC_VERSION;
  j["kind"] = merge ? "merge" : "apply";
  if (merge) {
    j["base"] = job.base;
    j["chat"] = job.chat;
  }
  j["target"] = job.target;
  if (merge) {
    j["ratio"] = ratio_to_json(job.ratio);
    j["ratio_for"] = overrides_to_json(job.ratio);
  } else {
    Json vs = Json::array();
    for (const auto& v : job.vectors)
      vs.push_back({{"path", v.path}, {"ratio", ratio_to_json(v.ratio)}, {"ratio_for", overrides_to_json(v.ratio)}});
    j["vectors"] = vs;
  }
  if (!job.output.empty()) j["output"] = job.output;
  j["dtype"] = dtype_label(job.dtype);
  j["format"] = job.format == OutputFormat::Gguf ? "gguf" : "safetensors";
  if (job.gguf_type) {
    std::string t = gguf::type_name(uint32_t(*job.gguf_type));
    for (char& c : t) c = char(std::tolower(static_cast<unsigned char>(c)));
    j["gguf_type"] = t;
  } else {
    j["gguf_type"] = nullptr;
  }
  j["include"] = job.include;
  j["exclude"] = job.exclude;
  j["embeddings"] = embedding_policy_name(job.embeddings);
  j["special_tokens"] = job.transplant_special_tokens ? "transplant" : "none";
  if (!merge) j["token_rows_from"] = job.token_rows_from;
  if (merge && !job.chat_template_file.empty()) j["chat_template"] = job.chat_template_file;
  j["shard_size"] = job.shard_size;
  Json ops = Json::object();
  if (job.ops.dare > 0) ops["dare"] = {{"p", job.ops.dare}, {"seed", job.ops.seed}};
  if (job.ops.keep < 1) ops["magnitude"] = {{"keep", job.ops.keep}, {"rescale", rescale_name(job.ops.rescale)}};
  if (job.ops.clip > 0) ops["clip"] = job.ops.clip;
  if (job.ops.ties) ops["ties"] = true;
  j["operations"] = ops;
  return j;
}

MergeJob recipe_from_json(const Json& recipe, const fs::path& relative_to) {
  return from_json(recipe, relative_to, "recipe");
}

MergeJob read_recipe_file(const fs::path& path) {
  const std::string p = path.string();
  if (!path_exists(p)) throw InputError(p + ": no such recipe file");
  Json j;
  if (gguf::looks_like_gguf(p)) {
    // A GGUF written by `merge --format gguf` (or exported from a merge's
    // directory) carries its recipe under chatvec.recipe.
    const gguf::File f(p);
    const gguf::Value* v = f.find(gguf::kRecipeKey);
    if (!v) throw InputError(p + ": a GGUF file without a recipe (no " + std::string(gguf::kRecipeKey) +
                             " key: it was not written by a chatvec merge)");
    if (v->type != gguf::ValueType::STRING)
      throw InputError(p + ": " + std::string(gguf::kRecipeKey) + " is not a string");
    try {
      j = Json::parse(v->s);
    } catch (const Json::exception& e) {
      throw InputError(p + ": " + std::string(gguf::kRecipeKey) + " is not valid JSON (" + e.what() + ")");
    }
  } else {
    j = read_json_file(p);
  }
  MergeJob job = from_json(j, fs::absolute(path).parent_path(), p);
  job.recipe_file = p;
  return job;
}

MergeJob with_absolute_paths(const MergeJob& job) {
  MergeJob a = job;
  a.base = absolute(job.base);
  a.chat = absolute(job.chat);
  a.target = absolute(job.target);
  a.chat_template_file = absolute(job.chat_template_file);
  for (auto& v : a.vectors) v.path = absolute(v.path);
  return a;
}

}  // namespace chatvec

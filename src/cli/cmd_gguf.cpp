// export gguf: a Hugging Face model directory -> one GGUF file for llama.cpp.
#include <fmt/core.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "core/staging.h"
#include "formats/architecture.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_export.h"
#include "gguf/gguf_import.h"

namespace chatvec::cli {

namespace {

struct ExportGgufOptions {
  std::string dir;
  std::string out;
  std::string type = "f16";
  std::string name;
  bool force = false;
};

int run_export_gguf(const ExportGgufOptions& o) {
  const auto type = gguf::tensor_type_from_user(o.type);
  if (!type) throw InputError(fmt::format("--type {}: expected f32, f16, bf16 or q8_0", o.type));
  if (!is_directory(o.dir)) throw InputError(fmt::format("{}: not a model directory", o.dir));
  StagedOutput staged(o.out, StagedOutput::Kind::File, o.force);
  gguf::ExportOptions eo;
  eo.type = *type;
  eo.name = o.name;
  ProgressBar bar("export");
  if (!global_options().quiet) eo.progress = [&](uint64_t d, uint64_t t) { bar.update(d, t); };
  const gguf::ExportSummary s = gguf::export_gguf(o.dir, staged.path(), eo);
  bar.finish();
  staged.commit();
  if (!global_options().quiet) {
    std::fprintf(stderr, "wrote %s: GGUF v3, architecture %s, %zu tensors, %s, type %s, tokenizer %s (%zu tokens)%s\n",
                 o.out.c_str(), s.architecture.c_str(), s.tensors, human_bytes(s.bytes).c_str(), o.type.c_str(),
                 s.tokenizer_model.c_str(), s.vocab_size, s.chat_template ? ", chat template" : "");
    if (s.f16_fallbacks)
      std::fprintf(stderr, "note: %zu tensors kept in f16 (row length not a multiple of the q8_0 block of 32)\n",
                   s.f16_fallbacks);
    for (const std::string& n : s.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  }
  return 0;
}

struct ExportStOptions {
  std::string in, out;
  bool force = false;
};

int run_export_safetensors(const ExportStOptions& o) {
  if (!gguf::looks_like_gguf(o.in)) throw InputError(fmt::format("{}: not a GGUF file", o.in));
  StagedOutput staged(o.out, StagedOutput::Kind::Directory, o.force);
  ProgressBar bar("export");
  std::function<void(uint64_t, uint64_t)> prog;
  if (!global_options().quiet) prog = [&](uint64_t d, uint64_t t) { bar.update(d, t); };
  const gguf::ImportSummary s = gguf::import_gguf(o.in, staged.path(), prog);
  bar.finish();
  staged.commit();
  if (!global_options().quiet) {
    std::fprintf(stderr, "wrote %s: %s, %zu tensors (model.safetensors, config.json, %s)\n", o.out.c_str(),
                 s.architecture.c_str(), s.tensors, gguf::kTokenizerSidecar);
    if (s.dequantized) std::fprintf(stderr, "note: %zu Q8_0 tensors dequantised to F32\n", s.dequantized);
    for (const auto& n : s.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  }
  return 0;
}

Json value_json(const gguf::Value& v, size_t max_items) {
  using gguf::ValueType;
  auto scalar = [](ValueType t, const uint8_t* p) -> Json {
    switch (t) {
      case ValueType::U8: return p[0];
      case ValueType::I8: return int8_t(p[0]);
      case ValueType::BOOL: return p[0] != 0;
      case ValueType::U16: { uint16_t x; std::memcpy(&x, p, 2); return x; }
      case ValueType::I16: { int16_t x; std::memcpy(&x, p, 2); return x; }
      case ValueType::U32: { uint32_t x; std::memcpy(&x, p, 4); return x; }
      case ValueType::I32: { int32_t x; std::memcpy(&x, p, 4); return x; }
      case ValueType::F32: { float x; std::memcpy(&x, p, 4); return std::isfinite(x) ? Json(x) : Json(nullptr); }
      case ValueType::U64: { uint64_t x; std::memcpy(&x, p, 8); return x; }
      case ValueType::I64: { int64_t x; std::memcpy(&x, p, 8); return x; }
      case ValueType::F64: { double x; std::memcpy(&x, p, 8); return std::isfinite(x) ? Json(x) : Json(nullptr); }
      default: return nullptr;
    }
  };
  switch (v.type) {
    case ValueType::STRING: return v.s;
    case ValueType::BOOL: return v.u != 0;
    case ValueType::F32: case ValueType::F64: return std::isfinite(v.f) ? Json(v.f) : Json(nullptr);
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64: return v.i;
    case ValueType::ARRAY: {
      Json items = Json::array();
      const size_t shown = size_t(std::min<uint64_t>(v.count, max_items));
      for (size_t k = 0; k < shown; ++k) {
        if (v.array_type == ValueType::STRING) items.push_back(v.strings[k]);
        else items.push_back(scalar(v.array_type, v.raw.data() + k * gguf::value_type_size(v.array_type)));
      }
      if (v.count <= max_items) return items;
      return Json{{"type", gguf::value_type_name(v.array_type)}, {"count", v.count}, {"first", items}};
    }
    default: return v.u;
  }
}

}  // namespace

int run_inspect_gguf(const std::string& path, bool json, bool tensors) {
  const gguf::File f(path);
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;
  uint64_t params = 0, bytes = 0;
  for (const auto& t : f.tensors()) {
    auto& e = by_type[gguf::type_name(t.type)];
    e.first++;
    e.second += t.numel;
    params += t.numel;
    bytes += t.nbytes;
  }
  if (json) {
    Json j = Json::object();
    j["path"] = path;
    j["format"] = "gguf";
    j["version"] = f.header().version;
    j["alignment"] = f.header().alignment;
    j["tensor_count"] = f.tensors().size();
    j["parameter_count"] = params;
    j["tensor_bytes"] = bytes;
    Json types = Json::object();
    for (const auto& [k, v] : by_type) types[k] = {{"tensors", v.first}, {"parameters", v.second}};
    j["types"] = types;
    if (const auto* a = f.find("general.architecture"); a && a->type == gguf::ValueType::STRING)
      j["support"] = describe_gguf_architecture(a->s);
    Json md = Json::object();
    for (const auto& kv : f.kvs()) md[kv.key] = value_json(kv.value, 16);
    j["metadata"] = md;
    if (tensors) {
      Json ts = Json::array();
      for (const auto& t : f.tensors())
        ts.push_back({{"name", t.name}, {"type", gguf::type_name(t.type)}, {"ne", t.ne}, {"offset", t.offset},
                      {"bytes", t.nbytes}});
      j["tensors"] = ts;
    }
    fmt::print("{}\n", j.dump(2, ' ', false, Json::error_handler_t::replace));
    return 0;
  }
  fmt::print("{}: GGUF v{}, alignment {}\n", path, f.header().version, f.header().alignment);
  fmt::print("  {} tensors, {} parameters, {}\n", f.tensors().size(), params, human_bytes(bytes));
  for (const auto& [k, v] : by_type) fmt::print("  {}: {} tensors, {} parameters\n", k, v.first, v.second);
  if (const auto* a = f.find("general.architecture"); a && a->type == gguf::ValueType::STRING)
    fmt::print("  architecture {}\n", describe_gguf_architecture(a->s));
  for (const auto& kv : f.kvs())
    fmt::print("  {} ({}{}{}): {}\n", kv.key, gguf::value_type_name(kv.value.type),
               kv.value.type == gguf::ValueType::ARRAY ? " of " : "",
               kv.value.type == gguf::ValueType::ARRAY ? gguf::value_type_name(kv.value.array_type) : "",
               kv.value.to_string());
  if (tensors) {
    fmt::print("\n{:<40} {:<6} {:<24} {:>12}\n", "tensor", "type", "ne", "bytes");
    for (const auto& t : f.tensors()) {
      std::string ne = "[";
      for (size_t d = 0; d < t.ne.size(); ++d) ne += (d ? ", " : "") + std::to_string(t.ne[d]);
      fmt::print("{:<40} {:<6} {:<24} {:>12}\n", t.name, gguf::type_name(t.type), ne + "]", t.nbytes);
    }
  }
  return 0;
}

void register_gguf(CLI::App& app, std::function<int()>& run) {
  CLI::App* ex = app.add_subcommand("export", "Write a model in another format");
  ex->require_subcommand(1);
  auto o = std::make_shared<ExportGgufOptions>();
  CLI::App* g = ex->add_subcommand("gguf", "Hugging Face Llama/Mistral/Qwen2 directory -> GGUF file for llama.cpp");
  g->add_option("model", o->dir, "Hugging Face model directory, or id org/name[@revision] in the local cache")->required();
  g->add_option("-o,--output", o->out, "Output .gguf file")->required();
  g->add_option("--type", o->type, "Type of the 2-D weights: f32, f16, bf16 or q8_0 (1-D tensors stay f32)")
      ->capture_default_str();
  g->add_option("--name", o->name, "general.name (default: the directory's name)");
  g->add_flag("-f,--force", o->force, "Replace an existing output file");
  g->callback([&run, o] { run = [o] {
    o->dir = model_path(o->dir);
    return run_export_gguf(*o);
  }; });
  auto so = std::make_shared<ExportStOptions>();
  CLI::App* st = ex->add_subcommand("safetensors", "GGUF file (llama/qwen2) -> Hugging Face directory (safetensors)");
  st->add_option("model", so->in, "GGUF file")->required();
  st->add_option("-o,--output", so->out, "Output directory (must not exist)")->required();
  st->add_flag("-f,--force", so->force, "Replace an existing output directory");
  st->callback([&run, so] { run = [so] { return run_export_safetensors(*so); }; });
}

}  // namespace chatvec::cli

// export gguf: a Hugging Face model directory -> one GGUF file for llama.cpp.
#include <fmt/core.h>

#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/staging.h"
#include "gguf/gguf_export.h"

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
  }
  return 0;
}

}  // namespace

void register_gguf(CLI::App& app, std::function<int()>& run) {
  CLI::App* ex = app.add_subcommand("export", "Write a model in another format");
  ex->require_subcommand(1);
  auto o = std::make_shared<ExportGgufOptions>();
  CLI::App* g = ex->add_subcommand("gguf", "Hugging Face Llama/Mistral/Qwen2 directory -> GGUF file for llama.cpp");
  g->add_option("model", o->dir, "Hugging Face model directory")->required();
  g->add_option("-o,--output", o->out, "Output .gguf file")->required();
  g->add_option("--type", o->type, "Type of the 2-D weights: f32, f16, bf16 or q8_0 (1-D tensors stay f32)")
      ->capture_default_str();
  g->add_option("--name", o->name, "general.name (default: the directory's name)");
  g->add_flag("-f,--force", o->force, "Replace an existing output file");
  g->callback([&run, o] { run = [o] { return run_export_gguf(*o); }; });
}

}  // namespace chatvec::cli

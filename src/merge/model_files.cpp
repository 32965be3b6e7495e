#include "merge/model_files.h"

#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/model_dir.h"

namespace chatvec {

std::string torch_dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    default: return "";
  }
}

ModelFilesReport write_model_files(const std::string& files_from, const std::string& template_from,
                                   const std::string& out_dir, const std::string& torch_dtype,
                                   const std::string& template_file) {
  ModelFilesReport report;
  if (!files_from.empty() && is_directory(files_from)) report.copied = copy_side_files(files_from, out_dir);

  if (!template_file.empty() || (!template_from.empty() && template_from != files_from)) {
    ChatTemplateFiles t;
    if (!template_file.empty()) t.tokenizer_config = Json(read_file(template_file));
    else t = read_chat_template_files(template_from);
    if (!t.empty()) {
      // The chat model's template wins: the target's template files are
      // replaced by the chat model's.
      replace_chat_template(out_dir, t);
      report.chat_template_source = !template_file.empty() ? template_file
                                    : t.jinja              ? template_from + "/chat_template.jinja"
                                    : t.tokenizer_config   ? template_from + "/tokenizer_config.json"
                                                           : template_from + "/chat_template.json";
    } else {
      report.notes.push_back("the chat model " + template_from + " has no chat template; the target's is kept");
    }
  }
  if (report.chat_template_source.empty() && !files_from.empty())
    if (const auto found = find_chat_template(files_from)) report.chat_template_source = found->origin;

  const std::string cfg = out_dir + "/config.json";
  if (path_exists(cfg)) {
    Json c = read_json_file(cfg);
    bool changed = false;
    if (c.is_object() && !torch_dtype.empty() && c.value("torch_dtype", std::string()) != torch_dtype) {
      c["torch_dtype"] = torch_dtype;
      changed = true;
    }
    // FP8 block-scaled weights are dequantised on read and never written as
    // FP8 (merge/plan.h), so the output is not quantised any more.
    if (c.is_object() && c.contains("quantization_config") && c["quantization_config"].is_object() &&
        c["quantization_config"].value("quant_method", std::string()) == "fp8") {
      c.erase("quantization_config");
      changed = true;
      report.notes.push_back("config.json: quantization_config (fp8) removed: the FP8 weights were dequantised");
    }
    if (changed) rewrite_json_file(cfg, c);
  }
  return report;
}

namespace {
std::string yaml_quote(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    r += c;
  }
  return r + "\"";
}
}  // namespace

std::string render_model_card(const ModelCard& card) {
  std::ostringstream o;
  o << "---\n";
  if (!card.base_models.empty()) {
    o << "base_model:\n";
    for (const auto& b : card.base_models) o << "- " << yaml_quote(b) << "\n";
  }
  o << "tags:\n- merge\n- chat-vector\n- chatvec\n";
  o << "library_name: transformers\n---\n\n";
  o << "# " << card.title << "\n\n";
  o << "Made with chatvec " << CHATVEC_VERSION
    << " by chat-vector arithmetic (Huang et al., *Chat Vector*, ACL 2024), without training.\n\n";
  o << "## Recipe\n\n`" << card.recipe << "`\n\n";
  o << "| role | model |\n|---|---|\n";
  for (const auto& [role, path] : card.inputs) o << "| " << role << " | `" << path << "` |\n";
  o << "\n";
  for (const auto& d : card.details) o << "- " << d << "\n";
  if (!card.details.empty()) o << "\n";
  if (!card.command_line.empty()) o << "Command:\n\n```sh\n" << card.command_line << "\n```\n";
  return o.str();
}

}  // namespace chatvec

#include "merge/model_files.h"

#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"

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

namespace {

// The chat template of a model directory: tokenizer_config.json's
// chat_template (string or list of named templates) and/or chat_template.jinja.
struct TemplateFiles {
  bool has_config_field = false;
  Json config_field;
  bool has_jinja = false;
  std::string jinja;
};

TemplateFiles find_template(const std::string& dir) {
  TemplateFiles t;
  const std::string tc = dir + "/tokenizer_config.json";
  if (path_exists(tc)) {
    Json j = read_json_file(tc);
    if (j.is_object() && j.contains("chat_template") && !j["chat_template"].is_null()) {
      t.has_config_field = true;
      t.config_field = j["chat_template"];
    }
  }
  const std::string jf = dir + "/chat_template.jinja";
  if (path_exists(jf)) {
    t.has_jinja = true;
    t.jinja = read_file(jf);
  }
  return t;
}

}  // namespace

ModelFilesReport write_model_files(const std::string& files_from, const std::string& template_from,
                                   const std::string& out_dir, const std::string& torch_dtype,
                                   const std::string& template_file) {
  ModelFilesReport report;
  if (!files_from.empty() && is_directory(files_from)) {
    for (const auto& e : std::filesystem::directory_iterator(files_from)) {
      if (!e.is_regular_file()) continue;
      const std::string name = e.path().filename().string();
      if (is_weight_file_name(name) || name == "README.md" || name == "chatvec.json") continue;
      copy_file(e.path().string(), out_dir + "/" + name);
      report.copied.push_back(name);
    }
  }

  TemplateFiles override_template;
  if (!template_file.empty()) {
    override_template.has_config_field = true;
    override_template.config_field = read_file(template_file);
  }
  if (!template_file.empty() || (!template_from.empty() && template_from != files_from)) {
    TemplateFiles t = template_file.empty() ? find_template(template_from) : override_template;
    if (t.has_config_field || t.has_jinja) {
      // The chat model's template wins: drop whatever template files the
      // target carried, then write the chat model's.
      const std::string out_tc = out_dir + "/tokenizer_config.json";
      Json tc = path_exists(out_tc) ? read_json_file(out_tc) : Json::object();
      if (!tc.is_object()) throw InputError(out_tc + ": not a JSON object");
      if (t.has_config_field) tc["chat_template"] = t.config_field;
      else tc.erase("chat_template");
      std::filesystem::remove(out_tc);
      write_file(out_tc, dump_json_pretty(tc));
      std::filesystem::remove(out_dir + "/chat_template.jinja");
      std::filesystem::remove(out_dir + "/chat_template.json");
      if (t.has_jinja) write_file(out_dir + "/chat_template.jinja", t.jinja);
      report.chat_template_source =
          !template_file.empty() ? template_file
                                 : template_from + (t.has_jinja ? "/chat_template.jinja" : "/tokenizer_config.json");
    } else {
      report.notes.push_back("the chat model " + template_from + " has no chat template; the target's is kept");
    }
  }
  if (report.chat_template_source.empty() && !files_from.empty()) {
    TemplateFiles t = find_template(files_from);
    if (t.has_jinja) report.chat_template_source = files_from + "/chat_template.jinja";
    else if (t.has_config_field) report.chat_template_source = files_from + "/tokenizer_config.json";
  }

  const std::string cfg = out_dir + "/config.json";
  if (!torch_dtype.empty() && path_exists(cfg)) {
    Json c = read_json_file(cfg);
    if (c.is_object() && c.value("torch_dtype", std::string()) != torch_dtype) {
      c["torch_dtype"] = torch_dtype;
      std::filesystem::remove(cfg);
      write_file(cfg, dump_json_pretty(c));
    }
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

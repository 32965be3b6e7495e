#include "formats/model_dir.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "formats/checkpoint.h"

namespace chatvec {

namespace fs = std::filesystem;

Json read_json_if_exists(const std::string& path) { return path_exists(path) ? read_json_file(path) : Json(); }

void rewrite_json_file(const std::string& path, const Json& j) {
  std::error_code ec;
  fs::remove(path, ec);
  write_file(path, dump_json_pretty(j));
}

std::string special_token_text(const Json& config, std::string_view key) {
  if (!config.is_object()) return "";
  auto it = config.find(std::string(key));
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return "";
}

std::vector<int> token_id_list(const Json& v) {
  std::vector<int> out;
  if (v.is_number_integer()) out.push_back(v.get<int>());
  else if (v.is_array())
    for (const auto& x : v)
      if (x.is_number_integer()) out.push_back(x.get<int>());
  return out;
}

bool is_side_file_name(std::string_view name) {
  return !name.empty() && name[0] != '.' && !is_weight_file_name(name) && name != "README.md" &&
         name != "chatvec.json";
}

std::vector<std::string> side_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (is_side_file_name(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> copy_side_files(const std::string& from, const std::string& to) {
  const std::vector<std::string> names = side_files(from);
  for (const std::string& name : names) {
    const std::string dest = to + "/" + name;
    std::error_code ec;
    fs::remove(dest, ec);
    copy_file(from + "/" + name, dest);
  }
  return names;
}

ChatTemplateFiles read_chat_template_files(const std::string& dir) {
  ChatTemplateFiles t;
  const std::string jinja = dir + "/chat_template.jinja";
  if (path_exists(jinja)) t.jinja = read_file(jinja);
  const Json tc = read_json_if_exists(dir + "/tokenizer_config.json");
  if (tc.is_object() && tc.contains("chat_template") && !tc["chat_template"].is_null())
    t.tokenizer_config = tc["chat_template"];
  const Json tj = read_json_if_exists(dir + "/chat_template.json");
  if (tj.is_object() && tj.contains("chat_template") && !tj["chat_template"].is_null())
    t.template_json = tj["chat_template"];
  return t;
}

namespace {

// "chat_template" as a string or a list of {name, template}: the template
// named `wanted`.
std::string pick_template(const Json& value, const std::string& wanted, const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string names;
    for (const auto& entry : value) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string())
        throw InputError(where + ": chat_template list entries must be {\"name\": ..., \"template\": ...}");
      const std::string name = entry["name"].get<std::string>();
      if (name == wanted) return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + name;
    }
    throw InputError(where + ": no chat template named '" + wanted + "' (available: " + names + ")");
  }
  throw InputError(where + ": chat_template must be a string or a list of {name, template}");
}

}  // namespace

std::optional<FoundChatTemplate> find_chat_template(const std::string& dir, const std::string& name) {
  const std::string tc_path = dir + "/tokenizer_config.json";
  const Json tc = read_json_if_exists(tc_path);
  if (!tc.is_null() && !tc.is_object()) throw InputError(tc_path + ": expected a JSON object");
  const std::string jinja = dir + "/chat_template.jinja";
  if (name == "default" && path_exists(jinja)) return FoundChatTemplate{read_file(jinja), jinja};
  if (tc.is_object() && tc.contains("chat_template") && !tc["chat_template"].is_null())
    return FoundChatTemplate{pick_template(tc["chat_template"], name, tc_path), tc_path};
  const std::string tj_path = dir + "/chat_template.json";
  const Json tj = read_json_if_exists(tj_path);
  if (tj.is_object() && tj.contains("chat_template") && !tj["chat_template"].is_null())
    return FoundChatTemplate{pick_template(tj["chat_template"], name, tj_path), tj_path};
  return std::nullopt;
}

void replace_chat_template(const std::string& dir, const ChatTemplateFiles& files) {
  const std::string tc_path = dir + "/tokenizer_config.json";
  Json tc = read_json_if_exists(tc_path);
  if (tc.is_null()) tc = Json::object();
  if (!tc.is_object()) throw InputError(tc_path + ": not a JSON object");
  if (files.tokenizer_config) tc["chat_template"] = *files.tokenizer_config;
  else tc.erase("chat_template");
  rewrite_json_file(tc_path, tc);
  std::error_code ec;
  fs::remove(dir + "/chat_template.jinja", ec);
  fs::remove(dir + "/chat_template.json", ec);
  if (files.jinja) write_file(dir + "/chat_template.jinja", *files.jinja);
  if (files.template_json) rewrite_json_file(dir + "/chat_template.json", Json{{"chat_template", *files.template_json}});
}

}  // namespace chatvec

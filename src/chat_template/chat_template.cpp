#include "chat_template/chat_template.h"

#include "chat_template/jinja.h"
#include "core/file_util.h"

namespace chatvec {

ChatTemplate::ChatTemplate(std::string source, std::string name_for_errors)
    : tpl_(std::make_shared<const jinja::Template>(std::move(source), std::move(name_for_errors))) {}

std::string ChatTemplate::render(const Json& context) const {
  if (!context.is_object()) throw InputError("chat template " + tpl_->name() + ": the context must be a JSON object");
  return tpl_->render(context);
}

const std::string& ChatTemplate::source() const { return tpl_->source(); }
const std::string& ChatTemplate::name() const { return tpl_->name(); }

namespace {

std::string token_text(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return "";
}

// "chat_template" as a string or a list of {name, template}.
bool pick_template(const Json& value, const std::string& wanted, const std::string& where, std::string& out) {
  if (value.is_string()) {
    out = value.get<std::string>();
    return true;
  }
  if (value.is_array()) {
    std::string names;
    for (const auto& entry : value) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string())
        throw InputError(where + ": chat_template list entries must be {\"name\": ..., \"template\": ...}");
      std::string name = entry["name"].get<std::string>();
      if (name == wanted) {
        out = entry["template"].get<std::string>();
        return true;
      }
      names += (names.empty() ? "" : ", ") + name;
    }
    throw InputError(where + ": no chat template named '" + wanted + "' (available: " + names + ")");
  }
  if (value.is_null()) return false;
  throw InputError(where + ": chat_template must be a string or a list of {name, template}");
}

}  // namespace

ChatTemplate ChatTemplate::from_model_dir(const std::string& dir, const std::string& template_name) {
  const std::string config_path = dir + "/tokenizer_config.json";
  Json config = Json::object();
  if (path_exists(config_path)) config = read_json_file(config_path);
  if (!config.is_object()) throw InputError(config_path + ": expected a JSON object");

  std::string source, origin;
  const std::string jinja_path = dir + "/chat_template.jinja";
  if (template_name == "default" && path_exists(jinja_path)) {
    source = read_file(jinja_path);
    origin = jinja_path;
  } else if (config.contains("chat_template") && pick_template(config["chat_template"], template_name, config_path, source)) {
    origin = config_path;
  } else {
    const std::string json_path = dir + "/chat_template.json";
    bool found = false;
    if (path_exists(json_path)) {
      Json j = read_json_file(json_path);
      if (j.is_object() && j.contains("chat_template"))
        found = pick_template(j["chat_template"], template_name, json_path, source);
      origin = json_path;
    }
    if (!found)
      throw InputError(dir + ": no chat template (neither chat_template.jinja nor a \"chat_template\" in "
                             "tokenizer_config.json)");
  }
  ChatTemplate tpl(std::move(source), origin);
  tpl.set_special_tokens(token_text(config, "bos_token"), token_text(config, "eos_token"));
  return tpl;
}

std::string render_chat(const ChatTemplate& tpl, const Json& messages, bool add_generation_prompt,
                        const Json& extra_vars) {
  if (!messages.is_array()) throw InputError("chat template " + tpl.name() + ": messages must be a JSON array");
  if (!extra_vars.is_null() && !extra_vars.is_object())
    throw InputError("chat template " + tpl.name() + ": extra variables must be a JSON object");
  Json context = Json::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = tpl.bos_token();
  context["eos_token"] = tpl.eos_token();
  if (extra_vars.is_object())
    for (auto it = extra_vars.begin(); it != extra_vars.end(); ++it) context[it.key()] = it.value();
  return tpl.render(context);
}

}  // namespace chatvec

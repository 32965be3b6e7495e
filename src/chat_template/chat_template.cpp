#include "chat_template/chat_template.h"

#include "chat_template/jinja.h"
#include "core/file_util.h"
#include "formats/model_dir.h"

namespace chatvec {

ChatTemplate::ChatTemplate(std::string source, std::string name_for_errors)
    : tpl_(std::make_shared<const jinja::Template>(std::move(source), std::move(name_for_errors))) {}

std::string ChatTemplate::render(const Json& context) const {
  if (!context.is_object()) throw InputError("chat template " + tpl_->name() + ": the context must be a JSON object");
  return tpl_->render(context);
}

const std::string& ChatTemplate::source() const { return tpl_->source(); }
const std::string& ChatTemplate::name() const { return tpl_->name(); }

ChatTemplate ChatTemplate::from_model_dir(const std::string& dir, const std::string& template_name) {
  const std::optional<FoundChatTemplate> found = find_chat_template(dir, template_name);
  if (!found)
    throw InputError(dir + ": no chat template (neither chat_template.jinja nor a \"chat_template\" in "
                           "tokenizer_config.json)");
  ChatTemplate tpl(found->text, found->origin);
  const Json config = read_json_if_exists(dir + "/tokenizer_config.json");
  tpl.set_special_tokens(special_token_text(config, "bos_token"), special_token_text(config, "eos_token"));
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

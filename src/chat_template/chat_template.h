// A model's own chat template (Hugging Face `chat_template`, Jinja), parsed
// once and rendered for any conversation.
//
//   auto tpl = chatvec::ChatTemplate::from_model_dir("models/qwen3");
//   std::string prompt = chatvec::render_chat(tpl, messages, /*add_generation_prompt=*/true,
//                                             {{"enable_thinking", false}});
//
// Rendering follows transformers' apply_chat_template (Jinja2 with
// trim_blocks and lstrip_blocks, loop controls, raise_exception,
// strftime_now, tojson as json.dumps with ensure_ascii=False); the outputs
// are compared byte for byte with @huggingface/jinja in the tests.
#pragma once

#include <memory>
#include <string>

#include "chat_template/template_error.h"
#include "core/json_util.h"

namespace chatvec {

namespace jinja {
class Template;
}

class ChatTemplate {
 public:
  // Parses `source` (throws TemplateError on a syntax error or an unsupported
  // construct; `name_for_errors` is how messages name the template).
  ChatTemplate(std::string source, std::string name_for_errors);

  // The template of a model directory, by the one precedence rule of
  // find_chat_template() (formats/model_dir.h): chat_template.jinja, else
  // tokenizer_config.json's "chat_template" (a string, or a list of {"name",
  // "template"} from which `template_name` is taken), else
  // chat_template.json's.  bos_token / eos_token come from
  // tokenizer_config.json (string or {"content": ...}).  InputError when the
  // directory has no template.
  static ChatTemplate from_model_dir(const std::string& dir, const std::string& template_name = "default");

  // Renders with the variables of `context` (a JSON object).  Throws
  // TemplateError (a failure while rendering, with its line and column) or
  // TemplateRaisedError (the template's raise_exception).
  std::string render(const Json& context) const;

  const std::string& source() const;
  const std::string& name() const;
  // Special tokens read from the model directory (empty when unknown or when
  // the template was built from a string).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  void set_special_tokens(std::string bos, std::string eos) {
    bos_token_ = std::move(bos);
    eos_token_ = std::move(eos);
  }

 private:
  std::shared_ptr<const jinja::Template> tpl_;
  std::string bos_token_;
  std::string eos_token_;
};

// The prompt for `messages` (a JSON array of {"role", "content", ...}).
// The context is {messages, add_generation_prompt, bos_token, eos_token}
// plus every field of `extra_vars` (a JSON object, or null), which wins over
// the defaults (so a caller can pass its own bos_token, tools,
// enable_thinking, date_string...).
std::string render_chat(const ChatTemplate& tpl, const Json& messages, bool add_generation_prompt,
                        const Json& extra_vars = Json::object());

}  // namespace chatvec

// Chat templates: parse the input as a Jinja template and, when it parses,
// render it for a fixed conversation.
#include <cstdint>
#include <string>

#include "chat_template/chat_template.h"
#include "core/error.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const chatvec::Json messages = chatvec::Json::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi <b>there</b> \u00e9"},
    {"role": "assistant", "content": "Hello!", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "user", "content": [{"type": "text", "text": "x"}]}
  ])");
  try {
    chatvec::ChatTemplate tpl(std::string(chatvec::fuzz::as_text(data, size)), "fuzz");
    tpl.set_special_tokens("<s>", "</s>");
    (void)chatvec::render_chat(tpl, messages, true, chatvec::Json{{"tools", chatvec::Json::array()}});
  } catch (const chatvec::InputError&) {  // TemplateError and TemplateRaisedError too
  }
  return 0;
}

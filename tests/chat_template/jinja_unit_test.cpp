// Unit tests of the Jinja subset: one construct at a time, with the values
// Python's Jinja2 (as transformers configures it) produces, and every error.

#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "chat_template/chat_template.h"
#include "test_support.h"

namespace chatvec {
namespace {

std::string R(const std::string& tpl, const Json& ctx = Json::object()) {
  return ChatTemplate(tpl, "t").render(ctx);
}

// The message of the TemplateError that parsing or rendering throws.
std::string E(const std::string& tpl, const Json& ctx = Json::object()) {
  try {
    ChatTemplate(tpl, "t").render(ctx);
  } catch (const TemplateError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(JinjaLiterals, NumbersStringsAndConstants) {
  EXPECT_EQ(R("{{ 1 + 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}"), "3|3|-4|1|2|1024");
  EXPECT_EQ(R("{{ 1 / 2 }}|{{ 4 / 2 }}|{{ 1.5 + 1 }}|{{ 0.1 + 0.2 }}|{{ 1e-5 }}|{{ 1e16 }}"),
            "0.5|2.0|2.5|0.30000000000000004|1e-05|1e+16");
  EXPECT_EQ(R("{{ true }}|{{ False }}|{{ none }}|{{ undefined_thing }}|"), "True|False|None||");
  EXPECT_EQ(R(R"({{ 'a\nb\t\'c\' \"d\" \\ \x41\u00e9 \q' }})"), "a\nb\t'c' \"d\" \\ A\xc3\xa9 \\q");
  EXPECT_EQ(R(R"({{ "it's" "" ' joined' }})"), "it's joined");
  EXPECT_EQ(R("{{ [1, 'a', [true, none]] }}|{{ {'k': 'v', 'n': 1.0} }}"), "[1, 'a', [True, None]]|{'k': 'v', 'n': 1.0}");
  EXPECT_EQ(R("{{ 'x' ~ 1 ~ none ~ undefined_thing }}|{{ 'a' * 3 }}"), "x1None|aaa");
  EXPECT_EQ(R("{{ 1e400 }}|{{ -1e400 }}|{{ 'x' * -2 }}|{{ 10 ** -1 }}"), "inf|-inf||0.1");
}

TEST(JinjaWhitespace, TrimBlocksLstripBlocksAndDashes) {
  EXPECT_EQ(R("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");
  EXPECT_EQ(R("line\n    {% if true %}\n    x\n    {% endif %}\nend"), "line\n    x\nend");
  EXPECT_EQ(R("a   {{- 'b' -}}   c"), "abc");
  EXPECT_EQ(R("a\n  {%- if true -%}\n  b  \n  {%- endif -%}\n  c"), "abc");
  EXPECT_EQ(R("a {# comment #}\nb"), "a b");
  EXPECT_EQ(R("a\n  {#- c -#}\n  b"), "ab");
  EXPECT_EQ(R("{{ 'x' }}\n{{ 'y' }}\n"), "x\ny");  // a single trailing newline is dropped
  EXPECT_EQ(R("{% raw %}{{ not rendered }}{% endraw %}"), "{{ not rendered }}");
  EXPECT_EQ(R("{{ {'a': {'b': 1}} }}"), "{'a': {'b': 1}}");
}

TEST(JinjaControl, IfElifElseAndTernary) {
  const std::string t = "{% if x > 2 %}big{% elif x == 2 %}two{% else %}small{% endif %}";
  EXPECT_EQ(R(t, {{"x", 3}}), "big");
  EXPECT_EQ(R(t, {{"x", 2}}), "two");
  EXPECT_EQ(R(t, {{"x", 1}}), "small");
  EXPECT_EQ(R("{{ 'y' if x else 'n' }}{{ 'z' if false }}", {{"x", ""}}), "n");
  EXPECT_EQ(R("{{ 1 < x < 3 }}{{ not x in [1, 2] }}{{ x not in [1, 2] }}", {{"x", 2}}), "TrueFalseFalse");
  EXPECT_EQ(R("{{ x and 'a' }}|{{ x or 'b' }}|{{ [] or 'c' }}", {{"x", 0}}), "0|b|c");
}

TEST(JinjaControl, ForLoopVariablesFilterElseBreakContinue) {
  Json ctx = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(R("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
              "{{ loop.length }}{{ x }};{% endfor %}",
              ctx),
            "103TrueFalse3a;212FalseFalse3b;321FalseTrue3c;");
  EXPECT_EQ(R("{% for x in xs if x != 'b' %}{{ loop.index }}{{ x }}{% endfor %}", ctx), "1a2c");
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in xs %}{% if x == 'b' %}{% continue %}{% endif %}{% if x == 'c' %}{% break %}{% endif %}{{ x }}{% endfor %}", ctx), "a");
  EXPECT_EQ(R("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}), "a=1,b=2,");
  EXPECT_EQ(R("{% for k in d %}{{ k }}{% endfor %}", {{"d", {{"z", 1}, {"a", 2}}}}), "za");
  EXPECT_EQ(R("{% for c in 'h\xc3\xa9' %}[{{ c }}]{% endfor %}"), "[h][\xc3\xa9]");
  EXPECT_EQ(R("{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(5, 1, -2) %}{{ i }}{% endfor %}"), "01253");
  EXPECT_EQ(R("{% for x in xs %}{{ loop.cycle('o', 'e') }}{% endfor %}", ctx), "oeo");
}

TEST(JinjaControl, SetNamespaceBlockSetAndScopes) {
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a + b }}"), "3");
  EXPECT_EQ(R("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(R("{% set x = 1 %}{% for i in range(2) %}{% set x = 5 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(R("{% set body %}Hello {{ name }}{% endset %}[{{ body }}]", {{"name", "Bob"}}), "[Hello Bob]");
  EXPECT_EQ(R("{% set body | upper %}abc{% endset %}{{ body }}"), "ABC");
  EXPECT_EQ(R("{% filter upper %}abc{{ 'd' }}{% endfilter %}"), "ABCD");
  EXPECT_EQ(R("{% set messages = messages[1:] %}{{ messages | length }}", {{"messages", {1, 2, 3}}}), "2");
}

TEST(JinjaControl, Macros) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }}"),
            "Hi A! Hi B?");
  EXPECT_EQ(R("{% generation %}kept{% endgeneration %}"), "kept");
}

TEST(JinjaAccess, AttributesItemsSlices) {
  Json ctx = {{"m", {{"role", "user"}, {"content", "hi"}}}, {"xs", {1, 2, 3, 4, 5}}, {"s", "h\xc3\xa9llo"}};
  EXPECT_EQ(R("{{ m.role }}{{ m['content'] }}{{ m.missing }}{{ m.missing.deeper }}", ctx), "userhi");
  EXPECT_EQ(R("{{ xs[0] }}{{ xs[-1] }}{{ xs[1:3] }}{{ xs[::-1] }}{{ xs[:-2] }}{{ xs[::2] }}{{ xs[10] }}", ctx),
            "15[2, 3][5, 4, 3, 2, 1][1, 2, 3][1, 3, 5]");
  EXPECT_EQ(R("{{ s[1] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ s | length }}", ctx), "\xc3\xa9|\xc3\xa9l|oll\xc3\xa9h|5");
  EXPECT_EQ(R("{{ m.get('role') }}|{{ m.get('nope', 'dflt') }}|{{ m.get('nope') }}|{{ m.keys() | list }}", ctx),
            "user|dflt|None|['role', 'content']");
  EXPECT_EQ(R("{{ 'role' in m }}{{ 'x' in m }}{{ 'ell' in 'hello' }}{{ 2 in xs }}", ctx), "TrueFalseTrueTrue");
}

TEST(JinjaStrings, Methods) {
  EXPECT_EQ(R("[{{ '  a b  '.strip() }}][{{ '  a '.lstrip() }}][{{ ' a  '.rstrip() }}][{{ '\\n\\n x\\n'.strip('\\n') }}]"),
            "[a b][a ][ a][ x]");
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}"),
            "['a', 'b', '', 'c']['a', 'b']['a', 'b c']");
  EXPECT_EQ(R("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abc'.upper() }}{{ 'ABC'.lower() }}"),
            "TrueTrueABCabc");
  EXPECT_EQ(R("{{ 'hello wORLD'.title() }}|{{ 'hello wORLD'.capitalize() }}|{{ 'aaa'.replace('a', 'b', 2) }}"),
            "Hello World|Hello world|bba");
  EXPECT_EQ(R("{{ ', '.join(['a', 'b']) }}|{{ 'x</think>y'.split('</think>')[-1] }}"), "a, b|y");
}

TEST(JinjaFilters, Common) {
  Json ctx = {{"xs", {"b", "a", "C"}}, {"ms", {{{"role", "user"}, {"n", 1}}, {{"role", "system"}, {"n", 2}}, {{"role", "user"}, {"n", 3}}}}};
  EXPECT_EQ(R("[{{ '  x  ' | trim }}]{{ 'ab' | upper }}{{ 'AB' | lower }}{{ 'ab cd' | title }}{{ 'aB' | capitalize }}"),
            "[x]ABabAb CdAb");
  EXPECT_EQ(R("{{ xs | length }}{{ xs | first }}{{ xs | last }}{{ xs | join('-') }}{{ xs | sort }}{{ xs | reverse | list }}", ctx),
            "3bCb-a-C['a', 'b', 'C']['C', 'a', 'b']");
  EXPECT_EQ(R("{{ nope | default('d') }}{{ '' | default('e') }}{{ '' | default('f', true) }}"), "df");
  EXPECT_EQ(R("{{ '42' | int + 1 }}{{ 'x' | int }}{{ 3.7 | int }}{{ '2.5' | float }}{{ 2.567 | round(2) }}{{ 2.5 | round }}"),
            "43032.52.573.0");
  EXPECT_EQ(R("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='n') | list }}", ctx), "[1, 3]");
  EXPECT_EQ(R("{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}", ctx), "1");
  EXPECT_EQ(R("{{ [1, 2, 3, 4] | select('odd') | list }}{{ ['a', 'b'] | reject('equalto', 'a') | list }}"), "[1, 3]['b']");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2} | items | list }}{{ {'b': 1, 'a': 2} | dictsort }}"), "[['b', 1], ['a', 2]][['a', 2], ['b', 1]]");
  EXPECT_EQ(R("{{ 'aXbX' | replace('X', '-') }}{{ 5 | string }}{{ [1, 1, 2] | unique | list }}{{ -3 | abs }}"), "a-b-5[1, 2]3");
  EXPECT_EQ(R("{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"), "a\n  b|  a\n  b");
  EXPECT_EQ(R("{{ ['a', 'b'] | map('upper') | join }}{{ [3, 1, 2] | max }}{{ [3, 1, 2] | min }}{{ [1, 2] | sum }}"), "AB313");
}

TEST(JinjaFilters, ToJsonMatchesPythonJsonDumps) {
  Json ctx = Json::parse(R"({"v": {"s": "q\"b\\n\n\u00e9\u0001", "i": 1, "f": 1.5, "g": 2.0, "b": true, "n": null, "l": [1, [], {}]}})");
  EXPECT_EQ(R("{{ v | tojson }}", ctx),
            R"({"s": "q\"b\\n\n)"
            "\xc3\xa9"
            R"(\u0001", "i": 1, "f": 1.5, "g": 2.0, "b": true, "n": null, "l": [1, [], {}]})");
  EXPECT_EQ(R("{{ {'a': [1, 2], 'b': {}} | tojson(indent=2) }}"), "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}");
  EXPECT_EQ(R("{{ {'b': 1, 'a': '\u00e9'} | tojson(sort_keys=true, ensure_ascii=true) }}"), R"({"a": "\u00e9", "b": 1})");
  EXPECT_EQ(R("{{ {'a': 1, 'b': 2} | tojson(separators=(',', ':')) }}"), R"({"a":1,"b":2})");
  EXPECT_EQ(R("{{ '\xf0\x9f\x98\x80' | tojson(ensure_ascii=true) }}"), R"("\ud83d\ude00")");
}

TEST(JinjaTests, IsTests) {
  Json ctx = {{"s", "x"}, {"n", nullptr}, {"i", 3}, {"f", 1.5}, {"d", Json::object()}, {"l", Json::array()}, {"b", false}};
  EXPECT_EQ(R("{{ s is defined }}{{ zz is defined }}{{ zz is undefined }}{{ n is none }}{{ s is not none }}", ctx),
            "TrueFalseTrueTrueTrue");
  EXPECT_EQ(R("{{ s is string }}{{ i is number }}{{ f is number }}{{ i is integer }}{{ f is float }}{{ d is mapping }}{{ l is mapping }}", ctx),
            "TrueTrueTrueTrueTrueTrueFalse");
  EXPECT_EQ(R("{{ s is iterable }}{{ l is iterable }}{{ i is iterable }}{{ b is false }}{{ b is true }}{{ b is boolean }}", ctx),
            "TrueTrueFalseTrueFalseTrue");
  EXPECT_EQ(R("{{ i is odd }}{{ i is even }}{{ i is divisibleby 3 }}{{ i is equalto 3 }}{{ i is eq(4) }}{{ s is in ['x'] }}", ctx),
            "TrueFalseTrueTrueFalseTrue");
}

TEST(JinjaGlobals, RaiseExceptionAndStrftime) {
  try {
    R("{% if true %}\n  {{ raise_exception('Roles must alternate') }}{% endif %}");
    FAIL() << "no exception";
  } catch (const TemplateRaisedError& e) {
    EXPECT_EQ(e.message(), "Roles must alternate");
    EXPECT_EQ(e.line(), 2);
    EXPECT_EQ(std::string(e.what()), "chat template t: line 2, column 6: raise_exception: Roles must alternate");
    EXPECT_EQ(e.exit_code(), 2);
  }
  std::string date = R("{{ strftime_now('%d %b %Y') }}");
  EXPECT_TRUE(std::regex_match(date, std::regex("[0-9]{2} [A-Z][a-z]{2} [0-9]{4}"))) << date;
}

TEST(JinjaErrors, SyntaxAndUnsupportedConstructsNameTheLineAndColumn) {
  EXPECT_EQ(E("{% include 'x.jinja' %}"), "chat template t: line 1, column 4: unsupported statement 'include'");
  EXPECT_EQ(E("a\n{% extends 'base' %}"), "chat template t: line 2, column 4: unsupported statement 'extends'");
  EXPECT_EQ(E("{% call foo() %}{% endcall %}"), "chat template t: line 1, column 4: unsupported statement 'call'");
  EXPECT_EQ(E("{% frobnicate %}"), "chat template t: line 1, column 4: unknown statement 'frobnicate'");
  EXPECT_EQ(E("{{ x | frob }}"), "chat template t: line 1, column 8: unsupported filter 'frob'");
  EXPECT_EQ(E("{{ x is frob }}"), "chat template t: line 1, column 9: unsupported test 'frob'");
  EXPECT_EQ(E("{% for x in y recursive %}{% endfor %}"), "chat template t: line 1, column 15: unsupported construct 'recursive' loop");
  EXPECT_EQ(E("{{ f(*args) }}"), "chat template t: line 1, column 6: unsupported construct: argument unpacking with '*'");
  EXPECT_EQ(E("{% if x %}no end"), "chat template t: line 1, column 17: unexpected end of template: expected 'elif' or 'else' or 'endif'");
  EXPECT_EQ(E("{% endif %}"), "chat template t: line 1, column 4: unexpected 'endif' without a matching opening statement");
  EXPECT_EQ(E("{{ 'abc }}"), "chat template t: line 1, column 4: unterminated string literal");
  EXPECT_EQ(E("{{ x"), "chat template t: line 1, column 1: unclosed tag: missing '}}'");
  EXPECT_EQ(E("{# never closed"), "chat template t: line 1, column 1: unclosed comment: missing '#}'");
  EXPECT_EQ(E("{{ 1 + }}"), "chat template t: line 1, column 8: unexpected '}}' where a value was expected");
  EXPECT_EQ(E("{{ a b }}"), "chat template t: line 1, column 6: expected '}}' to close the expression, found 'b'");
  EXPECT_EQ(E("{{ x $ y }}"), "chat template t: line 1, column 6: unexpected character '$'");
}

TEST(JinjaErrors, RenderErrorsNameTheLineAndColumn) {
  EXPECT_EQ(E("{{ 'a' + none }}"), "chat template t: line 1, column 8: unsupported operand types for +: 'str' and 'NoneType'");
  EXPECT_EQ(E("\n{{ 1 // 0 }}"), "chat template t: line 2, column 6: integer division or modulo by zero");
  EXPECT_EQ(E("{{ nofunc(1) }}"), "chat template t: line 1, column 4: unknown function 'nofunc'");
  EXPECT_EQ(E("{{ 'x'.format(1) }}"), "chat template t: line 1, column 7: unsupported string method 'format'");
  EXPECT_EQ(E("{% set x = 1 %}{% set x.y = 2 %}"),
            "chat template t: line 1, column 19: cannot assign attribute 'y' on 'x': not a namespace()");
  EXPECT_EQ(E("{% for x in 5 %}{% endfor %}"), "chat template t: line 1, column 13: 'int' object is not iterable");
  EXPECT_EQ(E("{{ 1 < 'a' }}"), "chat template t: line 1, column 8: '<' not supported between instances of 'int' and 'str'");
  EXPECT_EQ(E("{{ x + 1 }}"), "chat template t: line 1, column 6: cannot apply '+' to an undefined value");
  EXPECT_EQ(E("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "chat template t: line 1, column 4: macro 'f' recursion too deep");
  EXPECT_EQ(E("{{ 2 ** 100 }}"), "chat template t: line 1, column 6: integer result of '**' too large");
  EXPECT_EQ(E("{{ 'ab' * 100000000 }}"), "chat template t: line 1, column 9: string repetition result too large");
  // The total output, and strings built by '+', '~' and join(), are bounded
  // (16 MB): a loop of large outputs used to render without end.
  EXPECT_EQ(E("{{ 'x' * 20000000 }}"), "chat template t: line 1, column 8: string repetition result too large");
  EXPECT_EQ(E("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"),
            "chat template t: line 1, column 29: rendered output larger than 16 MB (the limit)");
  EXPECT_EQ(E("{% set ns = namespace(s='x' * 10000000) %}{% for i in range(2) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"),
            "chat template t: line 1, column 85: string result of '+' larger than 16 MB (the limit)");
}

TEST(ChatTemplateApi, RenderChatAddsMessagesAndSpecialTokens) {
  ChatTemplate tpl("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                   "{% if add_generation_prompt %}<assistant>{% endif %}{{ extra }}",
                   "inline");
  tpl.set_special_tokens("<s>", "</s>");
  Json msgs = Json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(render_chat(tpl, msgs, true, {{"extra", "!"}}), "<s><user>hi<assistant>!");
  EXPECT_EQ(render_chat(tpl, msgs, false, {{"bos_token", "[B]"}}), "[B]<user>hi");
  EXPECT_THROW(render_chat(tpl, Json::object(), true), InputError);
}

TEST(ChatTemplateApi, FromModelDirFindsTheTemplate) {
  chatvec::testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; };
  EXPECT_THROW(ChatTemplate::from_model_dir(dir.path().string()), InputError);

  write("tokenizer_config.json",
        R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "chat_template": "A{{ bos_token }}"})");
  ChatTemplate a = ChatTemplate::from_model_dir(dir.path().string());
  EXPECT_EQ(a.bos_token(), "<s>");
  EXPECT_EQ(a.eos_token(), "</s>");
  EXPECT_EQ(render_chat(a, Json::array(), false), "A<s>");

  write("tokenizer_config.json",
        R"({"eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.path().string()).render(Json::object()), "D");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.path().string(), "tool_use").render(Json::object()), "T");
  EXPECT_THROW(ChatTemplate::from_model_dir(dir.path().string(), "nope"), InputError);

  write("chat_template.jinja", "J{{ eos_token }}\n");
  ChatTemplate j = ChatTemplate::from_model_dir(dir.path().string());
  EXPECT_EQ(render_chat(j, Json::array(), false), "J</s>");
}

TEST(ChatTemplateApi, ParseOnceRenderMany) {
  ChatTemplate tpl("{% for m in messages %}{{ m.content }}{% endfor %}", "t");
  for (int k = 0; k < 3; ++k) {
    Json msgs = Json::array({{{"role", "user"}, {"content", std::to_string(k)}}});
    EXPECT_EQ(render_chat(tpl, msgs, false), std::to_string(k));
  }
}

}  // namespace
}  // namespace chatvec

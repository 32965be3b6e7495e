// Interpreter of the Jinja subset.

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>
#include <set>
#include <unordered_map>

#include "chat_template/jinja_ast.h"

namespace chatvec::jinja {

namespace {

// The most a template may produce: the total rendered output (and every
// block rendered into a string: macros, {% set %} blocks, filter blocks), and
// every string built by repetition or concatenation.  Real chat templates
// render a few kilobytes; 16 MB keeps hostile ones fast and small.
constexpr size_t kMaxRenderBytes = 16u << 20;

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;

  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { Normal, Break, Continue };

// Thrown by raise_exception; converted to TemplateRaisedError with the position.
struct Raised {
  std::string message;
};

class Interpreter {
 public:
  Interpreter(const std::string& source, const std::string& name) : source_(source), name_(name) {}

  [[noreturn]] void fail(const Node& n, const std::string& detail) const {
    auto [line, col] = line_column(source_, n.offset);
    throw TemplateError(name_, line, col, detail);
  }

  Flow exec_block(const std::vector<NodePtr>& body, const ScopePtr& scope, std::string& out) {
    for (const auto& n : body) {
      Flow f = exec(*n, scope, out);
      if (out.size() > kMaxRenderBytes) fail(*n, "rendered output larger than 16 MB (the limit)");
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, const ScopePtr& scope, std::string& out) {
    switch (n.type) {
      case NodeType::Text: out += n.literal.s; return Flow::Normal;
      case NodeType::Output: out += to_output_string(eval(*n.a, scope)); return Flow::Normal;
      case NodeType::If: {
        for (size_t k = 0; k < n.items.size(); ++k)
          if (eval(*n.items[k], scope).truthy()) return exec_block(n.branches[k], scope, out);
        return exec_block(n.else_body, scope, out);
      }
      case NodeType::For: return exec_for(n, scope, out);
      case NodeType::Set: {
        Value v = eval(*n.a, scope);
        if (!n.name.empty()) {
          const Value* ns = scope->lookup(n.targets[0]);
          if (!ns || ns->kind != Kind::Namespace)
            fail(n, "cannot assign attribute '" + n.name + "' on '" + n.targets[0] + "': not a namespace()");
          ns->obj->set(n.name, std::move(v));
        } else {
          assign(n, n.targets, v, *scope);
        }
        return Flow::Normal;
      }
      case NodeType::SetBlock: {
        std::string body;
        exec_block(n.body, scope, body);
        Value v = Value::string(std::move(body));
        if (n.a) v = apply_filter_chain(*n.a, v, scope);
        scope->vars[n.targets[0]] = v;
        return Flow::Normal;
      }
      case NodeType::Macro: {
        scope->vars[n.name] = make_macro(n, scope);
        return Flow::Normal;
      }
      case NodeType::FilterBlock: {
        std::string body;
        exec_block(n.body, scope, body);
        out += to_output_string(apply_filter_chain(*n.a, Value::string(std::move(body)), scope));
        return Flow::Normal;
      }
      case NodeType::Scope: return exec_block(n.body, scope, out);
      case NodeType::Break: return Flow::Break;
      case NodeType::Continue: return Flow::Continue;
      default: fail(n, "internal error: expression used as a statement");
    }
  }

  void assign(const Node& n, const std::vector<std::string>& targets, const Value& v, Scope& scope) {
    if (targets.size() == 1) {
      scope.vars[targets[0]] = v;
      return;
    }
    std::vector<Value> items = iterate(n, v);
    if (items.size() != targets.size())
      fail(n, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) +
                  " names");
    for (size_t k = 0; k < targets.size(); ++k) scope.vars[targets[k]] = items[k];
  }

  // Items of an iterable: a list, a dict's keys, a string's characters.
  std::vector<Value> iterate(const Node& n, const Value& v) {
    switch (v.kind) {
      case Kind::Array: return *v.arr;
      case Kind::Object: {
        std::vector<Value> keys;
        for (const auto& k : v.obj->keys()) keys.push_back(Value::string(k));
        return keys;
      }
      case Kind::String: {
        std::vector<Value> chars;
        for (char32_t c : utf8_decode(v.s)) {
          std::string s;
          utf8_append(s, c);
          chars.push_back(Value::string(s));
        }
        return chars;
      }
      case Kind::Undefined: return {};
      default: fail(n, "'" + type_name(v) + "' object is not iterable");
    }
  }

  Flow exec_for(const Node& n, const ScopePtr& scope, std::string& out) {
    Value iterable = eval(*n.a, scope);
    std::vector<Value> all = iterate(*n.a, iterable);
    auto loop_scope = std::make_shared<Scope>();
    loop_scope->parent = scope;
    std::vector<Value> items;
    if (n.b) {
      for (const auto& item : all) {
        assign(n, n.targets, item, *loop_scope);
        if (eval(*n.b, loop_scope).truthy()) items.push_back(item);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) return exec_block(n.else_body, scope, out);
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      Value loop = Value::object();
      loop.obj->set("index", Value::integer(k + 1));
      loop.obj->set("index0", Value::integer(k));
      loop.obj->set("revindex", Value::integer(len - k));
      loop.obj->set("revindex0", Value::integer(len - k - 1));
      loop.obj->set("first", Value::boolean(k == 0));
      loop.obj->set("last", Value::boolean(k == len - 1));
      loop.obj->set("length", Value::integer(len));
      loop.obj->set("depth", Value::integer(1));
      loop.obj->set("depth0", Value::integer(0));
      loop.obj->set("previtem", k > 0 ? items[k - 1] : Value::undefined());
      loop.obj->set("nextitem", k + 1 < len ? items[k + 1] : Value::undefined());
      loop.obj->set("cycle", Value::function("loop.cycle", [k](CallArgs& args) {
        if (args.positional.empty()) return Value::undefined();
        return args.positional[k % args.positional.size()];
      }));
      loop_scope->vars["loop"] = loop;
      assign(n, n.targets, items[k], *loop_scope);
      Flow f = exec_block(n.body, loop_scope, out);
      if (f == Flow::Break) break;
    }
    return Flow::Normal;
  }

  Value make_macro(const Node& n, const ScopePtr& def_scope) {
    const Node* node = &n;
    std::weak_ptr<Scope> weak = def_scope;
    return Value::function(n.name, [this, node, weak](CallArgs& args) {
      if (macro_depth_ >= 200) fail(*node, "macro '" + node->name + "' recursion too deep");
      struct DepthGuard {
        int& d;
        explicit DepthGuard(int& x) : d(x) { ++d; }
        ~DepthGuard() { --d; }
      } guard(macro_depth_);
      auto scope = std::make_shared<Scope>();
      scope->parent = weak.lock();
      const auto& params = node->kwargs;
      if (args.positional.size() > params.size())
        fail(*node, "macro '" + node->name + "' takes not more than " + std::to_string(params.size()) +
                        " argument(s)");
      for (const auto& [k, v] : args.keyword) {
        const auto& key = k;  // clang < 16 cannot capture a structured binding
        bool known = std::any_of(params.begin(), params.end(), [&](const auto& p) { return p.first == key; });
        if (!known) fail(*node, "macro '" + node->name + "' takes no keyword argument '" + k + "'");
      }
      for (size_t k = 0; k < params.size(); ++k) {
        Value v;
        if (k < args.positional.size()) v = args.positional[k];
        else if (const Value* kw = args.keyword_value(params[k].first)) v = *kw;
        else if (params[k].second) v = eval(*params[k].second, scope);
        scope->vars[params[k].first] = v;
      }
      std::string out;
      exec_block(node->body, scope, out);
      return Value::string(std::move(out));
    });
  }

  // ---------------------------------------------------------------- expressions

  Value eval(const Node& n, const ScopePtr& scope) {
    switch (n.type) {
      case NodeType::Literal: return n.literal;
      case NodeType::Name: {
        if (const Value* v = scope->lookup(n.name)) return *v;
        return global(n.name);
      }
      case NodeType::List:
      case NodeType::Tuple: {
        std::vector<Value> items;
        for (const auto& e : n.items) items.push_back(eval(*e, scope));
        return Value::array(std::move(items));
      }
      case NodeType::Dict: {
        Value d = Value::object();
        for (size_t k = 0; k + 1 < n.items.size(); k += 2) {
          Value key = eval(*n.items[k], scope);
          if (!key.is_string()) fail(*n.items[k], "dict keys must be strings, got '" + type_name(key) + "'");
          d.obj->set(key.s, eval(*n.items[k + 1], scope));
        }
        return d;
      }
      case NodeType::GetAttr: return get_attr(eval(*n.a, scope), n.name);
      case NodeType::GetItem: return get_item(n, eval(*n.a, scope), eval(*n.b, scope));
      case NodeType::Slice: return slice(n, eval(*n.a, scope), scope);
      case NodeType::Call: return call(n, scope);
      case NodeType::Filter: return apply_filter(n, eval(*n.a, scope), scope);
      case NodeType::Test: {
        bool r = apply_test(n, eval(*n.a, scope), scope);
        return Value::boolean(n.negate ? !r : r);
      }
      case NodeType::Unary: {
        Value v = eval(*n.a, scope);
        if (v.kind == Kind::Bool) v = Value::integer(v.b);
        if (v.kind == Kind::Int && n.name == "-" && v.i == INT64_MIN) fail(n, "integer result of unary - too large");
        if (v.kind == Kind::Int) return Value::integer(n.name == "-" ? -v.i : v.i);
        if (v.kind == Kind::Float) return Value::floating(n.name == "-" ? -v.f : v.f);
        fail(n, "bad operand type for unary " + n.name + ": '" + type_name(v) + "'");
      }
      case NodeType::Not: return Value::boolean(!eval(*n.a, scope).truthy());
      case NodeType::And: {
        Value l = eval(*n.a, scope);
        return l.truthy() ? eval(*n.b, scope) : l;
      }
      case NodeType::Or: {
        Value l = eval(*n.a, scope);
        return l.truthy() ? l : eval(*n.b, scope);
      }
      case NodeType::CondExpr: {
        if (eval(*n.b, scope).truthy()) return eval(*n.a, scope);
        return n.c ? eval(*n.c, scope) : Value::undefined();
      }
      case NodeType::Binary: return binary(n, eval(*n.a, scope), eval(*n.b, scope));
      case NodeType::Compare: {
        Value left = eval(*n.items[0], scope);
        for (size_t k = 0; k < n.ops.size(); ++k) {
          Value right = eval(*n.items[k + 1], scope);
          if (!compare(*n.items[k + 1], n.ops[k], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      default: fail(n, "internal error: statement used as an expression");
    }
  }

  Value global(const std::string& name) {
    if (name == "raise_exception")
      return Value::function(name, [](CallArgs& args) -> Value {
        Value m = args.get(0, "message");
        throw Raised{to_output_string(m)};
      });
    if (name == "namespace")
      return Value::function(name, [](CallArgs& args) {
        Value ns = Value::namespace_();
        for (const auto& p : args.positional)
          if (p.is_mapping_like())
            for (const auto& k : p.obj->keys()) ns.obj->set(k, p.obj->at(k));
        for (const auto& [k, v] : args.keyword) ns.obj->set(k, v);
        return ns;
      });
    if (name == "dict")
      return Value::function(name, [](CallArgs& args) {
        Value d = Value::object();
        for (const auto& p : args.positional)
          if (p.is_mapping_like())
            for (const auto& k : p.obj->keys()) d.obj->set(k, p.obj->at(k));
        for (const auto& [k, v] : args.keyword) d.obj->set(k, v);
        return d;
      });
    if (name == "range")
      return Value::function(name, [](CallArgs& args) {
        int64_t start = 0, stop = 0, step = 1;
        auto num = [](const Value& v) { return v.kind == Kind::Int ? v.i : v.kind == Kind::Bool ? int64_t(v.b) : int64_t(v.f); };
        if (args.positional.size() == 1) stop = num(args.positional[0]);
        else if (args.positional.size() >= 2) {
          start = num(args.positional[0]);
          stop = num(args.positional[1]);
          if (args.positional.size() >= 3) step = num(args.positional[2]);
        }
        if (step == 0) throw std::runtime_error("range() arg 3 must not be zero");
        std::vector<Value> out;
        for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step) {
          out.push_back(Value::integer(x));
          if (out.size() > 10'000'000) throw std::runtime_error("range() too large");
        }
        return Value::array(std::move(out));
      });
    if (name == "strftime_now")
      return Value::function(name, [](CallArgs& args) {
        Value fmt = args.get(0, "format");
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = std::strftime(buf, sizeof buf, fmt.s.c_str(), &tm);
        return Value::string(std::string(buf, n));
      });
    return Value::undefined();
  }

  Value get_attr(const Value& obj, const std::string& name) {
    if (obj.is_mapping_like()) {
      if (const Value* v = obj.obj->find(name)) return *v;
    }
    return Value::undefined();
  }

  static int64_t norm_index(int64_t idx, int64_t len) { return idx < 0 ? idx + len : idx; }

  Value get_item(const Node& n, const Value& obj, const Value& key) {
    switch (obj.kind) {
      case Kind::Object:
      case Kind::Namespace:
        if (key.is_string()) {
          if (const Value* v = obj.obj->find(key.s)) return *v;
        }
        return Value::undefined();
      case Kind::Array: {
        if (key.kind != Kind::Int && key.kind != Kind::Bool) {
          if (key.is_string()) return Value::undefined();
          fail(n, "list indices must be integers, not '" + type_name(key) + "'");
        }
        int64_t len = static_cast<int64_t>(obj.arr->size());
        int64_t idx = norm_index(key.kind == Kind::Bool ? key.b : key.i, len);
        if (idx < 0 || idx >= len) return Value::undefined();
        return (*obj.arr)[idx];
      }
      case Kind::String: {
        if (key.kind != Kind::Int) return Value::undefined();
        auto cps = utf8_decode(obj.s);
        int64_t len = static_cast<int64_t>(cps.size());
        int64_t idx = norm_index(key.i, len);
        if (idx < 0 || idx >= len) return Value::undefined();
        std::string s;
        utf8_append(s, cps[idx]);
        return Value::string(s);
      }
      default: return Value::undefined();
    }
  }

  template <typename T>
  std::vector<T> slice_vec(const Node& n, const std::vector<T>& v, const Value& a, const Value& b, const Value& c) {
    auto opt = [&](const Value& x, const char* what) -> std::optional<int64_t> {
      if (x.is_undefined() || x.is_none()) return std::nullopt;
      if (x.kind == Kind::Int) return x.i;
      if (x.kind == Kind::Bool) return int64_t(x.b);
      fail(n, std::string("slice ") + what + " must be an integer or None, got '" + type_name(x) + "'");
    };
    const int64_t len = static_cast<int64_t>(v.size());
    int64_t step = opt(c, "step").value_or(1);
    if (step == 0) fail(n, "slice step cannot be zero");
    std::optional<int64_t> start = opt(a, "start"), stop = opt(b, "stop");
    int64_t lo, hi;
    if (step > 0) {
      lo = start ? (*start < 0 ? std::max<int64_t>(*start + len, 0) : std::min(*start, len)) : 0;
      hi = stop ? (*stop < 0 ? std::max<int64_t>(*stop + len, 0) : std::min(*stop, len)) : len;
    } else {
      lo = start ? (*start < 0 ? std::max<int64_t>(*start + len, -1) : std::min(*start, len - 1)) : len - 1;
      hi = stop ? (*stop < 0 ? std::max<int64_t>(*stop + len, -1) : std::min(*stop, len - 1)) : -1;
    }
    std::vector<T> out;
    for (int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) out.push_back(v[k]);
    return out;
  }

  Value slice(const Node& n, const Value& obj, const ScopePtr& scope) {
    Value a = n.items[0] ? eval(*n.items[0], scope) : Value();
    Value b = n.items[1] ? eval(*n.items[1], scope) : Value();
    Value c = n.items[2] ? eval(*n.items[2], scope) : Value();
    if (obj.is_array()) return Value::array(slice_vec(n, *obj.arr, a, b, c));
    if (obj.is_string()) return Value::string(utf8_encode(slice_vec(n, utf8_decode(obj.s), a, b, c)));
    if (obj.is_undefined()) return Value::undefined();
    fail(n, "cannot slice a '" + type_name(obj) + "'");
  }

  CallArgs eval_args(const Node& n, const ScopePtr& scope) {
    CallArgs args;
    for (const auto& e : n.items) args.positional.push_back(eval(*e, scope));
    for (const auto& [k, e] : n.kwargs) args.keyword.emplace_back(k, eval(*e, scope));
    return args;
  }

  Value call(const Node& n, const ScopePtr& scope) {
    if (n.a->type == NodeType::GetAttr) {
      Value obj = eval(*n.a->a, scope);
      const std::string& method = n.a->name;
      Value attr = get_attr(obj, method);
      if (attr.kind != Kind::Function) {
        CallArgs args = eval_args(n, scope);
        return call_method(n, obj, method, args);
      }
    }
    Value fn = eval(*n.a, scope);
    if (fn.kind != Kind::Function) {
      std::string what = n.a->type == NodeType::Name ? "'" + n.a->name + "'" : "a '" + type_name(fn) + "' value";
      if (fn.is_undefined() && n.a->type == NodeType::Name) fail(n, "unknown function " + what);
      fail(n, what + " is not callable");
    }
    CallArgs args = eval_args(n, scope);
    try {
      return (*fn.fn)(args);
    } catch (const Raised& r) {
      auto [line, col] = line_column(source_, n.offset);
      throw TemplateRaisedError(name_, line, col, r.message);
    } catch (const TemplateError&) {
      throw;
    } catch (const std::runtime_error& e) {
      fail(n, e.what());
    }
  }

  // ---------------------------------------------------------------- methods

  static std::vector<char32_t> strip_set(const CallArgs& args) {
    Value chars = args.get(0, "chars");
    if (chars.is_string()) return utf8_decode(chars.s);
    return {};
  }

  static std::string strip(const std::string& s, const CallArgs& args, bool left, bool right) {
    Value chars = args.get(0, "chars");
    bool custom = chars.is_string();
    std::vector<char32_t> set = strip_set(args);
    auto in_set = [&](char32_t c) {
      return custom ? std::find(set.begin(), set.end(), c) != set.end() : is_unicode_space(c);
    };
    auto cps = utf8_decode(s);
    size_t b = 0, e = cps.size();
    if (left)
      while (b < e && in_set(cps[b])) ++b;
    if (right)
      while (e > b && in_set(cps[e - 1])) --e;
    return utf8_encode(std::vector<char32_t>(cps.begin() + b, cps.begin() + e));
  }

  static char32_t upper_c(char32_t c) { return (c >= 'a' && c <= 'z') ? c - 32 : c; }
  static char32_t lower_c(char32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
  static bool is_alpha_c(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }

  static std::string map_chars(const std::string& s, char32_t (*f)(char32_t)) {
    auto cps = utf8_decode(s);
    for (auto& c : cps) c = f(c);
    return utf8_encode(cps);
  }

  // Python str.title().
  static std::string py_title(const std::string& s) {
    auto cps = utf8_decode(s);
    bool prev_cased = false;
    for (auto& c : cps) {
      bool cased = is_alpha_c(c);
      c = cased ? (prev_cased ? lower_c(c) : upper_c(c)) : c;
      prev_cased = cased;
    }
    return utf8_encode(cps);
  }

  static std::string py_capitalize(const std::string& s) {
    auto cps = utf8_decode(s);
    for (size_t k = 0; k < cps.size(); ++k) cps[k] = k == 0 ? upper_c(cps[k]) : lower_c(cps[k]);
    return utf8_encode(cps);
  }

  static std::vector<std::string> py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
    std::vector<std::string> out;
    if (!sep.is_string()) {
      auto cps = utf8_decode(s);
      size_t k = 0;
      while (true) {
        while (k < cps.size() && is_unicode_space(cps[k])) ++k;
        if (k >= cps.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
          size_t e = cps.size();
          while (e > k && is_unicode_space(cps[e - 1])) --e;
          out.push_back(utf8_encode(std::vector<char32_t>(cps.begin() + k, cps.begin() + e)));
          break;
        }
        size_t b = k;
        while (k < cps.size() && !is_unicode_space(cps[k])) ++k;
        out.push_back(utf8_encode(std::vector<char32_t>(cps.begin() + b, cps.begin() + k)));
      }
      return out;
    }
    size_t pos = 0;
    while (true) {
      size_t f = s.find(sep.s, pos);
      if (f == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit)) {
        out.push_back(s.substr(pos));
        return out;
      }
      out.push_back(s.substr(pos, f - pos));
      pos = f + sep.s.size();
    }
  }

  static std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
    std::string out;
    if (from.empty()) {
      // Python inserts `to` between every character (and at both ends).
      auto cps = utf8_decode(s);
      int64_t done = 0;
      for (size_t k = 0; k <= cps.size(); ++k) {
        if (count < 0 || done < count) {
          out += to;
          ++done;
        }
        if (k < cps.size()) utf8_append(out, cps[k]);
      }
      return out;
    }
    size_t pos = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
      size_t f = s.find(from, pos);
      if (f == std::string::npos) break;
      out.append(s, pos, f - pos);
      out += to;
      pos = f + from.size();
      ++done;
    }
    out.append(s, pos, std::string::npos);
    return out;
  }

  Value str_arg(const Node& n, const CallArgs& args, size_t i, const std::string& name, const std::string& method) {
    Value v = args.get(i, name);
    if (!v.is_string()) fail(n, method + "() argument '" + name + "' must be a string, got '" + type_name(v) + "'");
    return v;
  }

  Value call_method(const Node& n, const Value& obj, const std::string& m, CallArgs& args) {
    if (obj.is_string()) {
      const std::string& s = obj.s;
      if (m == "strip") return Value::string(strip(s, args, true, true));
      if (m == "lstrip") return Value::string(strip(s, args, true, false));
      if (m == "rstrip") return Value::string(strip(s, args, false, true));
      if (m == "upper") return Value::string(map_chars(s, upper_c));
      if (m == "lower") return Value::string(map_chars(s, lower_c));
      if (m == "title") return Value::string(py_title(s));
      if (m == "capitalize") return Value::string(py_capitalize(s));
      if (m == "split" || m == "rsplit") {
        Value sep = args.get(0, "sep");
        Value maxv = args.get(1, "maxsplit");
        int64_t maxsplit = maxv.kind == Kind::Int ? maxv.i : -1;
        if (sep.is_string() && sep.s.empty()) fail(n, "split(): empty separator");
        std::vector<std::string> parts;
        if (m == "rsplit" && maxsplit >= 0) {
          // rsplit with a limit: split from the right.
          auto all = py_split(s, sep, -1);
          if (static_cast<int64_t>(all.size()) > maxsplit + 1 && sep.is_string()) {
            size_t keep = all.size() - static_cast<size_t>(maxsplit);
            std::string head;
            for (size_t k = 0; k < keep; ++k) head += (k ? sep.s : "") + all[k];
            parts.push_back(head);
            parts.insert(parts.end(), all.begin() + keep, all.end());
          } else {
            parts = all;
          }
        } else {
          parts = py_split(s, sep, maxsplit);
        }
        std::vector<Value> out;
        for (auto& p : parts) out.push_back(Value::string(std::move(p)));
        return Value::array(std::move(out));
      }
      if (m == "splitlines") {
        std::vector<Value> out;
        size_t pos = 0;
        while (pos < s.size()) {
          size_t f = s.find_first_of("\r\n", pos);
          if (f == std::string::npos) {
            out.push_back(Value::string(s.substr(pos)));
            break;
          }
          out.push_back(Value::string(s.substr(pos, f - pos)));
          pos = f + ((s[f] == '\r' && f + 1 < s.size() && s[f + 1] == '\n') ? 2 : 1);
        }
        return Value::array(std::move(out));
      }
      if (m == "startswith" || m == "endswith") {
        Value p = args.get(0, "prefix");
        std::vector<Value> cands = p.is_array() ? *p.arr : std::vector<Value>{p};
        for (const auto& c : cands) {
          if (!c.is_string()) fail(n, m + "() argument must be a string or a tuple of strings, got '" + type_name(c) + "'");
          bool hit = m == "startswith" ? s.compare(0, c.s.size(), c.s) == 0 && s.size() >= c.s.size()
                                       : s.size() >= c.s.size() && s.compare(s.size() - c.s.size(), c.s.size(), c.s) == 0;
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      }
      if (m == "replace") {
        Value from = str_arg(n, args, 0, "old", m), to = str_arg(n, args, 1, "new", m);
        Value count = args.get(2, "count");
        return Value::string(py_replace(s, from.s, to.s, count.kind == Kind::Int ? count.i : -1));
      }
      if (m == "find" || m == "count") {
        Value sub = str_arg(n, args, 0, "sub", m);
        if (m == "find") {
          size_t f = s.find(sub.s);
          return Value::integer(f == std::string::npos ? -1 : static_cast<int64_t>(utf8_length(s.substr(0, f))));
        }
        if (sub.s.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
        int64_t c = 0;
        for (size_t f = s.find(sub.s); f != std::string::npos; f = s.find(sub.s, f + sub.s.size())) ++c;
        return Value::integer(c);
      }
      if (m == "join") {
        Value it = args.get(0, "iterable");
        std::string out;
        bool first = true;
        for (const auto& e : iterate(n, it)) {
          if (!first) out += s;
          first = false;
          out += to_output_string(e);
          if (out.size() > kMaxRenderBytes) fail(n, "string result of join() larger than 16 MB (the limit)");
        }
        return Value::string(out);
      }
      if (m == "isdigit" || m == "isspace" || m == "isalpha" || m == "isalnum" || m == "islower" || m == "isupper") {
        auto cps = utf8_decode(s);
        if (cps.empty()) return Value::boolean(false);
        auto all = [&](auto pred) { return std::all_of(cps.begin(), cps.end(), pred); };
        if (m == "isdigit") return Value::boolean(all([](char32_t c) { return c >= '0' && c <= '9'; }));
        if (m == "isspace") return Value::boolean(all(is_unicode_space));
        if (m == "isalpha") return Value::boolean(all(is_alpha_c));
        if (m == "isalnum") return Value::boolean(all([](char32_t c) { return is_alpha_c(c) || (c >= '0' && c <= '9'); }));
        bool any_cased = std::any_of(cps.begin(), cps.end(), [](char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); });
        if (m == "islower") return Value::boolean(any_cased && all([](char32_t c) { return !(c >= 'A' && c <= 'Z'); }));
        return Value::boolean(any_cased && all([](char32_t c) { return !(c >= 'a' && c <= 'z'); }));
      }
      fail(n, "unsupported string method '" + m + "'");
    }
    if (obj.is_object()) {
      if (m == "get") {
        Value key = args.get(0, "key");
        if (key.is_string())
          if (const Value* v = obj.obj->find(key.s)) return *v;
        Value def = args.get(1, "default");
        return def.is_undefined() ? Value::none() : def;
      }
      if (m == "items") return items_of(obj);
      if (m == "keys") {
        std::vector<Value> out;
        for (const auto& k : obj.obj->keys()) out.push_back(Value::string(k));
        return Value::array(std::move(out));
      }
      if (m == "values") {
        std::vector<Value> out;
        for (const auto& k : obj.obj->keys()) out.push_back(obj.obj->at(k));
        return Value::array(std::move(out));
      }
      fail(n, "unsupported dict method '" + m + "'");
    }
    if (obj.is_undefined()) fail(n, "cannot call method '" + m + "' of an undefined value");
    fail(n, "unsupported method '" + m + "' on a '" + type_name(obj) + "' value");
  }

  static Value items_of(const Value& obj) {
    std::vector<Value> out;
    if (obj.is_mapping_like())
      for (const auto& k : obj.obj->keys()) out.push_back(Value::array({Value::string(k), obj.obj->at(k)}));
    return Value::array(std::move(out));
  }

  // ---------------------------------------------------------------- operators

  static bool is_num(const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Float || v.kind == Kind::Bool; }
  static int64_t ival(const Value& v) { return v.kind == Kind::Bool ? int64_t(v.b) : v.i; }

  Value binary(const Node& n, const Value& l, const Value& r) {
    const std::string& op = n.name;
    if (op == "~") {
      std::string a = to_output_string(l), b = to_output_string(r);
      if (a.size() + b.size() > kMaxRenderBytes) fail(n, "string result of '~' larger than 16 MB (the limit)");
      return Value::string(a + b);
    }
    auto bad = [&]() -> Value {
      fail(n, "unsupported operand types for " + op + ": '" + type_name(l) + "' and '" + type_name(r) + "'");
    };
    if (is_num(l) && is_num(r)) {
      bool fl = l.kind == Kind::Float || r.kind == Kind::Float;
      if (op == "/") {
        if (r.as_double() == 0.0) fail(n, "division by zero");
        return Value::floating(l.as_double() / r.as_double());
      }
      if (fl) {
        double a = l.as_double(), b = r.as_double();
        if (op == "+") return Value::floating(a + b);
        if (op == "-") return Value::floating(a - b);
        if (op == "*") return Value::floating(a * b);
        if (op == "**") return Value::floating(std::pow(a, b));
        if (b == 0.0) fail(n, "float division by zero");
        if (op == "//") return Value::floating(std::floor(a / b));
        if (op == "%") {
          double m = std::fmod(a, b);
          if (m != 0.0 && ((m < 0) != (b < 0))) m += b;
          return Value::floating(m);
        }
        return bad();
      }
      int64_t a = ival(l), b = ival(r);
      // Python's integers are unbounded; ours are 64-bit: overflow is an error.
      int64_t res = 0;
      if (op == "+" && !__builtin_add_overflow(a, b, &res)) return Value::integer(res);
      if (op == "-" && !__builtin_sub_overflow(a, b, &res)) return Value::integer(res);
      if (op == "*" && !__builtin_mul_overflow(a, b, &res)) return Value::integer(res);
      if (op == "+" || op == "-" || op == "*") fail(n, "integer result of '" + op + "' too large");
      if (op == "**") {
        if (b < 0) return Value::floating(std::pow(double(a), double(b)));
        if (b > 62 && (a > 1 || a < -1)) fail(n, "integer result of '**' too large");
        res = 1;
        for (int64_t k = 0; k < b; ++k)
          if (__builtin_mul_overflow(res, a, &res)) fail(n, "integer result of '**' too large");
        return Value::integer(res);
      }
      if (b == 0) fail(n, "integer division or modulo by zero");
      if (b == -1 && a == INT64_MIN) fail(n, "integer result of '" + op + "' too large");
      int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) {
        --q;
        m += b;
      }
      if (op == "//") return Value::integer(q);
      if (op == "%") return Value::integer(m);
      return bad();
    }
    if (op == "+") {
      if (l.is_string() && r.is_string()) {
        if (l.s.size() + r.s.size() > kMaxRenderBytes) fail(n, "string result of '+' larger than 16 MB (the limit)");
        return Value::string(l.s + r.s);
      }
      if (l.is_array() && r.is_array()) {
        std::vector<Value> out = *l.arr;
        out.insert(out.end(), r.arr->begin(), r.arr->end());
        return Value::array(std::move(out));
      }
      // @huggingface/jinja joins a string with a number or a boolean.
      if ((l.is_string() && (is_num(r))) || (r.is_string() && is_num(l)))
        return Value::string(to_output_string(l) + to_output_string(r));
      if (l.is_undefined() || r.is_undefined()) fail(n, "cannot apply '+' to an undefined value");
      return bad();
    }
    if (op == "*") {
      if ((l.is_string() && (r.kind == Kind::Int || r.kind == Kind::Bool)) || (r.is_string() && (l.kind == Kind::Int || l.kind == Kind::Bool))) {
        const std::string& s = l.is_string() ? l.s : r.s;
        int64_t times = l.is_string() ? ival(r) : ival(l);
        if (times > 0 && static_cast<double>(times) * static_cast<double>(s.size()) > double(kMaxRenderBytes))
          fail(n, "string repetition result too large");
        std::string out;  // by doubling: a few large copies, not `times` small ones
        if (times > 0 && !s.empty()) {
          const size_t total = size_t(times) * s.size();
          out.reserve(total);
          out = s;
          while (out.size() * 2 <= total) out += out;
          out.append(out, 0, total - out.size());
        }
        return Value::string(out);
      }
      if (l.is_array() && (r.kind == Kind::Int)) {
        std::vector<Value> out;
        for (int64_t k = 0; k < r.i; ++k) out.insert(out.end(), l.arr->begin(), l.arr->end());
        return Value::array(std::move(out));
      }
    }
    if (l.is_undefined() || r.is_undefined()) fail(n, "cannot apply '" + op + "' to an undefined value");
    return bad();
  }

  bool contains(const Node& n, const Value& container, const Value& item) {
    switch (container.kind) {
      case Kind::String:
        if (!item.is_string()) fail(n, "'in <string>' requires a string as left operand, not '" + type_name(item) + "'");
        return container.s.find(item.s) != std::string::npos;
      case Kind::Array:
        return std::any_of(container.arr->begin(), container.arr->end(), [&](const Value& e) { return values_equal(e, item); });
      case Kind::Object:
      case Kind::Namespace: return item.is_string() && container.obj->find(item.s) != nullptr;
      case Kind::Undefined: return false;
      default: fail(n, "argument of type '" + type_name(container) + "' is not iterable");
    }
  }

  // Python ordering: -1, 0, 1; throws on incomparable types.
  int order(const Node& n, const Value& a, const Value& b, const std::string& op, bool case_insensitive = false) {
    if (is_num(a) && is_num(b)) {
      if (a.kind != Kind::Float && b.kind != Kind::Float) return ival(a) < ival(b) ? -1 : ival(a) > ival(b) ? 1 : 0;
      double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.is_string() && b.is_string()) {
      if (case_insensitive) {
        std::string x = map_chars(a.s, lower_c), y = map_chars(b.s, lower_c);
        return x < y ? -1 : x > y ? 1 : 0;
      }
      return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
    }
    if (a.is_array() && b.is_array()) {
      size_t k = 0;
      for (; k < a.arr->size() && k < b.arr->size(); ++k) {
        if (values_equal((*a.arr)[k], (*b.arr)[k])) continue;
        return order(n, (*a.arr)[k], (*b.arr)[k], op, case_insensitive);
      }
      return a.arr->size() < b.arr->size() ? -1 : a.arr->size() > b.arr->size() ? 1 : 0;
    }
    fail(n, "'" + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  bool compare(const Node& n, const std::string& op, const Value& l, const Value& r) {
    if (op == "==") return values_equal(l, r);
    if (op == "!=") return !values_equal(l, r);
    if (op == "in") return contains(n, r, l);
    if (op == "not in") return !contains(n, r, l);
    int c = order(n, l, r, op);
    if (op == "<") return c < 0;
    if (op == ">") return c > 0;
    if (op == "<=") return c <= 0;
    return c >= 0;
  }

  // ---------------------------------------------------------------- filters

  Value apply_filter_chain(const Node& chain, Value input, const ScopePtr& scope) {
    // chain: Filter nodes nested through `a`, the innermost with a == null.
    if (chain.a) input = apply_filter_chain(*chain.a, std::move(input), scope);
    return apply_filter(chain, input, scope);
  }

  std::vector<Value> seq(const Node& n, const Value& v) { return iterate(n, v); }

  // Dotted attribute lookup used by map/sort/selectattr/join(attribute=).
  Value attribute_path(const Value& item, const Value& attr) {
    if (attr.kind == Kind::Int) {
      if (item.is_array()) {
        int64_t idx = norm_index(attr.i, static_cast<int64_t>(item.arr->size()));
        return idx >= 0 && idx < static_cast<int64_t>(item.arr->size()) ? (*item.arr)[idx] : Value::undefined();
      }
      return Value::undefined();
    }
    Value cur = item;
    size_t pos = 0;
    const std::string& path = attr.s;
    while (true) {
      size_t dot = path.find('.', pos);
      std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
      if (cur.is_mapping_like()) {
        const Value* v = cur.obj->find(part);
        cur = v ? *v : Value::undefined();
      } else if (cur.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
        size_t idx = part.size() > 18 ? cur.arr->size() : std::stoul(part);
        cur = idx < cur.arr->size() ? (*cur.arr)[idx] : Value::undefined();
      } else {
        return Value::undefined();
      }
      if (dot == std::string::npos) return cur;
      pos = dot + 1;
    }
  }

  Value apply_filter(const Node& n, const Value& v, const ScopePtr& scope) {
    CallArgs args = eval_args(n, scope);
    const std::string& f = n.name;
    auto as_str = [&]() { return to_output_string(v); };
    if (f == "safe") return v;
    if (f == "string") return v.is_string() ? v : Value::string(as_str());
    if (f == "trim") {
      if (v.is_undefined()) return Value::string("");
      return Value::string(strip(as_str(), args, true, true));
    }
    if (f == "upper") return Value::string(map_chars(as_str(), upper_c));
    if (f == "lower") return Value::string(map_chars(as_str(), lower_c));
    if (f == "capitalize") return Value::string(py_capitalize(as_str()));
    if (f == "title") {
      // Jinja's title: words start after spaces and opening brackets/hyphens.
      auto cps = utf8_decode(as_str());
      bool start = true;
      for (auto& c : cps) {
        bool sep = is_unicode_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
          start = true;
          continue;
        }
        c = start ? upper_c(c) : lower_c(c);
        start = false;
      }
      return Value::string(utf8_encode(cps));
    }
    if (f == "length" || f == "count") {
      switch (v.kind) {
        case Kind::String: return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
        case Kind::Array: return Value::integer(static_cast<int64_t>(v.arr->size()));
        case Kind::Object:
        case Kind::Namespace: return Value::integer(static_cast<int64_t>(v.obj->size()));
        case Kind::Undefined: return Value::integer(0);
        default: fail(n, "object of type '" + type_name(v) + "' has no len()");
      }
    }
    if (f == "default" || f == "d") {
      Value def = args.get(0, "default_value");
      if (def.is_undefined()) def = Value::string("");
      bool boolean = args.get(1, "boolean").truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return def;
      return v;
    }
    if (f == "tojson") {
      JsonDumpOptions o;
      Value indent = args.get(0, "indent");
      if (indent.kind == Kind::Int) o.indent = static_cast<int>(indent.i);
      else if (!indent.is_undefined() && !indent.is_none()) fail(n, "tojson: indent must be an integer");
      o.ensure_ascii = args.get(1, "ensure_ascii").truthy();
      Value seps = args.get(2, "separators");
      if (seps.is_array()) {
        if (seps.arr->size() != 2 || !(*seps.arr)[0].is_string() || !(*seps.arr)[1].is_string())
          fail(n, "tojson: separators must be a pair of strings");
        o.custom_separators = true;
        o.item_separator = (*seps.arr)[0].s;
        o.key_separator = (*seps.arr)[1].s;
      }
      o.sort_keys = args.get(3, "sort_keys").truthy();
      return Value::string(json_dumps(v, o));
    }
    if (f == "join") {
      Value sep = args.get(0, "d");
      Value attr = args.get(1, "attribute");
      std::string out;
      bool first = true;
      for (const auto& e : seq(n, v)) {
        if (!first) out += sep.is_undefined() ? "" : to_output_string(sep);
        first = false;
        out += to_output_string(attr.is_undefined() ? e : attribute_path(e, attr));
      }
      return Value::string(out);
    }
    if (f == "list") return Value::array(seq(n, v));
    if (f == "first" || f == "last") {
      std::vector<Value> items = seq(n, v);
      if (items.empty()) return Value::undefined();
      return f == "first" ? items.front() : items.back();
    }
    if (f == "reverse") {
      if (v.is_string()) {
        auto cps = utf8_decode(v.s);
        std::reverse(cps.begin(), cps.end());
        return Value::string(utf8_encode(cps));
      }
      std::vector<Value> items = seq(n, v);
      std::reverse(items.begin(), items.end());
      return Value::array(std::move(items));
    }
    if (f == "replace") {
      Value from = args.get(0, "old"), to = args.get(1, "new"), count = args.get(2, "count");
      return Value::string(py_replace(as_str(), to_output_string(from), to_output_string(to),
                                      count.kind == Kind::Int ? count.i : -1));
    }
    if (f == "int") {
      Value def = args.get(0, "default");
      if (def.is_undefined()) def = Value::integer(0);
      if (v.kind == Kind::Int) return v;
      if (v.kind == Kind::Bool) return Value::integer(v.b);
      if (v.kind == Kind::Float) return Value::integer(static_cast<int64_t>(std::trunc(v.f)));
      if (v.is_string()) {
        std::string s = strip(v.s, CallArgs{}, true, true);
        try {
          size_t used = 0;
          long long x = std::stoll(s, &used, 10);
          if (used == s.size()) return Value::integer(x);
          double d = std::stod(s, &used);
          if (used == s.size()) return Value::integer(static_cast<int64_t>(std::trunc(d)));
        } catch (const std::exception&) {
        }
      }
      return def;
    }
    if (f == "float") {
      Value def = args.get(0, "default");
      if (def.is_undefined()) def = Value::floating(0.0);
      if (is_num(v)) return Value::floating(v.as_double());
      if (v.is_string()) {
        try {
          size_t used = 0;
          std::string s = strip(v.s, CallArgs{}, true, true);
          double d = std::stod(s, &used);
          if (used == s.size()) return Value::floating(d);
        } catch (const std::exception&) {
        }
      }
      return def;
    }
    if (f == "abs") {
      if (v.kind == Kind::Int) return Value::integer(v.i < 0 ? -v.i : v.i);
      if (v.kind == Kind::Float) return Value::floating(std::fabs(v.f));
      fail(n, "bad operand type for abs(): '" + type_name(v) + "'");
    }
    if (f == "round") {
      Value prec = args.get(0, "precision");
      Value method = args.get(1, "method");
      int64_t p = prec.kind == Kind::Int ? prec.i : 0;
      std::string m = method.is_string() ? method.s : "common";
      double x = v.as_double(), scale = std::pow(10.0, double(p));
      double r;
      if (m == "ceil") r = std::ceil(x * scale) / scale;
      else if (m == "floor") r = std::floor(x * scale) / scale;
      else if (m == "common") r = std::round(x * scale) / scale;
      else fail(n, "round: method must be 'common', 'ceil' or 'floor'");
      return Value::floating(r);
    }
    if (f == "items") {
      if (v.is_undefined()) return Value::array();
      if (!v.is_mapping_like()) fail(n, "items: expected a mapping, got '" + type_name(v) + "'");
      return items_of(v);
    }
    if (f == "dictsort") {
      if (!v.is_mapping_like()) fail(n, "dictsort: expected a mapping, got '" + type_name(v) + "'");
      bool cs = args.get(0, "case_sensitive").truthy();
      Value by = args.get(1, "by");
      bool by_value = by.is_string() && by.s == "value";
      bool rev = args.get(2, "reverse").truthy();
      std::vector<Value> items = *items_of(v).arr;
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        int c = order(n, (*a.arr)[by_value ? 1 : 0], (*b.arr)[by_value ? 1 : 0], "<", !cs);
        return rev ? c > 0 : c < 0;
      });
      return Value::array(std::move(items));
    }
    if (f == "sort") {
      bool rev = args.get(0, "reverse").truthy();
      bool cs = args.get(1, "case_sensitive").truthy();
      Value attr = args.get(2, "attribute");
      std::vector<Value> items = seq(n, v);
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        const Value x = attr.is_undefined() ? a : attribute_path(a, attr);
        const Value y = attr.is_undefined() ? b : attribute_path(b, attr);
        int c = order(n, x, y, "<", !cs);
        return rev ? c > 0 : c < 0;
      });
      return Value::array(std::move(items));
    }
    if (f == "unique") {
      std::vector<Value> out;
      for (const auto& e : seq(n, v)) {
        bool seen = std::any_of(out.begin(), out.end(), [&](const Value& o) {
          if (o.is_string() && e.is_string()) return map_chars(o.s, lower_c) == map_chars(e.s, lower_c);
          return values_equal(o, e);
        });
        if (!seen) out.push_back(e);
      }
      return Value::array(std::move(out));
    }
    if (f == "min" || f == "max") {
      std::vector<Value> items = seq(n, v);
      if (items.empty()) return Value::undefined();
      Value best = items[0];
      for (size_t k = 1; k < items.size(); ++k) {
        int c = order(n, items[k], best, "<", true);
        if (f == "min" ? c < 0 : c > 0) best = items[k];
      }
      return best;
    }
    if (f == "sum") {
      Value total = args.get(1, "start");
      if (total.is_undefined()) total = Value::integer(0);
      Value attr = args.get(0, "attribute");
      for (const auto& e : seq(n, v)) total = binary_plus(n, total, attr.is_undefined() ? e : attribute_path(e, attr));
      return total;
    }
    if (f == "wordcount") return Value::integer(static_cast<int64_t>(py_split(as_str(), Value(), -1).size()));
    if (f == "indent") {
      Value width = args.get(0, "width");
      std::string pad = width.is_string() ? width.s : std::string(width.kind == Kind::Int ? width.i : 4, ' ');
      bool first = args.get(1, "first").truthy(), blank = args.get(2, "blank").truthy();
      std::string s = as_str(), out;
      size_t pos = 0;
      bool is_first = true;
      while (true) {
        size_t nl = s.find('\n', pos);
        std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        bool indent = (!is_first || first) && (blank || !line.empty());
        if (!is_first) out += '\n';
        if (indent) out += pad;
        out += line;
        is_first = false;
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      return Value::string(out);
    }
    if (f == "attr") {
      Value name = args.get(0, "name");
      return name.is_string() ? get_attr(v, name.s) : Value::undefined();
    }
    if (f == "batch") {
      Value size = args.get(0, "linecount");
      if (size.kind != Kind::Int || size.i <= 0) fail(n, "batch: size must be a positive integer");
      Value fill = args.get(1, "fill_with");
      std::vector<Value> out, cur;
      for (const auto& e : seq(n, v)) {
        cur.push_back(e);
        if (static_cast<int64_t>(cur.size()) == size.i) {
          out.push_back(Value::array(cur));
          cur.clear();
        }
      }
      if (!cur.empty()) {
        if (!fill.is_undefined())
          while (static_cast<int64_t>(cur.size()) < size.i) cur.push_back(fill);
        out.push_back(Value::array(cur));
      }
      return Value::array(std::move(out));
    }
    if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr") {
      bool attr_mode = f == "selectattr" || f == "rejectattr";
      bool want = f == "select" || f == "selectattr";
      size_t base = attr_mode ? 1 : 0;
      Value attr = attr_mode ? args.get(0, "attribute") : Value();
      if (attr_mode && !attr.is_string() && attr.kind != Kind::Int) fail(n, f + ": attribute name must be a string");
      Value test = args.positional.size() > base ? args.positional[base] : Value();
      if (!test.is_undefined() && !test.is_string()) fail(n, f + ": test name must be a string");
      std::vector<Value> test_args;
      for (size_t k = base + 1; k < args.positional.size(); ++k) test_args.push_back(args.positional[k]);
      std::vector<Value> out;
      for (const auto& e : seq(n, v)) {
        Value x = attr_mode ? attribute_path(e, attr) : e;
        bool r = test.is_undefined() ? x.truthy() : run_test(n, test.s, x, test_args);
        if (r == want) out.push_back(e);
      }
      return Value::array(std::move(out));
    }
    if (f == "map") {
      std::vector<Value> out;
      const Value* attr = args.keyword_value("attribute");
      if (attr) {
        const Value* def = args.keyword_value("default");
        for (const auto& e : seq(n, v)) {
          Value x = attribute_path(e, *attr);
          out.push_back(x.is_undefined() && def ? *def : x);
        }
        return Value::array(std::move(out));
      }
      Value fname = args.get(0, "filter");
      if (!fname.is_string()) fail(n, "map: expected a filter name or attribute=");
      static const std::set<std::string> allowed = {"upper", "lower", "trim", "string", "int", "float", "length",
                                                    "capitalize", "title", "tojson", "list", "first", "last", "abs", "round", "safe", "count", "reverse", "items"};
      if (!allowed.count(fname.s)) fail(n, "map: unsupported filter '" + fname.s + "'");
      Node inner(NodeType::Filter, n.offset);
      inner.name = fname.s;
      for (size_t k = 1; k < n.items.size(); ++k) inner.items.push_back(n.items[k]);
      inner.kwargs = n.kwargs;
      for (const auto& e : seq(n, v)) out.push_back(apply_filter(inner, e, scope));
      return Value::array(std::move(out));
    }
    fail(n, "unsupported filter '" + f + "'");
  }

  Value binary_plus(const Node& n, const Value& a, const Value& b) {
    Node tmp(NodeType::Binary, n.offset);
    tmp.name = "+";
    return binary(tmp, a, b);
  }

  // ---------------------------------------------------------------- tests

  bool apply_test(const Node& n, const Value& v, const ScopePtr& scope) {
    CallArgs args = eval_args(n, scope);
    return run_test(n, n.name, v, args.positional);
  }

  bool run_test(const Node& n, const std::string& t, const Value& v, const std::vector<Value>& args) {
    auto arg = [&](size_t k) -> const Value& {
      if (k >= args.size()) fail(n, "test '" + t + "' needs an argument");
      return args[k];
    };
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_none();
    if (t == "boolean") return v.kind == Kind::Bool;
    if (t == "true") return v.kind == Kind::Bool && v.b;
    if (t == "false") return v.kind == Kind::Bool && !v.b;
    if (t == "integer") return v.kind == Kind::Int;
    if (t == "float") return v.kind == Kind::Float;
    if (t == "number") return is_num(v);
    if (t == "string") return v.is_string();
    if (t == "mapping") return v.is_object();
    if (t == "iterable") return v.is_string() || v.is_array() || v.is_mapping_like() || v.is_undefined();
    if (t == "sequence") return v.is_string() || v.is_array() || v.is_object();
    if (t == "callable") return v.kind == Kind::Function;
    if (t == "odd" || t == "even") {
      if (v.kind != Kind::Int) fail(n, "test '" + t + "' needs an integer, got '" + type_name(v) + "'");
      bool odd = (v.i % 2) != 0;
      return t == "odd" ? odd : !odd;
    }
    if (t == "divisibleby") {
      const Value& d = arg(0);
      if (v.kind != Kind::Int || d.kind != Kind::Int || d.i == 0) fail(n, "divisibleby needs non-zero integers");
      return v.i % d.i == 0;
    }
    if (t == "eq" || t == "equalto" || t == "==") return values_equal(v, arg(0));
    if (t == "ne" || t == "!=") return !values_equal(v, arg(0));
    if (t == "lt" || t == "<" || t == "lessthan") return order(n, v, arg(0), "<") < 0;
    if (t == "le" || t == "<=") return order(n, v, arg(0), "<=") <= 0;
    if (t == "gt" || t == ">" || t == "greaterthan") return order(n, v, arg(0), ">") > 0;
    if (t == "ge" || t == ">=") return order(n, v, arg(0), ">=") >= 0;
    if (t == "in") return contains(n, arg(0), v);
    if (t == "lower") return v.is_string() && map_chars(v.s, lower_c) == v.s;
    if (t == "upper") return v.is_string() && map_chars(v.s, upper_c) == v.s;
    if (t == "sameas") {
      const Value& o = arg(0);
      if (v.kind != o.kind) return false;
      switch (v.kind) {
        case Kind::Undefined:
        case Kind::None: return true;
        case Kind::Bool: return v.b == o.b;
        case Kind::Int: return v.i == o.i;
        case Kind::Array: return v.arr == o.arr;
        case Kind::Object:
        case Kind::Namespace: return v.obj == o.obj;
        default: return values_equal(v, o);
      }
    }
    if (t == "filter" || t == "test") {
      static const std::set<std::string> filters = {"trim", "length", "upper", "lower", "tojson", "join", "default"};
      return v.is_string() && filters.count(v.s);
    }
    fail(n, "unsupported test '" + t + "'");
  }

 private:
  const std::string& source_;
  const std::string& name_;
  int macro_depth_ = 0;
};

}  // namespace

Template::Template(std::string source, std::string name) : source_(std::move(source)), name_(std::move(name)) {
  body_ = parse_template(source_, name_);
}

Template::~Template() = default;

std::string Template::render(const Json& context) const {
  Interpreter interp(source_, name_);
  auto globals = std::make_shared<Scope>();
  if (context.is_object())
    for (auto it = context.begin(); it != context.end(); ++it) globals->vars[it.key()] = from_json(it.value());
  auto scope = std::make_shared<Scope>();
  scope->parent = globals;
  std::string out;
  try {
    interp.exec_block(body_, scope, out);
  } catch (const Raised& r) {
    throw TemplateRaisedError(name_, 0, 0, r.message);
  }
  return out;
}

}  // namespace chatvec::jinja

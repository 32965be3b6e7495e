// Runtime values of the Jinja subset used by chat templates.
//
// Semantics follow Python Jinja2 as transformers configures it (the reference
// for what a model was trained on), and @huggingface/jinja where Jinja2 leaves
// room.  Strings are UTF-8; lengths, indices and slices count code points.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/json_util.h"

namespace chatvec::jinja {

struct Value;
struct CallArgs;

// Insertion-ordered string-keyed map (JSON objects, dict literals, namespaces).
class ObjectMap {
 public:
  const Value* find(const std::string& key) const;
  Value* find(const std::string& key);
  void set(const std::string& key, Value v);
  size_t size() const { return keys_.size(); }
  const std::vector<std::string>& keys() const { return keys_; }
  const Value& at(const std::string& key) const;

 private:
  std::vector<std::string> keys_;
  std::unordered_map<std::string, Value> values_;
};

using Function = std::function<Value(CallArgs&)>;

enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object, Namespace, Function };

struct Value {
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::shared_ptr<std::vector<Value>> arr;  // Array
  std::shared_ptr<ObjectMap> obj;           // Object, Namespace
  std::shared_ptr<Function> fn;             // Function
  std::string fn_name;                      // for error messages

  static Value undefined() { return Value(); }
  static Value none() { Value v; v.kind = Kind::None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
  static Value floating(double x) { Value v; v.kind = Kind::Float; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
  static Value array(std::vector<Value> items = {}) {
    Value v; v.kind = Kind::Array; v.arr = std::make_shared<std::vector<Value>>(std::move(items)); return v;
  }
  static Value object() { Value v; v.kind = Kind::Object; v.obj = std::make_shared<ObjectMap>(); return v; }
  static Value namespace_() { Value v; v.kind = Kind::Namespace; v.obj = std::make_shared<ObjectMap>(); return v; }
  static Value function(std::string name, Function f) {
    Value v; v.kind = Kind::Function; v.fn = std::make_shared<Function>(std::move(f)); v.fn_name = std::move(name); return v;
  }

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float; }
  bool is_array() const { return kind == Kind::Array; }
  bool is_object() const { return kind == Kind::Object; }
  bool is_mapping_like() const { return kind == Kind::Object || kind == Kind::Namespace; }

  bool truthy() const;
  double as_double() const { return kind == Kind::Float ? f : kind == Kind::Int ? double(i) : kind == Kind::Bool ? double(b) : 0.0; }
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // Positional argument `index` or keyword `name`, else undefined.
  Value get(size_t index, const std::string& name) const;
  const Value* keyword_value(const std::string& name) const;
};

// Python-like type name for error messages: 'str', 'int', 'list', 'dict'...
std::string type_name(const Value& v);

// Conversions.
Value from_json(const Json& j);
Json to_json(const Value& v);

// str(v) as Jinja2 prints it: undefined is "", None is "None", True/False,
// floats as Python repr, lists and dicts as Python repr.
std::string to_output_string(const Value& v);
// Python repr() (strings quoted).
std::string python_repr(const Value& v);
// Python repr() of a float: shortest round-trip digits, "1.0", "1e-05", "inf".
std::string python_float_repr(double x);

struct JsonDumpOptions {
  int indent = -1;  // -1: no indent (one line)
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_separator;  // empty: Python's default for the indent mode
  std::string key_separator;
  bool custom_separators = false;
};
// json.dumps(v, ...) as Python writes it.
std::string json_dumps(const Value& v, const JsonDumpOptions& opts);

// Python ==.
bool values_equal(const Value& a, const Value& b);

// UTF-8 helpers.
std::vector<char32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<char32_t>& cps);
void utf8_append(std::string& out, char32_t cp);
size_t utf8_length(const std::string& s);
bool is_unicode_space(char32_t c);

}  // namespace chatvec::jinja

#include "chat_template/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace chatvec::jinja {

// ---------------------------------------------------------------- ObjectMap

const Value* ObjectMap::find(const std::string& key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

Value* ObjectMap::find(const std::string& key) {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

void ObjectMap::set(const std::string& key, Value v) {
  auto it = values_.find(key);
  if (it == values_.end()) {
    keys_.push_back(key);
    values_.emplace(key, std::move(v));
  } else {
    it->second = std::move(v);
  }
}

const Value& ObjectMap::at(const std::string& key) const { return values_.at(key); }

// ---------------------------------------------------------------- Value

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0.0;
    case Kind::String: return !s.empty();
    case Kind::Array: return !arr->empty();
    case Kind::Object: return obj->size() > 0;
    case Kind::Namespace:
    case Kind::Function: return true;
  }
  return false;
}

Value CallArgs::get(size_t index, const std::string& name) const {
  if (index < positional.size()) return positional[index];
  if (const Value* v = keyword_value(name)) return *v;
  return Value::undefined();
}

const Value* CallArgs::keyword_value(const std::string& name) const {
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Array: return "list";
    case Kind::Object: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Function: return "function";
  }
  return "?";
}

// ---------------------------------------------------------------- JSON

Value from_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return Value::none();
    case Json::value_t::boolean: return Value::boolean(j.get<bool>());
    case Json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case Json::value_t::number_unsigned: return Value::integer(static_cast<int64_t>(j.get<uint64_t>()));
    case Json::value_t::number_float: return Value::floating(j.get<double>());
    case Json::value_t::string: return Value::string(j.get<std::string>());
    case Json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::array(std::move(items));
    }
    case Json::value_t::object: {
      Value o = Value::object();
      for (auto it = j.begin(); it != j.end(); ++it) o.obj->set(it.key(), from_json(it.value()));
      return o;
    }
    default: return Value::undefined();
  }
}

Json to_json(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
    case Kind::Function: return nullptr;
    case Kind::Bool: return v.b;
    case Kind::Int: return v.i;
    case Kind::Float: return v.f;
    case Kind::String: return v.s;
    case Kind::Array: {
      Json a = Json::array();
      for (const auto& e : *v.arr) a.push_back(to_json(e));
      return a;
    }
    case Kind::Object:
    case Kind::Namespace: {
      Json o = Json::object();
      for (const auto& k : v.obj->keys()) o[k] = to_json(v.obj->at(k));
      return o;
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------- UTF-8

std::vector<char32_t> utf8_decode(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    int extra;
    if (c < 0x80) { cp = c; extra = 0; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; extra = 1; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; extra = 2; }
    else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; extra = 3; }
    else { out.push_back(c); ++i; continue; }  // stray byte: keep as is
    bool ok = i + extra < s.size();
    for (int k = 1; ok && k <= extra; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) { out.push_back(c); ++i; continue; }
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) utf8_append(out, c);
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

// Python's str.isspace() set (what str.strip() removes by default).
bool is_unicode_space(char32_t c) {
  if (c >= 0x09 && c <= 0x0D) return true;
  if (c >= 0x1C && c <= 0x20) return true;
  switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default: break;
  }
  return c >= 0x2000 && c <= 0x200A;
}

// ---------------------------------------------------------------- printing

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0.0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci = [-]d[.ddd]e[+-]XX
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    int point = exp + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0." + std::string(-point, '0') + digits;
    } else if (point >= static_cast<int>(digits.size())) {
      out += digits + std::string(point - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, point) + "." + digits.substr(point);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return out;
}

static std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : utf8_decode(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0)) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c));
      out += b;
    } else {
      utf8_append(out, c);
    }
  }
  out += q;
  return out;
}

std::string python_repr(const Value& v) {
  switch (v.kind) {
    case Kind::String: return repr_string(v.s);
    case Kind::Array: {
      std::string out = "[";
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += ", ";
        out += python_repr((*v.arr)[k]);
      }
      return out + "]";
    }
    case Kind::Object: {
      std::string out = "{";
      bool first = true;
      for (const auto& key : v.obj->keys()) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(key) + ": " + python_repr(v.obj->at(key));
      }
      return out + "}";
    }
    case Kind::Namespace: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& key : v.obj->keys()) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(key) + ": " + python_repr(v.obj->at(key));
      }
      return out + "}>";
    }
    case Kind::Undefined: return "Undefined";
    default: return to_output_string(v);
  }
}

std::string to_output_string(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.b ? "True" : "False";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return python_float_repr(v.f);
    case Kind::String: return v.s;
    case Kind::Function: return "<function " + v.fn_name + ">";
    default: return python_repr(v);
  }
}

static void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (char32_t c : utf8_decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        char b[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            char32_t u = c - 0x10000;
            std::snprintf(b, sizeof b, "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (u >> 10)),
                          static_cast<unsigned>(0xDC00 + (u & 0x3FF)));
          } else {
            std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
          }
          out += b;
        } else {
          utf8_append(out, c);
        }
      }
    }
  }
  out += '"';
}

static void dump_value(std::string& out, const Value& v, const JsonDumpOptions& o, int depth) {
  const std::string item_sep = o.custom_separators ? o.item_separator : (o.indent >= 0 ? "," : ", ");
  const std::string key_sep = o.custom_separators ? o.key_separator : ": ";
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(o.indent) * d, ' ');
  };
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
    case Kind::Function: out += "null"; return;
    case Kind::Bool: out += v.b ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.i); return;
    case Kind::Float:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(v.f);
      return;
    case Kind::String: dump_string(out, v.s, o.ensure_ascii); return;
    case Kind::Array: {
      if (v.arr->empty()) { out += "[]"; return; }
      out += '[';
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += item_sep;
        if (o.indent >= 0) newline(depth + 1);
        dump_value(out, (*v.arr)[k], o, depth + 1);
      }
      if (o.indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Kind::Object:
    case Kind::Namespace: {
      if (v.obj->size() == 0) { out += "{}"; return; }
      std::vector<std::string> keys = v.obj->keys();
      if (o.sort_keys) std::sort(keys.begin(), keys.end());
      out += '{';
      bool first = true;
      for (const auto& k : keys) {
        if (!first) out += item_sep;
        first = false;
        if (o.indent >= 0) newline(depth + 1);
        dump_string(out, k, o.ensure_ascii);
        out += key_sep;
        dump_value(out, v.obj->at(k), o, depth + 1);
      }
      if (o.indent >= 0) newline(depth);
      out += '}';
      return;
    }
  }
}

std::string json_dumps(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  dump_value(out, v, opts, 0);
  return out;
}

bool values_equal(const Value& a, const Value& b) {
  auto numeric = [](const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Float || v.kind == Kind::Bool; };
  if (numeric(a) && numeric(b)) {
    if (a.kind != Kind::Float && b.kind != Kind::Float) {
      int64_t x = a.kind == Kind::Bool ? a.b : a.i;
      int64_t y = b.kind == Kind::Bool ? b.b : b.i;
      return x == y;
    }
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.s == b.s;
    case Kind::Array: {
      if (a.arr == b.arr) return true;
      if (a.arr->size() != b.arr->size()) return false;
      for (size_t k = 0; k < a.arr->size(); ++k)
        if (!values_equal((*a.arr)[k], (*b.arr)[k])) return false;
      return true;
    }
    case Kind::Object: {
      if (a.obj == b.obj) return true;
      if (a.obj->size() != b.obj->size()) return false;
      for (const auto& k : a.obj->keys()) {
        const Value* other = b.obj->find(k);
        if (!other || !values_equal(a.obj->at(k), *other)) return false;
      }
      return true;
    }
    case Kind::Namespace: return a.obj == b.obj;
    case Kind::Function: return a.fn == b.fn;
    default: return false;
  }
}

}  // namespace chatvec::jinja

#include "tokenizer/json_fast.h"

#include <unordered_set>
#include <vector>

#include "core/error.h"

namespace chatvec::detail {

namespace {

class Builder : public nlohmann::json_sax<Json> {
 public:
  explicit Builder(Json& root) : root_(root) {}

  bool null() override { return put(Json(nullptr)); }
  bool boolean(bool v) override { return put(Json(v)); }
  bool number_integer(number_integer_t v) override { return put(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(Json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(Json(v)); }
  bool string(string_t& v) override { return put(Json(std::move(v))); }
  bool binary(binary_t&) override { return put(Json(nullptr)); }

  bool start_object(std::size_t) override {
    if (!depth_ok()) return false;
    Json* j = place(Json::object());
    stack_.push_back({j, {}});
    return true;
  }
  bool key(string_t& k) override {
    auto& top = stack_.back();
    if (!top.keys.insert(k).second && duplicate_.empty()) duplicate_ = k;
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (!depth_ok()) return false;
    Json* j = place(Json::array());
    stack_.push_back({j, {}});
    return true;
  }
  bool end_array() override {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    error_ = ex.what();
    return false;
  }

  const std::string& error() const { return error_; }
  const std::string& duplicate() const { return duplicate_; }

 private:
  struct Level {
    Json* value;
    std::unordered_set<std::string> keys;
  };

  bool depth_ok() {
    if (stack_.size() < size_t(kMaxJsonDepth)) return true;
    error_ = "] nested deeper than the limit of " + std::to_string(kMaxJsonDepth) + " levels";
    return false;
  }
  bool put(Json&& v) {
    place(std::move(v));
    return true;
  }
  // Store v at the current position; returns where it went.
  Json* place(Json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json* parent = stack_.back().value;
    if (parent->is_array()) {
      auto& arr = parent->get_ref<Json::array_t&>();
      arr.push_back(std::move(v));
      return &arr.back();
    }
    // Append to the ordered map's vector directly: duplicates were already
    // checked with the hash set, so skip its linear search.
    auto& obj = parent->get_ref<Json::object_t&>();
    using Base = std::vector<std::pair<const std::string, Json>>;
    Base& base = obj;
    base.emplace_back(std::move(key_), std::move(v));
    return &base.back().second;
  }

  Json& root_;
  std::vector<Level> stack_;
  std::string key_;
  std::string error_;
  std::string duplicate_;
};

}  // namespace

Json parse_json_large(std::string_view text, const std::string& what) {
  Json root;
  Builder b(root);
  bool ok = Json::sax_parse(text.begin(), text.end(), &b, nlohmann::detail::input_format_t::json, true, false);
  if (!ok) {
    std::string msg = b.error().empty() ? "parse error" : b.error();
    auto p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
    throw InputError(what + ": invalid JSON: " + msg);
  }
  if (!b.duplicate().empty()) throw InputError(what + ": invalid JSON: duplicate key \"" + b.duplicate() + "\"");
  return root;
}

}  // namespace chatvec::detail

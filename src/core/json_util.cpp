#include "core/json_util.h"

#include <vector>
#include <set>

#include "core/error.h"
#include "core/file_util.h"

namespace chatvec {

Json parse_json_strict(std::string_view text, const std::string& what) {
  // A stack of the keys seen in each open object.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int /*depth*/, Json::parse_event_t ev, Json& parsed) {
    switch (ev) {
      case Json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] "; keep the rest.
    auto p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
    throw InputError(what + ": invalid JSON: " + msg);
  }
  if (!duplicate.empty()) throw InputError(what + ": invalid JSON: duplicate key \"" + duplicate + "\"");
  return j;
}

Json read_json_file(const std::string& path) { return parse_json_strict(read_file(path), path); }

std::string dump_json_pretty(const Json& j) { return j.dump(2, ' ', false) + "\n"; }

}  // namespace chatvec

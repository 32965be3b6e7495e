#include "core/json_util.h"

#include <sys/stat.h>

#include <set>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"

namespace chatvec {

Json parse_json_strict(std::string_view text, const std::string& what) {
  // A stack of the keys seen in each open object.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int depth, Json::parse_event_t ev, Json& parsed) {
    switch (ev) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw InputError(what + ": invalid JSON: nested deeper than the limit of " + std::to_string(kMaxJsonDepth) +
                           " levels");
        if (ev == Json::parse_event_t::object_start) keys.emplace_back();
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

std::string read_input_file(const std::string& path, uint64_t limit, const std::string& limit_name) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) > limit)
    throw InputError(path + ": file is " + std::to_string(st.st_size) + " bytes, over the " + limit_name + " of " +
                     std::to_string(limit >> 20) + " MB");
  return read_file(path);
}

Json read_json_file(const std::string& path) {
  return parse_json_strict(read_input_file(path, kMaxJsonFileBytes, "limit for JSON files"), path);
}

std::string dump_json_pretty(const Json& j) { return j.dump(2, ' ', false) + "\n"; }

}  // namespace chatvec

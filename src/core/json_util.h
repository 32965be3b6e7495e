// Strict JSON parsing for files we are handed: valid UTF-8, one value, no
// duplicate keys in any object.  Errors name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace chatvec {

using Json = nlohmann::ordered_json;

// Parse `text`; `what` names the source in errors ("model/config.json").
Json parse_json_strict(std::string_view text, const std::string& what);
// Read and parse a whole file.
Json read_json_file(const std::string& path);
// Pretty JSON with 2-space indentation and a final newline, as the Hugging
// Face libraries write their config files.
std::string dump_json_pretty(const Json& j);

}  // namespace chatvec

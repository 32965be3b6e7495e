// Strict JSON parsing for files we are handed: valid UTF-8, one value, no
// duplicate keys in any object.  Errors name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace chatvec {

using Json = nlohmann::ordered_json;

// Limits on the files we are handed (named in the errors): no JSON file is
// read when larger than kMaxJsonFileBytes, and no JSON nests deeper than
// kMaxJsonDepth (recursive walks and dumps of the value must not overflow the
// stack).
constexpr uint64_t kMaxJsonFileBytes = 256ull << 20;
constexpr int kMaxJsonDepth = 256;

// Parse `text`; `what` names the source in errors ("model/config.json").
Json parse_json_strict(std::string_view text, const std::string& what);
// Read and parse a whole file (at most kMaxJsonFileBytes).
Json read_json_file(const std::string& path);
// Read a whole input file, refusing (InputError naming `limit_name`) one
// larger than `limit` bytes before reading it.
std::string read_input_file(const std::string& path, uint64_t limit, const std::string& limit_name);
// Pretty JSON with 2-space indentation and a final newline, as the Hugging
// Face libraries write their config files.
std::string dump_json_pretty(const Json& j);

}  // namespace chatvec

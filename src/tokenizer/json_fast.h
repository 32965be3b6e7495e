// Order-preserving JSON parsing for large tokenizer files.
//
// nlohmann's ordered_json checks each new key against all earlier keys of
// its object, which is quadratic for a 150,000-entry vocabulary.  This parser
// builds the same ordered_json in linear time and still rejects duplicate
// keys.
#pragma once

#include <string>
#include <string_view>

#include "core/json_util.h"

namespace chatvec::detail {

// Errors are InputError "<what>: invalid JSON: ...".
Json parse_json_large(std::string_view text, const std::string& what);

}  // namespace chatvec::detail

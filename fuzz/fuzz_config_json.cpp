// config.json handling: strict JSON parsing (UTF-8, duplicate keys) and the
// engine's reading of the model configuration from it.
#include <cstdint>

#include "core/error.h"
#include "core/json_util.h"
#include "formats/model_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  chatvec::Json j;
  try {
    j = chatvec::parse_json_strict(chatvec::fuzz::as_text(data, size), "config.json");
  } catch (const chatvec::InputError&) {
    return 0;
  }
  // What was accepted must dump and re-parse to the same value.
  try {
    const std::string again = chatvec::dump_json_pretty(j);
    if (chatvec::parse_json_strict(again, "dump") != j) __builtin_trap();
  } catch (const chatvec::InputError&) {
    __builtin_trap();
  }
  try {
    (void)chatvec::parse_model_config(j, "config.json");
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

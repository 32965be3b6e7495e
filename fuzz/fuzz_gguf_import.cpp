// GGUF import (src/gguf/gguf_import.h): arbitrary bytes taken as a GGUF
// file, imported into a fresh Hugging Face directory (config.json,
// tokenizer.gguf, tokenizer_config.json, model.safetensors).  A file that
// imports must give a config.json that parses again.
#include <cstdint>
#include <filesystem>

#include "core/error.h"
#include "core/json_util.h"
#include "fuzz_common.h"
#include "gguf/gguf_import.h"

using namespace chatvec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("import.gguf", data, size);
  const std::string out = fuzz::scratch_dir() + "/import-out";
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  std::filesystem::create_directories(out);
  try {
    gguf::import_gguf(path, out);
    (void)read_json_file(out + "/config.json");
  } catch (const InputError&) {
  }
  return 0;
}

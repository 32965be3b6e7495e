// The GGUF reader's header parser (src/gguf/gguf_reader.h) on arbitrary
// bytes taken as a whole file.  Built when the chatvec_gguf library exists.
#include <cstdint>

#include "core/error.h"
#include "gguf/gguf_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    chatvec::gguf::Header h = chatvec::gguf::parse_header(data, size, "fuzz.gguf");
    (void)h.kvs.size();
    (void)h.tensors.size();
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

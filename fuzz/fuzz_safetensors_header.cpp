// parse_safetensors_header on arbitrary bytes taken as a whole file.
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors/safetensors_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    chatvec::SafetensorsHeader h = chatvec::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Whatever was accepted must describe bytes inside the input.
    for (const auto& t : h.tensors) {
      if (t.end < t.begin || h.data_start + t.end > size) __builtin_trap();
      if (t.numel() * chatvec::dtype_bits(t.dtype) / 8 != t.nbytes()) __builtin_trap();
    }
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

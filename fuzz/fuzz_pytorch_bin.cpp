// parse_pytorch_bin on arbitrary bytes taken as a whole .bin file: the zip
// reader (end records, zip64, central directory, local headers), then the
// restricted unpickler on data.pkl, then the tensors' placement in their
// storages.  Then the storages' CRC check.
#include <cstdint>

#include "core/error.h"
#include "formats/pytorch/pytorch_bin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tensors = chatvec::parse_pytorch_bin(data, size, "fuzz.bin");
    // Whatever was accepted must describe bytes inside the input.
    for (const auto& t : tensors) {
      if (t.offset > size || t.nbytes > size - t.offset) __builtin_trap();
      uint64_t numel = 1;
      for (uint64_t d : t.shape) numel *= d;
      if (numel * (chatvec::dtype_bits(t.dtype) / 8) != t.nbytes) __builtin_trap();
      if (t.nbytes) {
        volatile uint8_t first = data[t.offset], last = data[t.offset + t.nbytes - 1];
        (void)first;
        (void)last;
      }
    }
    chatvec::verify_pytorch_storages(data, size, "fuzz.bin");
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

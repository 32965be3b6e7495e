// GGUF tensor data and dequantisation, and the engine opening a GGUF file
// directly (src/gguf/gguf_model.h) and running one token through it, on
// arbitrary bytes taken as a whole file.  (fuzz_gguf covers the header
// parser alone.)  Every tensor the reader accepts is read as fp32 at its
// first and last elements; a file the engine opens runs one forward step,
// whose logits must be as many as the vocabulary.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "engine/llama_model.h"
#include "fuzz_common.h"
#include "gguf/gguf_format.h"
#include "gguf/gguf_model.h"
#include "gguf/gguf_reader.h"

using namespace chatvec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("model.gguf", data, size);
  try {
    const gguf::File f(path);
    std::vector<float> buf;
    for (const gguf::TensorEntry& t : f.tensors()) {
      const uint64_t block = t.type == uint32_t(gguf::TensorType::Q8_0) ? gguf::kQ8Block : 1;
      uint64_t n = std::min<uint64_t>(t.numel, 256);
      n -= n % block;
      if (n == 0) continue;
      buf.assign(n, 0.f);
      try {
        gguf::tensor_to_f32(f, t, 0, n, buf.data());
        gguf::tensor_to_f32(f, t, (t.numel - n) / block * block, n, buf.data());
      } catch (const InputError&) {  // a type that is not read for arithmetic
      }
    }
  } catch (const InputError&) {
  }
  try {
    EngineOptions opts;
    opts.context_length = 8;
    auto m = gguf::open_gguf_model(path, opts);
    const float* logits = m->forward(0, 0);
    if (!logits) __builtin_trap();
  } catch (const InputError&) {
  }
  return 0;
}

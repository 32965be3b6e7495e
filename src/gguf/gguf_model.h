// Running a GGUF file with the engine directly, without importing it: the
// config from the file's hyper-parameter keys (the config.json import_gguf
// would write), the weights from the file's memory map.  F32, F16 and BF16
// tensors are read in place; Q8_0 tensors too (the kernels widen each block
// as d * q, exactly the fp32 values an import writes, so the logits equal
// those of the imported model).  Only q/k projections of the "llama"
// architecture, whose rows llama.cpp keeps in Meta's interleaved order, are
// copied (rows back in the rotate-half order).  Architectures: those
// import_gguf reads ("llama", "qwen2", "qwen3").
#pragma once

#include <memory>
#include <string>

#include "engine/llama_model.h"

namespace chatvec::gguf {

// InputError (one line naming the file and the key or tensor) for a
// malformed or truncated file, an unsupported architecture or tensor type.
std::unique_ptr<LlamaModel> open_gguf_model(const std::string& path, const EngineOptions& opts = {});

}  // namespace chatvec::gguf

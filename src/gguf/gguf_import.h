// GGUF (architectures "llama", "qwen2" and "qwen3") -> Hugging Face model
// directory:
//   model.safetensors  tensors with Hugging Face names, q/k rows back in the
//                      rotate-half order (architecture "llama"); F32, F16 and
//                      BF16 kept bit for bit, Q8_0 dequantised to F32
//                      (rope_freqs.weight, which llama.cpp derives, dropped);
//   config.json        rebuilt from the hyper-parameter keys;
//   tokenizer.gguf     the file's tokenizer.* metadata as a GGUF file without
//                      tensors: export_gguf uses it when a directory has no
//                      tokenizer.json / tokenizer.model.
// Streams tensor by tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/json_util.h"
#include "gguf/gguf_format.h"

namespace chatvec::gguf {

class File;

struct ImportSummary {
  std::string architecture;
  size_t tensors = 0;
  size_t dequantized = 0;  // Q8_0 tensors written as F32
  std::vector<std::string> notes;
};

// `out_dir` must exist.  InputError for an unsupported architecture, tensor
// name or type.
ImportSummary import_gguf(const std::string& gguf_path, const std::string& out_dir,
                          const std::function<void(uint64_t, uint64_t)>& progress = {});

// The config.json import_gguf writes for a file (architectures "llama",
// "qwen2", "qwen3"; InputError for others or for missing keys).
Json gguf_config_json(const File& f);

// The tokenizer.* (and tokenizer.chat_template) key-values of a GGUF file.
std::vector<KeyValue> tokenizer_kvs_of(const File& f);
// Name of the tokenizer sidecar import_gguf writes.
inline constexpr const char* kTokenizerSidecar = "tokenizer.gguf";

}  // namespace chatvec::gguf

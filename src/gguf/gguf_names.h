// The q/k row order llama.cpp's converter uses for its "llama" architecture.
// (The names themselves, Hugging Face <-> GGUF, are in formats/architecture.h.)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "formats/architecture.h"

namespace chatvec::gguf {

// Whether a tensor (GGUF name) is a q or k projection (weight or bias),
// whose rows llama.cpp's "llama" architecture stores in Meta's interleaved
// rotary order.  0: not q/k; 1: q; 2: k.
int qk_kind(std::string_view gguf_name);

// Row permutation between the Hugging Face rotate-half order and Meta's
// interleaved order, for a matrix of `rows` rows split in `heads` heads:
// within each head of size hd, GGUF row 2i+j holds HF row j*hd/2+i.
inline uint64_t hf_row_for_gguf_row(uint64_t r, uint64_t rows, uint64_t heads) {
  const uint64_t hd = rows / heads, h = r / hd, p = r % hd;
  return h * hd + (p % 2) * (hd / 2) + p / 2;
}
inline uint64_t gguf_row_for_hf_row(uint64_t r, uint64_t rows, uint64_t heads) {
  const uint64_t hd = rows / heads, h = r / hd, p = r % hd;
  const uint64_t j = p / (hd / 2), i = p % (hd / 2);
  return h * hd + 2 * i + j;
}

}  // namespace chatvec::gguf

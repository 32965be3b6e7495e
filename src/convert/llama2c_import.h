// Importing a llama2.c checkpoint (Karpathy's run.c format, version 0) as a
// Hugging Face Llama directory.
//
// The .bin file: seven int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier
// is stored separately), then float32 tensors: token_embedding, rms_att, wq,
// wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, the legacy freq_cis_real/imag
// tables (optional, skipped), and wcls when the classifier is not shared.
//
// The output directory gets config.json, generation_config.json,
// model.safetensors (float32, Hugging Face tensor names, q/k rows permuted
// from Meta's interleaved rotary layout to the rotate-half layout),
// tokenizer.model and tokenizer_config.json.  It is assembled in a temporary
// sibling directory and renamed into place when complete.
#pragma once

#include <cstdint>
#include <string>

namespace chatvec {

struct Llama2cHeader {
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  bool has_freq_cis = false;  // set by llama2c_read_header from the file size
  int64_t head_size() const { return dim / n_heads; }
};

// Parse and validate the header of a llama2.c checkpoint of `file_size`
// bytes, checking that the size matches exactly.  InputError naming `what`.
Llama2cHeader llama2c_parse_header(const uint8_t* bytes, uint64_t file_size, const std::string& what);

// Row permutation of q/k weights: Meta's layout pairs rows (2i, 2i+1) of each
// head for rotation; Hugging Face pairs (i, i + head_size/2).  Returns the
// Meta row that becomes Hugging Face row `hf_row`.
inline int64_t meta_row_for_hf_row(int64_t hf_row, int64_t head_size) {
  const int64_t half = head_size / 2;
  const int64_t h = hf_row / head_size, r = hf_row % head_size;
  const int64_t c = r / half, i = r % half;
  return h * head_size + 2 * i + c;
}

struct Llama2cImportOptions {
  std::string model_bin;        // llama2.c checkpoint
  std::string tokenizer_model;  // SentencePiece tokenizer.model
  std::string out_dir;          // must not exist (or be empty)
};

// Returns the parsed header.  Throws InputError on bad input.
Llama2cHeader import_llama2c(const Llama2cImportOptions& opts);

}  // namespace chatvec

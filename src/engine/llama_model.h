// A decoder running on the CPU, one token at a time or in batches, with a
// KV cache: the Llama family (Llama, Mistral, Qwen2, Qwen3) and Gemma 2 / 3.
// The Llama forward pass is the frame; what other architectures change (q/k
// norms, norms on the attention and MLP outputs, GELU, scaled embeddings,
// query scaling, soft-capping, sliding-window layers, rotary per layer type)
// is read from ModelConfig and applied at marked points of the loop.
//
// Weights stay in the checkpoint's memory map in their stored type (f32,
// bf16, f16, or a GGUF file's q8_0) and are read by the fp32 kernels directly; only norm weights
// and biases (small) are converted to fp32 copies.  Activations, KV cache and
// logits are fp32.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/kernels.h"
#include "formats/model_config.h"
#include "formats/checkpoint.h"

namespace chatvec {

// One tensor of a model as the engine reads it.
struct EngineTensor {
  std::string name;  // as the file spells it, for messages
  std::string file;  // the file holding it, for messages
  DType dtype = DType::F32;
  bool q8_0 = false;  // GGUF Q8_0 blocks (see WeightView); dtype is then ignored
  std::vector<uint64_t> shape;  // Hugging Face order: [rows, cols] or [n]
  const uint8_t* data = nullptr;  // valid as long as the source lives
};

// Where a model's weights come from, by Hugging Face tensor name: a
// checkpoint directory (LlamaModel::open) or a GGUF file (gguf/gguf_model.h).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The file or directory, for messages.
  virtual const std::string& path() const = 0;
  // nullopt when the model has no such tensor.  Throws InputError for a
  // tensor that cannot be read.
  virtual std::optional<EngineTensor> find(const std::string& hf_name) = 0;
};

struct EngineOptions {
  // Largest number of positions (prompt + generated) the KV cache holds.
  // 0: min(max_position_embeddings, 4096).
  int64_t context_length = 0;
};

class LlamaModel {
 public:
  // Open a Hugging Face model directory (config.json + safetensors).  Throws
  // InputError naming the file, field or tensor on any problem.
  static std::unique_ptr<LlamaModel> open(const std::string& dir, const EngineOptions& opts = {});
  // A model from any weight source and its config (GGUF files: see
  // gguf/gguf_model.h).
  static std::unique_ptr<LlamaModel> open(ModelConfig config, std::unique_ptr<WeightSource> weights,
                                          const EngineOptions& opts = {});

  const ModelConfig& config() const { return config_; }
  // The checkpoint of a model opened from a directory; null otherwise.
  const Checkpoint* checkpoint_or_null() const { return ckpt_; }
  // The same for directory models (precondition: checkpoint_or_null()).
  const Checkpoint& checkpoint() const { return *ckpt_; }
  // The directory or file the model was opened from.
  const std::string& path() const { return source_->path(); }
  int64_t context_length() const { return ctx_; }
  // The stored type of the large weights ("BF16" ...), for reports.
  DType weight_dtype() const { return weight_dtype_; }

  // Run `token` at position `pos` (0 <= pos < context_length(); the cache
  // holds positions < pos from earlier calls, which are kept).  Returns the
  // vocab_size logits, valid until the next call.
  const float* forward(int64_t token, int64_t pos) { return forward_batch(&token, 1, pos); }

  // Run tokens[0..n) at positions pos..pos+n-1 in batches of kMaxBatch, each
  // weight row read once per batch (prompt processing).  Returns the logits
  // of the last token, or with `all_logits` (n <= kMaxBatch) those of every
  // token as [n, vocab_size].  Results are bit-identical to n forward() calls.
  const float* forward_batch(const int64_t* tokens, int64_t n, int64_t pos, bool all_logits = false);
  static constexpr int64_t kMaxBatch = 64;

 private:
  struct Layer {
    WeightView wq, wk, wv, wo, gate, up, down;
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv, bo;
    // Other architectures (empty when unused): q/k norms over each head
    // (Qwen3, Gemma 3), norms on the attention and MLP outputs (Gemma).
    std::vector<float> q_norm, k_norm, post_attn_norm, post_ffn_norm;
    int64_t window = 0;      // sliding window of this layer (0: none)
    const float* cos = nullptr;  // this layer's rotary tables, [ctx, head_dim/2]
    const float* sin = nullptr;
  };
  LlamaModel(std::unique_ptr<WeightSource> source, ModelConfig config);
  WeightView matrix(const std::string& name, int64_t rows, int64_t cols);
  std::vector<float> vector(const std::string& name, int64_t n);
  // A norm weight as fp32, with Gemma's (1 + w) folded in.
  std::vector<float> norm_weight(const std::string& name, int64_t n);
  void attention(int64_t layer, int64_t pos, int64_t n);
  void run_batch(const int64_t* tokens, int64_t n, int64_t pos, bool logits, bool all_logits);
  // RMSNorm over each head of q and k (the rows of q_ and k_ of n tokens).
  void qk_norm(const Layer& L, int64_t n);
  // rows[b] = rmsnorm(rows[b]) for n rows of hidden_size, stride `stride`.
  void norm_rows(float* rows, int64_t n, int64_t stride, const std::vector<float>& weight);

  std::unique_ptr<WeightSource> source_;
  const Checkpoint* ckpt_ = nullptr;  // in source_, for directory models
  ModelConfig config_;
  DType weight_dtype_ = DType::F32;
  int64_t ctx_ = 0;
  WeightView embed_, lm_head_;
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;
  std::vector<float> cos_, sin_;  // [ctx, head_dim/2]
  std::vector<float> local_cos_, local_sin_;  // Gemma 3's sliding layers
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  // copies of misaligned tensors
  std::unique_ptr<float[]> key_cache_, value_cache_;  // [layers, ctx, kv_dim]
  std::vector<float> x_, xb_, q_, k_, v_, att_out_, scores_, hb_, hb2_, logits_;
};

}  // namespace chatvec

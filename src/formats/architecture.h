// What chatvec knows about model architectures, as data, in one place.
//
// - The weights of a decoder by role (token embedding, q projection, final
//   norm, ...), with their Hugging Face names and the names llama.cpp's GGUF
//   files give them.  The engine, the trainer, the llama2.c import and the
//   GGUF export and import all name tensors through this table.
// - Which tensors are vocabulary-shaped (one row per token): the merge's
//   vocabulary policies apply to them.
// - The architectures (config.json "architectures") and what chatvec does
//   with each: the merge pairs tensors by name and works for any of them; the
//   engine and the GGUF export need to know the architecture.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chatvec {

// The weights of a decoder by what they do.  Per-layer roles live under
// "model.layers.N." (Hugging Face) and "blk.N." (GGUF).
enum class WeightRole {
  TokenEmbedding,
  FinalNorm,
  LmHead,
  AttnNorm,       // before attention
  Q, K, V, O,
  QBias, KBias, VBias, OBias,
  QNorm, KNorm,   // RMSNorm over each head of q / k (Qwen3, Gemma 3)
  AttnPostNorm,   // on the attention output, before the residual add (Gemma 2/3)
  FfnNorm,        // before the MLP
  FfnPostNorm,    // on the MLP output, before the residual add (Gemma 2/3)
  Gate, Up, Down,
  GateBias, UpBias, DownBias,
  RotaryInvFreq,  // a buffer some checkpoints carry; recomputed by llama.cpp, not exported
};

// Where a layer's norms sit, which decides what Hugging Face's
// "post_attention_layernorm" means: the norm before the MLP in Llama-style
// pre-norm layers, the norm on the attention output in Gemma 2/3's
// "sandwich" layers (whose pre-MLP norm is "pre_feedforward_layernorm").
enum class NormLayout { PreNorm, Sandwich };

struct WeightName {
  WeightRole role;
  bool per_layer;
  std::string_view hf;    // full name, or the suffix after "model.layers.N."
  std::string_view gguf;  // full name, or the suffix after "blk.N."; empty: not in GGUF files
  // The layouts whose checkpoints use this name (both when unset).
  std::optional<NormLayout> only_in = std::nullopt;
};

// Every name, roles in the order above.
const std::vector<WeightName>& weight_names();

// The Hugging Face name of a role ("model.layers.3.self_attn.q_proj.weight").
// `layer` is required for per-layer roles and ignored otherwise.
std::string hf_weight_name(WeightRole role, int64_t layer = -1, NormLayout layout = NormLayout::PreNorm);

// A Hugging Face name split into its role and layer (layer -1 for global
// roles); nullopt for names outside the table.
struct NamedWeight {
  WeightRole role;
  int64_t layer;
};
std::optional<NamedWeight> parse_hf_weight_name(std::string_view hf, NormLayout layout = NormLayout::PreNorm);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; an empty
// string for weights GGUF files do not hold (rotary buffers); nullopt for
// names outside the table.
std::optional<std::string> hf_to_gguf_name(std::string_view hf, NormLayout layout = NormLayout::PreNorm);
// The inverse (nullopt for names outside the table).
std::optional<std::string> gguf_to_hf_name(std::string_view gguf, NormLayout layout = NormLayout::PreNorm);
// The role of a GGUF name (nullopt outside the table).
std::optional<NamedWeight> parse_gguf_weight_name(std::string_view gguf, NormLayout layout = NormLayout::PreNorm);

// Is this tensor vocabulary-shaped (the token embedding or the LM head, by
// any of the names checkpoints use for them)?
bool is_vocab_tensor(std::string_view name);

// An architecture, as config.json's "architectures" names it.
struct ArchitectureInfo {
  std::string_view hf_name;    // "LlamaForCausalLM"
  std::string_view gguf_arch;  // llama.cpp's general.architecture ("llama"); empty: none
  bool engine = false;         // chatvec generate/chat/perplexity/eval run it
  bool gguf_export = false;    // chatvec export gguf writes it
  bool gguf_import = false;    // chatvec export safetensors reads it back (GGUF -> HF directory)
  // llama.cpp's "llama" architecture stores q/k rows in Meta's interleaved
  // rotary order (the export permutes them); others keep Hugging Face's.
  bool gguf_permute_qk = false;
  NormLayout layout = NormLayout::PreNorm;
  // Gemma's RMSNorm scales by (1 + w); llama.cpp's gemma graphs scale by the
  // stored weight, so its converter stores every "*norm.weight" as 1 + w.
  bool gguf_norm_plus_one = false;
  // llama.cpp's graph always uses the token embedding as the LM head (its
  // gemma2 has no output.weight): an lm_head.weight is left out of the file.
  bool gguf_embedding_head = false;
  // Why chatvec cannot run or export it (for architectures listed only to
  // say so).
  std::string_view note = {};
};

// The architectures chatvec knows, and one of them by name (nullptr when
// unknown).
const std::vector<ArchitectureInfo>& architectures();
const ArchitectureInfo* find_architecture(std::string_view hf_name);
// The architecture a GGUF file of llama.cpp architecture `gguf_arch` is
// imported as (nullptr when none is).
const ArchitectureInfo* find_gguf_import_architecture(std::string_view gguf_arch);
// The norm layout of an architecture (PreNorm when unknown).
NormLayout norm_layout_of(std::string_view hf_name);

// What chatvec does with an architecture, for `inspect`: the merge pairs
// tensors by name and works for any; the rest as the table says (nothing for
// an architecture it does not know).
struct ArchitectureSupport {
  std::string architecture;  // config.json's name
  bool known = false;
  bool merge = true;
  bool engine = false, gguf_export = false, gguf_import = false;
  std::string gguf_arch;  // llama.cpp's name when exported
  std::string note;
};
ArchitectureSupport architecture_support(std::string_view hf_name);
// One line: "Gemma2ForCausalLM: merge yes, engine yes, GGUF export yes
// (llama.cpp gemma2), GGUF import no".
std::string describe(const ArchitectureSupport& s);
// A GGUF file's general.architecture: whether chatvec reads it back, as
// which architecture (one line, for `inspect MODEL.gguf`).
std::string describe_gguf_architecture(std::string_view gguf_arch);

}  // namespace chatvec

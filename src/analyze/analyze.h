// `chatvec analyze`: what a chat vector looks like before it is used.
//
// For base B, chat C and optionally a target T, per tensor (then per layer,
// per module group and in total), with δc = C − B and δt = T − B computed
// element by element in float64:
//
//   ‖δc‖, ‖δc‖/‖B‖           the size of the chat vector, absolute and relative
//   ‖δt‖/‖B‖                  how far the target moved from the base
//   cos(δc, δt)               whether both moved the same way
//   sign agreement            of the elements where δc ≠ 0 and δt ≠ 0, the
//                             share where sign(δc) = sign(δt)
//   top 1/10/25 % mass        of the k = ⌈q·n⌉ elements with the largest |δc|,
//                             their share of ‖δc‖₁ and of ‖δc‖₂² (exact: the
//                             k-th largest |δc| is found in the first pass
//                             around an estimate from a sample, or else by
//                             radix selection over the bits of |δc|, in
//                             further passes)
//   share of the total        ‖δc‖₂² of the tensor / Σ over all tensors
//
// Tensors are paired exactly as `chatvec merge` pairs them (with a target)
// or `chatvec extract` (without): the same plan (merge/plan.h), the same
// vocabulary policy (merge/vocab_policy.h), so vocabulary tensors are
// compared on the rows the merge would combine; rows only the chat model or
// only the target has are reported apart.  Sums over a tensor run over fixed
// blocks of elements, each in 8 fixed lanes, the blocks added in order: the
// figures do not depend on the number of threads or the chunk size.  See
// docs/analyze.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/json_util.h"
#include "formats/architecture.h"
#include "merge/pipeline.h"
#include "merge/vocab_policy.h"

namespace chatvec {

struct AnalyzeJob {
  std::string base, chat, target;  // target optional
  std::vector<std::string> include, exclude;
  EmbeddingPolicy embeddings = EmbeddingPolicy::Auto;  // with a target, as merge
  bool transplant_special_tokens = true;
  // Elements of one chunk: the unit of streaming (the input pages of one
  // chunk are held, the next one asked for, then handed back).  Rounded up
  // to kAnalyzeBlock.
  uint64_t chunk_elements = uint64_t(1) << 24;
  // Estimate each top-fraction threshold from a sample and count a window
  // around it in the first pass (false: radix passes only).
  bool estimate = true;
  int threads = 0;  // 0: all cores
};

// Elements per summation block (sums are added block by block, in order).
constexpr uint64_t kAnalyzeBlock = 16384;

// Sums over a set of elements (a tensor, a layer, a group).
struct DeltaSums {
  uint64_t elements = 0;
  double base_sq = 0;    // Σ B²
  double chat_sq = 0;    // Σ δc²
  double target_sq = 0;  // Σ δt²  (with a target)
  double dot = 0;        // Σ δc·δt
  double chat_l1 = 0;    // Σ |δc|
  uint64_t chat_nonzero = 0;   // elements with δc ≠ 0
  uint64_t both_nonzero = 0;   // δc ≠ 0 and δt ≠ 0
  uint64_t sign_agree = 0;     // of those, sign(δc) = sign(δt)
  void add(const DeltaSums& o);
  // Derived figures; nullopt where undefined (a zero denominator).
  std::optional<double> rel_chat() const;
  std::optional<double> rel_target() const;
  std::optional<double> cosine() const;
  std::optional<double> sign_agreement() const;
};

// The mass of the largest-|δc| elements of one tensor.
struct TopMass {
  int percent = 0;         // 1, 10, 25
  uint64_t k = 0;          // ⌈percent·n/100⌉ elements
  double threshold = 0;    // the k-th largest |δc|
  std::optional<double> l1_share, l2_share;  // of Σ|δc| and of Σδc²
};

// Vocabulary tensors: what the policy did with their rows.
struct RowSummary {
  uint64_t combined = 0;     // rows in the figures
  uint64_t chat_only = 0;    // the chat model's rows of tokens the base lacks (transplanted)
  uint64_t target_only = 0;  // target rows with no base row (kept as the target's)
  uint64_t base_only = 0;    // base rows the chat model has no row for (without a target)
  double chat_only_sq = 0;   // Σ of those chat rows' squares
  double target_only_sq = 0; // Σ of those target rows' squares
};

struct TensorAnalysis {
  std::string name;
  std::vector<uint64_t> shape;  // as stored in the chat model
  std::string dtype;            // the chat model's
  int64_t layer = -1;           // -1: not in a layer
  std::string group;            // attention, mlp, norms, embeddings, lm_head, other
  DeltaSums sums;
  std::vector<TopMass> top;     // 1, 10, 25 %
  double share = 0;             // chat_sq / total chat_sq (0 when the total is 0)
  std::optional<RowSummary> rows;  // vocabulary tensors compared by row map
  int passes = 1;               // reads of the inputs (1 when pass 1 settled every top fraction)
};

struct LayerAnalysis {
  int64_t layer = 0;
  DeltaSums sums;
  // 1, 10, 25 % of all the layer's elements together (the k largest |δc|
  // among them; shares of the layer's Σ|δc| and Σδc²).
  std::vector<TopMass> top;
  int passes = 0;  // reads of the layer's tensors beyond their own scans, for `top`
  std::map<std::string, DeltaSums> groups;
};

struct AnalyzeResult {
  std::string base, chat, target;
  bool has_target = false;
  std::vector<std::string> vocabulary;        // report lines of the vocabulary decision
  std::vector<TensorAnalysis> tensors;        // in the plan's order
  std::vector<LayerAnalysis> layers;          // by layer index
  std::map<std::string, DeltaSums> groups;
  DeltaSums total;
  std::vector<std::pair<std::string, std::string>> skipped;  // name, why
  uint64_t chunk_elements = 0;
  uint64_t bytes_read = 0;  // input bytes of the analysed tensors (each once)
  double seconds = 0;
};

// Run it.  InputError (nothing written) for a bad input; warnings and
// progress go to `report`.
AnalyzeResult analyze(const AnalyzeJob& job, JobReporter& report);

// Every figure as JSON (docs/analyze.md lists the fields).
Json analysis_json(const AnalyzeResult& r);
// The readable report: totals, groups, the `top` tensors by share, one line
// per layer.
std::string analysis_table(const AnalyzeResult& r, size_t top);
// A plot per layer: ‖δc‖/‖B‖ and ‖δt‖/‖B‖ (whole layer, attention, MLP) and
// cos(δc, δt) and sign agreement, against the layer index.  Standalone SVG.
std::string analysis_svg(const AnalyzeResult& r);

// The group of a tensor name (by architecture.h's roles; "other" when
// unknown) and its layer (-1 outside layers).
std::string tensor_group(const std::string& name, NormLayout layout, int64_t* layer);

}  // namespace chatvec

// What is added, tensor by tensor: the ratio schedule of a chat vector and
// the operations on the vector itself (never on the target's weights).
//
// These are the job-side descriptions, as flags and recipes spell them; the
// plan (plan.h) resolves them to one ratio and one set of operations per
// tensor term, so that the executor never parses or matches anything.
// docs/operations.md is the user's description of every rule here.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace chatvec {

// --ratio-for 'REGEX=VALUE': tensors whose Hugging Face name the regex finds
// (std::regex_search, ECMAScript) get VALUE instead of the schedule's.
struct RatioOverride {
  std::string pattern;
  double value = 0;
  bool operator==(const RatioOverride&) const = default;
};

// A ratio that may vary by layer and by tensor:
//
//   points     one value: the same ratio everywhere; several: spread evenly
//              over layers 0..L-1 (the first at layer 0, the last at layer
//              L-1) and interpolated linearly in between, as mergekit's
//              gradient lists;
//   overrides  first match wins, before the points;
//   tensors outside the layers (no "layers.N." in the name): the embeddings
//              get the value at layer 0 (the first point), every other one
//              (final norm, LM head) the value at layer L-1 (the last point).
struct RatioSchedule {
  std::vector<double> points{1.0};
  std::vector<RatioOverride> overrides;

  RatioSchedule() = default;
  RatioSchedule(double constant) : points{constant} {}  // NOLINT: a number is a schedule
  bool is_constant() const { return points.size() == 1 && overrides.empty(); }
  // The one value of a constant schedule (the first point otherwise).
  double constant() const { return points.front(); }
  // "0.5", "0.2,1,0.5", with " [regex=v, ...]" for overrides: for messages.
  std::string to_string() const;
  // The points as --ratio spells them ("0.2,1,0.5").
  std::string points_string() const;
  bool operator==(const RatioSchedule&) const = default;
};

// "0.5" or "0.2,1.0,0.5" (finite numbers, at least one).  InputError naming
// `what` (e.g. "--ratio") on anything else.
std::vector<double> parse_ratio_points(const std::string& text, const std::string& what);
// "REGEX=VALUE", split at the last '='.  InputError naming `what`.
RatioOverride parse_ratio_override(const std::string& text, const std::string& what);

// The regexes of --ratio-for, --include and --exclude (and of recipes) are
// matched against tensor names with bounded time and stack: a pattern is at
// most kMaxNamePattern bytes and, with libstdc++, runs on its polynomial
// (Thompson NFA) executor, which has no back-references; a name matched is at
// most kMaxMatchedName bytes.  InputError, one line naming `what` and the
// pattern (or the tensor), for anything else or an error while matching.
constexpr size_t kMaxNamePattern = 256;
constexpr size_t kMaxMatchedName = 1024;
std::regex compile_name_pattern(const std::string& pattern, const std::string& what);
bool name_matches(const std::string& name, const std::regex& re, const std::string& pattern, const std::string& what);

// The layer index of a Hugging Face tensor name ("model.layers.3.mlp..." ->
// 3), or -1 outside the layers.
int64_t layer_of(const std::string& name);

// A schedule with its regexes compiled, for `layers` layers.  Throws
// InputError when the schedule has more points than the model has layers, or
// a regex does not compile.
class ResolvedSchedule {
 public:
  ResolvedSchedule(const RatioSchedule& s, int64_t layers, const std::string& what);
  double ratio_for(const std::string& name) const;
  // Overrides no tensor name has matched yet (for the warning).
  std::vector<std::string> unmatched() const;
  // What decided the ratio of the last name: "layer 3", "override REGEX",
  // "embeddings", "outside the layers", "constant".
  std::string reason_for(const std::string& name) const;

 private:
  RatioSchedule s_;
  int64_t layers_;
  std::vector<std::regex> re_;
  mutable std::vector<bool> matched_;
  double at_layer(double layer) const;
};

// How magnitude pruning rescales what it keeps.
enum class PruneRescale { None, L1, L2 };

// Operations on each chat vector, in this order, before its ratio:
//   1. DARE: drop each element with probability p, multiply the rest by
//      1/(1-p);
//   2. magnitude pruning: keep the elements whose |delta| is at least the
//      ceil(keep*n)-th largest of the tensor; optionally rescale the kept
//      ones so that the L1 or L2 norm stays what it was;
//   3. norm clipping: scale the vector so that ||delta||_2 <= clip *
//      ||target tensor||_2;
// then the ratio, then the sum over vectors - or, with TIES, the elected
// sign and the disjoint mean of the agreeing (scaled) vectors.
struct VectorOps {
  double dare = 0;  // drop probability p in [0, 1); 0: off
  uint64_t seed = 0;
  double keep = 1;  // magnitude pruning: fraction kept, in (0, 1]; 1: off
  PruneRescale rescale = PruneRescale::None;
  double clip = 0;  // > 0: clip to clip * ||target||; 0: off
  bool ties = false;
  bool any() const { return dare > 0 || keep < 1 || clip > 0 || ties; }
  bool operator==(const VectorOps&) const = default;
  // "dare p=0.1 seed=0, magnitude keep=0.5 rescale=l2, clip 0.5, ties" or "none".
  std::string to_string() const;
};

// Range checks, one line each (InputError): p outside [0,1), keep outside
// (0,1], clip negative or not finite.
void check_vector_ops(const VectorOps& ops);

const char* rescale_name(PruneRescale r);
std::optional<PruneRescale> rescale_from_name(const std::string& s);

}  // namespace chatvec

// The recipe and ratio-schedule parsers (src/merge/recipe.h, schedule.h).
//
// Input starting with '{': a JSON recipe, read as `merge --recipe` reads it;
// a recipe that is accepted must write back (recipe_to_json) to a recipe
// that reads again to the same JSON.  Otherwise lines: the first is a
// --ratio value, each further line up to a line "--" a --ratio-for
// REGEX=VALUE (also tried as --include / --exclude patterns), the lines after
// it tensor names.  Accepted schedules are resolved for a 4-layer model and
// asked the ratio of a few real names and of the given ones.
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json_util.h"
#include "fuzz_common.h"
#include "merge/plan.h"
#include "merge/recipe.h"
#include "merge/schedule.h"

using namespace chatvec;

namespace {

const std::vector<std::string> kNames = {
    "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
    "model.layers.17.input_layernorm.weight", "model.norm.weight", "lm_head.weight"};

void exercise(const RatioSchedule& s, const std::vector<std::string>& include, const std::vector<std::string>& exclude,
              const std::vector<std::string>& names) {
  try {
    ResolvedSchedule r(s, 4, "--ratio");
    for (const auto& n : kNames) (void)r.ratio_for(n), (void)r.reason_for(n);
    for (const auto& n : names) (void)r.ratio_for(n);
    (void)r.unmatched();
  } catch (const InputError&) {
  }
  try {
    const TensorSelection sel = make_selection(include, exclude);
    for (const auto& n : kNames) (void)sel.selected(n);
    for (const auto& n : names) (void)sel.selected(n);
  } catch (const InputError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(fuzz::as_text(data, size));
  if (!text.empty() && text[0] == '{') {
    try {
      const MergeJob job = recipe_from_json(parse_json_strict(text, "fuzz.json"), "/fuzz");
      const Json back = recipe_to_json(job);
      const MergeJob again = recipe_from_json(back, "/fuzz");
      if (recipe_to_json(again) != back) __builtin_trap();
      exercise(job.ratio, job.include, job.exclude, {});
      for (const auto& v : job.vectors) exercise(v.ratio, {}, {}, {});
    } catch (const InputError&) {
    }
    return 0;
  }
  std::vector<std::string> lines;
  for (size_t start = 0; start <= text.size();) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  RatioSchedule s;
  std::vector<std::string> patterns, names;
  try {
    s.points = parse_ratio_points(lines[0], "--ratio");
  } catch (const InputError&) {
  }
  size_t i = 1;
  for (; i < lines.size() && lines[i] != "--"; ++i) {
    try {
      s.overrides.push_back(parse_ratio_override(lines[i], "--ratio-for"));
      patterns.push_back(s.overrides.back().pattern);
    } catch (const InputError&) {
    }
  }
  for (++i; i < lines.size(); ++i) names.push_back(lines[i]);
  (void)s.to_string();
  exercise(s, patterns, patterns, names);
  return 0;
}

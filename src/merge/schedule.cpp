#include "merge/schedule.h"

#include <cmath>
#include <cstdlib>
#include <fmt/core.h>

#include "core/error.h"
#include "formats/architecture.h"

namespace chatvec {

namespace {

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(out);
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::string num(double v) { return fmt::format("{}", v); }

}  // namespace

std::vector<double> parse_ratio_points(const std::string& text, const std::string& what) {
  std::vector<double> points;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    double v;
    if (!parse_number(item, v))
      throw InputError(what + " must be a finite number or a comma-separated list of them (e.g. 0.2,1.0,0.5): \"" +
                       item + "\" in \"" + text + "\"");
    points.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return points;
}

RatioOverride parse_ratio_override(const std::string& text, const std::string& what) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0)
    throw InputError(what + " \"" + text + "\": expected REGEX=VALUE, e.g. 'embed_tokens|lm_head=0'");
  RatioOverride o;
  o.pattern = text.substr(0, eq);
  if (!parse_number(trim(text.substr(eq + 1)), o.value))
    throw InputError(what + " \"" + text + "\": \"" + text.substr(eq + 1) + "\" is not a finite number");
  return o;
}

std::string RatioSchedule::points_string() const {
  std::string s;
  for (size_t i = 0; i < points.size(); ++i) s += (i ? "," : "") + num(points[i]);
  return s;
}

std::string RatioSchedule::to_string() const {
  std::string s = points_string();
  if (!overrides.empty()) {
    s += " [";
    for (size_t i = 0; i < overrides.size(); ++i)
      s += (i ? ", " : "") + overrides[i].pattern + "=" + num(overrides[i].value);
    s += "]";
  }
  return s;
}

std::regex compile_name_pattern(const std::string& pattern, const std::string& what) {
  if (pattern.size() > kMaxNamePattern)
    throw InputError(fmt::format("{} \"{}...\": a pattern of {} bytes (at most {})", what, pattern.substr(0, 40),
                                 pattern.size(), kMaxNamePattern));
  // libstdc++'s regex compiler reads the number of a back-reference (\N)
  // or of a repetition count ({N}, {N,M}) into a long without checking for
  // overflow: `\55555555555555555555` was signed overflow (UB, found by
  // fuzz_recipe).  No name pattern needs more than a few digits there.
  constexpr size_t kMaxDigits = 5;
  auto digits_at = [&](size_t i) {
    size_t n = 0;
    while (i + n < pattern.size() && pattern[i + n] >= '0' && pattern[i + n] <= '9') ++n;
    return n;
  };
  bool in_braces = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    size_t n = 0;
    if (pattern[i] == '\\') {
      n = digits_at(i + 1);
      ++i;  // the escaped character is not special
    } else if (pattern[i] == '{') {
      in_braces = true;
      n = digits_at(i + 1);
    } else if (in_braces && pattern[i] == ',') {
      n = digits_at(i + 1);
    } else if (pattern[i] == '}') {
      in_braces = false;
    }
    if (n > kMaxDigits)
      throw InputError(fmt::format("{} \"{}\": a back-reference or repetition count of {} digits (at most {})", what,
                                   pattern, n, kMaxDigits));
  }
  try {
#ifdef __GLIBCXX__
    return std::regex(pattern, std::regex::ECMAScript | std::regex_constants::__polynomial);
#else
    return std::regex(pattern, std::regex::ECMAScript);
#endif
  } catch (const std::regex_error& e) {
    throw InputError(what + " \"" + pattern + "\": invalid regular expression: " + e.what() +
                     (e.code() == std::regex_constants::error_complexity ? " (back-references are not supported)" : ""));
  }
}

bool name_matches(const std::string& name, const std::regex& re, const std::string& pattern, const std::string& what) {
  if (name.size() > kMaxMatchedName)
    throw InputError(fmt::format("tensor \"{}...\": a name of {} bytes is longer than {} {} can match", name.substr(0, 40),
                                 name.size(), kMaxMatchedName, what));
  try {
    return std::regex_search(name, re);
  } catch (const std::regex_error& e) {
    throw InputError(what + " \"" + pattern + "\" on tensor " + name + ": " + e.what());
  }
}

int64_t layer_of(const std::string& name) {
  // "model.layers.N." (and any prefix before "layers.N.").
  size_t pos = 0;
  while ((pos = name.find("layers.", pos)) != std::string::npos) {
    if (pos == 0 || name[pos - 1] == '.') {
      size_t i = pos + 7, j = i;
      while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
      if (j > i && j - i < 10 && (j == name.size() || name[j] == '.')) return std::stoll(name.substr(i, j - i));
    }
    pos += 7;
  }
  return -1;
}

ResolvedSchedule::ResolvedSchedule(const RatioSchedule& s, int64_t layers, const std::string& what)
    : s_(s), layers_(std::max<int64_t>(layers, 1)) {
  if (s.points.empty()) throw InputError(what + ": an empty ratio schedule");
  for (double v : s.points)
    if (!std::isfinite(v)) throw InputError(what + ": ratios must be finite numbers");
  if (int64_t(s.points.size()) > layers_)
    throw InputError(fmt::format("{} \"{}\": {} points but the model has {} layers (at most one point per layer)", what,
                                 s.points_string(), s.points.size(), layers));
  for (const auto& o : s.overrides) {
    if (!std::isfinite(o.value)) throw InputError(what + " override \"" + o.pattern + "\": not a finite number");
    re_.push_back(compile_name_pattern(o.pattern, "--ratio-for"));
  }
  matched_.assign(re_.size(), false);
}

double ResolvedSchedule::at_layer(double layer) const {
  const size_t m = s_.points.size();
  if (m == 1 || layers_ <= 1) return s_.points.front();
  const double t = layer * double(m - 1) / double(layers_ - 1);
  const size_t i = std::min(size_t(std::floor(t)), m - 1);
  if (i + 1 >= m) return s_.points.back();
  const double f = t - double(i);
  return s_.points[i] + (s_.points[i + 1] - s_.points[i]) * f;
}

namespace {
bool is_input_embedding(const std::string& name) {
  return is_vocab_tensor(name) && name.find("lm_head") == std::string::npos &&
         name.find("output") == std::string::npos;
}
}  // namespace

double ResolvedSchedule::ratio_for(const std::string& name) const {
  for (size_t i = 0; i < re_.size(); ++i)
    if (name_matches(name, re_[i], s_.overrides[i].pattern, "--ratio-for")) {
      matched_[i] = true;
      return s_.overrides[i].value;
    }
  const int64_t l = layer_of(name);
  if (l >= 0) return at_layer(double(std::min(l, layers_ - 1)));
  return is_input_embedding(name) ? s_.points.front() : s_.points.back();
}

std::string ResolvedSchedule::reason_for(const std::string& name) const {
  for (size_t i = 0; i < re_.size(); ++i)
    if (name_matches(name, re_[i], s_.overrides[i].pattern, "--ratio-for")) return "--ratio-for " + s_.overrides[i].pattern;
  if (s_.points.size() == 1) return "ratio";
  const int64_t l = layer_of(name);
  if (l >= 0) return "layer " + std::to_string(l);
  return is_input_embedding(name) ? "embeddings: first point" : "outside the layers: last point";
}

std::vector<std::string> ResolvedSchedule::unmatched() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < re_.size(); ++i)
    if (!matched_[i]) out.push_back(s_.overrides[i].pattern);
  return out;
}

std::string VectorOps::to_string() const {
  std::vector<std::string> parts;
  if (dare > 0) parts.push_back(fmt::format("dare p={} seed={}", dare, seed));
  if (keep < 1) parts.push_back(fmt::format("magnitude keep={} rescale={}", keep, rescale_name(rescale)));
  if (clip > 0) parts.push_back(fmt::format("clip {}", clip));
  if (ties) parts.push_back("ties");
  if (parts.empty()) return "none";
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? ", " : "") + parts[i];
  return s;
}

void check_vector_ops(const VectorOps& ops) {
  if (!(ops.dare >= 0 && ops.dare < 1))
    throw InputError(fmt::format("--dare {}: the drop probability p must be in [0, 1)", ops.dare));
  if (!(ops.keep > 0 && ops.keep <= 1))
    throw InputError(fmt::format("--keep {}: the fraction kept must be in (0, 1]", ops.keep));
  if (!(ops.clip >= 0 && std::isfinite(ops.clip)))
    throw InputError(fmt::format("--clip {}: must be a finite number >= 0 (0: off)", ops.clip));
}

const char* rescale_name(PruneRescale r) {
  switch (r) {
    case PruneRescale::None: return "none";
    case PruneRescale::L1: return "l1";
    case PruneRescale::L2: return "l2";
  }
  return "none";
}

std::optional<PruneRescale> rescale_from_name(const std::string& s) {
  if (s == "none") return PruneRescale::None;
  if (s == "l1") return PruneRescale::L1;
  if (s == "l2") return PruneRescale::L2;
  return std::nullopt;
}

}  // namespace chatvec

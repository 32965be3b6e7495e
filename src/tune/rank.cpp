// The candidate grid and the ranking rule of `chatvec tune` (no model
// involved: everything here is a pure function of the metrics).
#include <algorithm>
#include <cmath>
#include <fmt/core.h>
#include <limits>
#include <set>

#include "core/error.h"
#include "merge/recipe.h"
#include "tune/tune.h"

namespace chatvec::tune {

std::vector<double> parse_ratio_list(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  size_t start = 0;
  const auto blank = [](const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; };
  if (blank(text)) throw InputError(flag + ": an empty grid (give at least one ratio, e.g. " + flag + " 0,0.5,1)");
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
    if (item.empty()) throw InputError(fmt::format("{} \"{}\": an empty entry (ratios separated by commas)", flag, text));
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !std::isfinite(v))
      throw InputError(fmt::format("{} \"{}\": \"{}\" is not a finite number", flag, text, item));
    if (std::find(out.begin(), out.end(), v) != out.end())
      throw InputError(fmt::format("{} \"{}\": ratio {} given twice", flag, text, v));
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

std::vector<Candidate> ratio_grid(const MergeJob& base_job, const std::vector<double>& ratios) {
  std::vector<Candidate> out;
  for (double r : ratios) {
    Candidate c;
    c.name = fmt::format("ratio-{}", r);
    c.job = base_job;
    c.job.kind = JobKind::Merge;
    c.job.ratio.points = {r};  // overrides (ratio_for) of the base recipe kept
    c.ratio = r;
    c.spec = {{"ratio", r}};
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Candidate> read_alternatives(const std::string& path, const MergeJob& base_job) {
  const Json list = read_json_file(path);
  if (!list.is_array() || list.empty())
    throw InputError(path + ": must be a non-empty JSON list of {\"name\": NAME, \"recipe\": {...}}");
  MergeJob base = with_absolute_paths(base_job);
  base.output.clear();
  const Json base_recipe = recipe_to_json(base);
  const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  std::vector<Candidate> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    const std::string where = fmt::format("{} entry {}", path, i + 1);
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("recipe") ||
        !e["recipe"].is_object())
      throw InputError(where + ": must be {\"name\": NAME, \"recipe\": {...}}");
    for (const auto& [k, v] : e.items())
      if (k != "name" && k != "recipe") throw InputError(where + ": unknown key \"" + k + "\"");
    Json r = base_recipe;
    for (const auto& [k, v] : e["recipe"].items()) r[k] = v;
    if (r.value("kind", "merge") != "merge") throw InputError(where + ": \"kind\": tune merges (\"merge\" only)");
    Candidate c;
    c.name = e["name"].get<std::string>();
    try {
      c.job = recipe_from_json(r, dir);
    } catch (const InputError& err) {
      throw InputError(where + " (" + c.name + "): " + err.what());
    }
    if (!c.job.output.empty()) throw InputError(where + ": \"output\": tune decides where candidates go");
    if (c.job.ratio.is_constant()) c.ratio = c.job.ratio.constant();
    c.spec = e["recipe"];
    out.push_back(std::move(c));
  }
  return out;
}

Json metrics_of(const Json& report, const std::string& lang) {
  Json m = Json::object();
  if (report.contains("summary") && report["summary"].contains(lang))
    for (const auto& [k, v] : report["summary"][lang].items()) m[k] = v;
  if (report.contains("heldout") && report["heldout"].contains(lang)) {
    const Json& h = report["heldout"][lang];
    m["bits_per_byte"] = h.at("bits_per_byte");
    m["perplexity"] = h.at("perplexity");
  }
  return m;
}

const std::vector<std::string>& RankRule::rankable() {
  static const std::vector<std::string> k = {"f1_strict", "exact_strict", "eos_strict", "lang_share_strict",
                                             "valid",     "f1",           "exact",      "eos",
                                             "lang_share"};
  return k;
}

std::string RankRule::describe(const std::string& lang) const {
  std::string s = fmt::format("the highest {} in {} among the candidates with {} >= {}", metric, lang, lang_metric,
                              min_lang_share);
  if (max_bpb_increase >= 0)
    s += fmt::format(" and held-out bits/byte in {} at most {}% above the target's", lang, max_bpb_increase * 100);
  s += "; ties to the smaller ratio, then the earlier candidate. If none qualifies: the highest " + lang_metric +
       " among the candidates within the bits/byte bound, or, when none is within it, the lowest bits/byte";
  return s;
}

namespace {

double num(const Json& m, const std::string& k, double missing) {
  return m.contains(k) && m[k].is_number() ? m[k].get<double>() : missing;
}

}  // namespace

Ranking rank_candidates(const std::vector<RankInput>& c, const RankRule& rule, std::optional<double> reference_bpb) {
  if (c.empty()) throw std::logic_error("rank_candidates: no candidate");
  Ranking r;
  const bool use_bpb = reference_bpb.has_value() && rule.max_bpb_increase >= 0;
  if (use_bpb) r.bpb_limit = *reference_bpb * (1.0 + rule.max_bpb_increase);
  constexpr double inf = std::numeric_limits<double>::infinity();
  struct Key {
    int tier;
    double value;
  };
  std::vector<Key> keys;
  size_t n_qualify = 0, n_within = 0;
  for (const RankInput& x : c) {
    const double share = num(x.metrics, rule.lang_metric, 0.0);
    const double bpb = num(x.metrics, "bits_per_byte", inf);
    const bool within = !use_bpb || bpb <= *r.bpb_limit;
    const bool share_ok = share >= rule.min_lang_share;
    std::vector<std::string> why_not;
    if (!share_ok) why_not.push_back(fmt::format("{} {:.3f} < {}", rule.lang_metric, share, rule.min_lang_share));
    if (!within) why_not.push_back(fmt::format("bits/byte {:.4f} > {:.4f}", bpb, *r.bpb_limit));
    const bool q = share_ok && within;
    r.qualifies.push_back(q);
    std::string verdict = "qualifies";
    if (!q) {
      verdict.clear();
      for (const auto& w : why_not) verdict += (verdict.empty() ? "" : "; ") + w;
    }
    r.verdicts.push_back(verdict);
    n_qualify += q;
    n_within += within;
    if (q)
      keys.push_back({2, num(x.metrics, rule.metric, 0.0)});
    else if (within)
      keys.push_back({1, share});
    else
      keys.push_back({0, -bpb});
  }
  // better(i, j): i ranks above j.
  auto ratio_of = [&](size_t i) { return c[i].ratio.value_or(inf); };
  auto better = [&](size_t i, size_t j) {
    if (keys[i].tier != keys[j].tier) return keys[i].tier > keys[j].tier;
    if (keys[i].value != keys[j].value) return keys[i].value > keys[j].value;
    if (ratio_of(i) != ratio_of(j)) return ratio_of(i) < ratio_of(j);
    return i < j;
  };
  size_t best = 0;
  for (size_t i = 1; i < c.size(); ++i)
    if (better(i, best)) best = i;
  r.best = best;
  r.qualified = r.qualifies[best];
  std::vector<std::string> tied;
  for (size_t i = 0; i < c.size(); ++i)
    if (i != best && keys[i].tier == keys[best].tier && keys[i].value == keys[best].value) tied.push_back(c[i].name);
  std::string tie;
  if (!tied.empty()) {
    tie = "; tied with ";
    for (size_t i = 0; i < tied.size(); ++i) tie += (i ? ", " : "") + tied[i];
    tie += ": the smaller ratio (then the earlier candidate) wins";
  }
  const std::string bound =
      use_bpb ? fmt::format(" and bits/byte <= {:.4f} (the target's {:.4f} + {}%)", *r.bpb_limit, *reference_bpb,
                            rule.max_bpb_increase * 100)
              : std::string(" (bits/byte bound not applied)");
  const std::string& name = c[best].name;
  if (r.qualified) {
    r.why = fmt::format("{}: the highest {} ({:.4f}) of the {} of {} candidates with {} >= {}{}{}", name, rule.metric,
                        keys[best].value, n_qualify, c.size(), rule.lang_metric, rule.min_lang_share, bound, tie);
  } else if (keys[best].tier == 1) {
    r.why = fmt::format("no candidate qualifies ({} >= {}{}); fallback: {} has the highest {} ({:.4f}) of the {} "
                        "candidates within the bits/byte bound{}",
                        rule.lang_metric, rule.min_lang_share, bound, name, rule.lang_metric, keys[best].value,
                        n_within, tie);
  } else {
    r.why = fmt::format("no candidate qualifies ({} >= {}{}) and none is within the bits/byte bound; fallback: {} has "
                        "the lowest bits/byte ({:.4f}){}",
                        rule.lang_metric, rule.min_lang_share, bound, name, -keys[best].value, tie);
  }
  return r;
}

}  // namespace chatvec::tune

// The analysis as JSON, as a table and as an SVG plot.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>

#include "analyze/analyze.h"

namespace chatvec {

namespace {

Json opt(const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); }

Json sums_json(const DeltaSums& s, bool target) {
  Json j = {{"elements", s.elements},
            {"base_sq", s.base_sq},
            {"chat_sq", s.chat_sq},
            {"chat_l1", s.chat_l1},
            {"chat_nonzero", s.chat_nonzero},
            {"base_norm", std::sqrt(s.base_sq)},
            {"chat_delta_norm", std::sqrt(s.chat_sq)},
            {"rel_chat", opt(s.rel_chat())}};
  if (target) {
    j["target_sq"] = s.target_sq;
    j["dot"] = s.dot;
    j["both_nonzero"] = s.both_nonzero;
    j["sign_agree"] = s.sign_agree;
    j["target_delta_norm"] = std::sqrt(s.target_sq);
    j["rel_target"] = opt(s.rel_target());
    j["cosine"] = opt(s.cosine());
    j["sign_agreement"] = opt(s.sign_agreement());
  }
  return j;
}

std::string num(const std::optional<double>& v, const char* f = "{:.4g}") {
  return v ? fmt::format(fmt::runtime(f), *v) : std::string("-");
}

std::string pct(double v) { return fmt::format("{:.1f}%", 100 * v); }
std::string pct(const std::optional<double>& v) { return v ? pct(*v) : std::string("-"); }

Json top_json(const std::vector<TopMass>& tops) {
  Json top = Json::array();
  for (const TopMass& m : tops)
    top.push_back({{"percent", m.percent},
                   {"k", m.k},
                   {"threshold", m.threshold},
                   {"l1_share", opt(m.l1_share)},
                   {"l2_share", opt(m.l2_share)}});
  return top;
}

}  // namespace

Json analysis_json(const AnalyzeResult& r) {
  const bool t = r.has_target;
  Json j;
  j["chatvec_version"] = CHATVEC_VERSION;
  j["base"] = r.base;
  j["chat"] = r.chat;
  j["target"] = t ? Json(r.target) : Json(nullptr);
  j["chunk_elements"] = r.chunk_elements;
  j["vocabulary"] = r.vocabulary;
  j["total"] = sums_json(r.total, t);
  Json g = Json::object();
  for (const auto& [name, s] : r.groups) g[name] = sums_json(s, t);
  j["groups"] = g;
  Json layers = Json::array();
  for (const LayerAnalysis& l : r.layers) {
    Json lj = sums_json(l.sums, t);
    lj["layer"] = l.layer;
    lj["share"] = r.total.chat_sq > 0 ? l.sums.chat_sq / r.total.chat_sq : 0.0;
    Json lg = Json::object();
    for (const auto& [name, s] : l.groups) lg[name] = sums_json(s, t);
    lj["groups"] = lg;
    lj["top"] = top_json(l.top);
    lj["passes"] = l.passes;
    layers.push_back(lj);
  }
  j["layers"] = layers;
  Json tensors = Json::array();
  for (const TensorAnalysis& a : r.tensors) {
    Json tj = sums_json(a.sums, t);
    tj["name"] = a.name;
    tj["shape"] = a.shape;
    tj["dtype"] = a.dtype;
    tj["layer"] = a.layer >= 0 ? Json(a.layer) : Json(nullptr);
    tj["group"] = a.group;
    tj["share"] = a.share;
    tj["passes"] = a.passes;
    tj["top"] = top_json(a.top);
    if (a.rows) {
      const RowSummary& s = *a.rows;
      tj["rows"] = {{"combined", s.combined},       {"chat_only", s.chat_only},
                    {"target_only", s.target_only}, {"base_only", s.base_only},
                    {"chat_only_norm", std::sqrt(s.chat_only_sq)},
                    {"target_only_norm", std::sqrt(s.target_only_sq)}};
    }
    tensors.push_back(tj);
  }
  j["tensors"] = tensors;
  Json skipped = Json::array();
  for (const auto& [name, why] : r.skipped) skipped.push_back({{"name", name}, {"why", why}});
  j["skipped"] = skipped;
  return j;
}

std::string analysis_table(const AnalyzeResult& r, size_t top) {
  const bool t = r.has_target;
  std::string out;
  auto line = [&](const std::string& s) { out += s + "\n"; };
  line(fmt::format("base {}\nchat {}{}", r.base, r.chat, t ? "\ntarget " + r.target : std::string()));
  for (const auto& v : r.vocabulary) line(v);
  const DeltaSums& s = r.total;
  line(fmt::format("{} tensors, {} elements: |chat-base| = {} ({} of |base|){}", r.tensors.size(), s.elements,
                   num(std::sqrt(s.chat_sq)), num(s.rel_chat()),
                   t ? fmt::format("; |target-base| = {} ({} of |base|); cos = {}; sign agreement {}",
                                   num(std::sqrt(s.target_sq)), num(s.rel_target()), num(s.cosine(), "{:.3f}"),
                                   pct(s.sign_agreement()))
                     : std::string()));
  const std::string head_t = t ? "  rel tgt     cos   signs" : "";
  auto stats = [&](const DeltaSums& d) {
    std::string x = fmt::format("{:>9}", num(d.rel_chat()));
    if (t)
      x += fmt::format(" {:>8} {:>7} {:>7}", num(d.rel_target()), num(d.cosine(), "{:.3f}"), pct(d.sign_agreement()));
    return x;
  };
  auto share = [&](const DeltaSums& d) { return r.total.chat_sq > 0 ? pct(d.chat_sq / r.total.chat_sq) : "-"; };

  line("");
  line(fmt::format("{:<12} {:>12} {:>9}{} {:>7}", "group", "elements", "rel chat", head_t, "share"));
  for (const auto& [name, d] : r.groups)
    line(fmt::format("{:<12} {:>12} {}{:>8}", name, d.elements, stats(d), share(d)));

  std::vector<const TensorAnalysis*> order;
  for (const auto& a : r.tensors) order.push_back(&a);
  std::stable_sort(order.begin(), order.end(),
                   [](const TensorAnalysis* a, const TensorAnalysis* b) { return a->share > b->share; });
  if (order.size() > top) order.resize(top);
  line("");
  line(fmt::format("top {} tensors by share of the total |chat-base|^2 (top k%: share of the tensor's |chat-base|^2 "
                   "in its k% largest |chat-base|):",
                   order.size()));
  line(fmt::format("{:>7} {:>9}{} {:>6} {:>6} {:>6}  {}", "share", "rel chat", head_t, "top1", "top10", "top25",
                   "tensor"));
  for (const TensorAnalysis* a : order) {
    std::string tops;
    for (const TopMass& m : a->top) tops += fmt::format(" {:>6}", pct(m.l2_share));
    line(fmt::format("{:>7} {}{}  {}", pct(a->share), stats(a->sums), tops, a->name));
  }

  if (!r.layers.empty()) {
    line("");
    line("per layer (top k%: share of the layer's |chat-base|^2 in the k% largest |chat-base| of all its elements):");
    line(fmt::format("{:>5} {:>9}{} {:>7} {:>9} {:>9} {:>6} {:>6} {:>6}", "layer", "rel chat", head_t, "share", "attn",
                     "mlp", "top1", "top10", "top25"));
    for (const LayerAnalysis& l : r.layers) {
      auto grp = [&](const char* g) {
        auto it = l.groups.find(g);
        return it == l.groups.end() ? std::string("-") : num(it->second.rel_chat());
      };
      std::string tops;
      for (const TopMass& m : l.top) tops += fmt::format(" {:>6}", pct(m.l2_share));
      line(fmt::format("{:>5} {}{:>8} {:>9} {:>9}{}", l.layer, stats(l.sums), share(l.sums), grp("attention"),
                       grp("mlp"), tops));
    }
  }

  for (const auto& a : r.tensors) {
    if (!a.rows) continue;
    const RowSummary& s = *a.rows;
    line(fmt::format("{}: {} rows compared; {} only in the chat model (norm {}), {} only in the target (norm {}){}",
                     a.name, s.combined, s.chat_only, num(std::sqrt(s.chat_only_sq)), s.target_only,
                     num(std::sqrt(s.target_only_sq)),
                     s.base_only ? fmt::format(", {} base rows without a chat row", s.base_only) : std::string()));
  }
  if (!r.skipped.empty()) {
    line(fmt::format("{} tensors not analysed:", r.skipped.size()));
    for (size_t i = 0; i < r.skipped.size() && i < 10; ++i)
      line(fmt::format("  {} ({})", r.skipped[i].first, r.skipped[i].second));
    if (r.skipped.size() > 10) line(fmt::format("  ... and {} more (all in --json)", r.skipped.size() - 10));
  }
  return out;
}

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

struct Series {
  std::string label, color;
  bool dashed;
  std::vector<std::pair<int64_t, double>> points;
};

// One panel: axes, grid, ticks, the series as polylines with markers.
void panel(std::string& svg, double x0, double y0, double w, double h, int64_t lmin, int64_t lmax, double ymin,
           double ymax, const std::string& title, const std::vector<Series>& series) {
  auto X = [&](double l) { return x0 + (lmax > lmin ? (l - double(lmin)) / double(lmax - lmin) : 0.5) * w; };
  auto Y = [&](double v) { return y0 + h - (v - ymin) / (ymax - ymin) * h; };
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-weight=\"bold\">{}</text>\n", x0, y0 - 8, esc(title));
  svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#444\"/>\n",
                     x0, y0, w, h);
  for (int i = 0; i <= 4; ++i) {
    const double v = ymin + (ymax - ymin) * i / 4;
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", x0, Y(v),
                       x0 + w, Y(v));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n", x0 - 4, Y(v) + 4, v);
  }
  const int64_t span = lmax - lmin;
  const int64_t step = std::max<int64_t>(1, (span + 15) / 16);
  for (int64_t l = lmin; l <= lmax; l += step)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", X(double(l)), y0 + h + 14, l);
  double ly = y0 + 14;
  for (const Series& s : series) {
    if (s.points.empty()) continue;
    std::string pts;
    for (const auto& [l, v] : s.points) pts += fmt::format("{:.1f},{:.1f} ", X(double(l)), Y(v));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"{} points=\"{}\"/>\n", s.color,
                       s.dashed ? " stroke-dasharray=\"5,3\"" : "", pts);
    for (const auto& [l, v] : s.points)
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2\" fill=\"{}\"/>\n", X(double(l)), Y(v), s.color);
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"1.5\"{}/>\n",
                       x0 + w + 12, ly - 4, x0 + w + 32, ly - 4, s.color, s.dashed ? " stroke-dasharray=\"5,3\"" : "");
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", x0 + w + 36, ly, esc(s.label));
    ly += 16;
  }
}

}  // namespace

std::string analysis_svg(const AnalyzeResult& r) {
  const double W = 860, x0 = 60, pw = 560, ph = 200;
  const bool t = r.has_target;
  const double H = t ? 820 : 560;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" font-family=\"sans-serif\" "
      "font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H);
  svg += fmt::format("<text x=\"{:.0f}\" y=\"18\" font-size=\"13\">chatvec analyze: {}{}</text>\n", x0,
                     esc("chat " + r.chat), t ? esc(", target " + r.target) : std::string());
  if (r.layers.empty()) {
    svg += fmt::format("<text x=\"{:.0f}\" y=\"60\">no tensor of a layer was analysed</text>\n</svg>\n", x0);
    return svg;
  }
  const int64_t lmin = r.layers.front().layer, lmax = r.layers.back().layer;
  auto layer_series = [&](const std::string& label, const std::string& color, bool dashed, const char* group,
                          std::optional<double> (DeltaSums::*f)() const) {
    Series s{label, color, dashed, {}};
    for (const LayerAnalysis& l : r.layers) {
      const DeltaSums* d = &l.sums;
      if (group) {
        auto it = l.groups.find(group);
        if (it == l.groups.end()) continue;
        d = &it->second;
      }
      if (auto v = (d->*f)()) s.points.emplace_back(l.layer, *v);
    }
    return s;
  };
  std::vector<Series> norms = {
      layer_series("|chat-base| / |base|", "#1f77b4", false, nullptr, &DeltaSums::rel_chat),
      layer_series("  attention", "#1f77b4", true, "attention", &DeltaSums::rel_chat),
      layer_series("  MLP", "#17becf", true, "mlp", &DeltaSums::rel_chat)};
  if (t) {
    norms.push_back(layer_series("|target-base| / |base|", "#d62728", false, nullptr, &DeltaSums::rel_target));
    norms.push_back(layer_series("  attention", "#d62728", true, "attention", &DeltaSums::rel_target));
    norms.push_back(layer_series("  MLP", "#ff7f0e", true, "mlp", &DeltaSums::rel_target));
  }
  double ymax = 0;
  for (const auto& s : norms)
    for (const auto& p : s.points) ymax = std::max(ymax, p.second);
  if (!(ymax > 0)) ymax = 1;
  panel(svg, x0, 50, pw, ph, lmin, lmax, 0, ymax * 1.1, "relative size of the deltas per layer", norms);
  if (t) {
    std::vector<Series> agree = {
        layer_series("cos(chat-base, target-base)", "#2ca02c", false, nullptr, &DeltaSums::cosine),
        layer_series("sign agreement", "#9467bd", false, nullptr, &DeltaSums::sign_agreement),
        layer_series("  cos, attention", "#2ca02c", true, "attention", &DeltaSums::cosine),
        layer_series("  cos, MLP", "#8c564b", true, "mlp", &DeltaSums::cosine)};
    double lo = 0;
    for (const auto& s : agree)
      for (const auto& p : s.points) lo = std::min(lo, p.second);
    panel(svg, x0, 50 + ph + 60, pw, ph, lmin, lmax, lo < 0 ? -1.0 : 0.0, 1.0,
          "agreement of the two deltas per layer", agree);
  }
  // How concentrated each layer's vector is: the share of its |δc|² in its
  // top 1/10/25 % (of all the layer's elements).
  std::vector<Series> conc;
  const char* colors[3] = {"#d62728", "#1f77b4", "#2ca02c"};
  for (size_t q = 0; q < 3; ++q) {
    Series s{"", colors[q], false, {}};
    for (const LayerAnalysis& l : r.layers)
      if (q < l.top.size()) {
        s.label = fmt::format("top {} % of the layer's elements", l.top[q].percent);
        if (l.top[q].l2_share) s.points.emplace_back(l.layer, *l.top[q].l2_share);
      }
    conc.push_back(s);
  }
  panel(svg, x0, 50 + (t ? 2 : 1) * (ph + 60), pw, ph, lmin, lmax, 0.0, 1.0,
        "share of |chat-base|^2 in the largest |chat-base| per layer", conc);
  svg += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" text-anchor=\"middle\">layer</text>\n", x0 + pw / 2, H - 8);
  svg += "</svg>\n";
  return svg;
}

}  // namespace chatvec

// table.md and metrics.svg of `chatvec tune`, from results.json's content.
// The SVG is written by hand: one small panel per metric, the metric against
// the ratio, the chosen candidate marked, the rule's thresholds dashed.
#include <algorithm>
#include <cmath>
#include <fmt/core.h>
#include <limits>

#include "tune/tune.h"

namespace chatvec::tune {

namespace {

std::string num_or_dash(const Json& m, const char* k, const char* f = "{:.3f}") {
  if (!m.contains(k) || !m[k].is_number()) return "-";
  return fmt::format(fmt::runtime(f), m[k].get<double>());
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string short_num(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 10) return fmt::format("{:.1f}", v);
  return fmt::format("{:.3g}", v);
}

}  // namespace

std::string render_table(const Json& r) {
  const std::string lang = r.value("lang", "");
  const Json& ref = r["reference"];
  const bool have_ref = ref.contains("bits_per_byte") && ref["bits_per_byte"].is_number();
  const double ref_bpb = have_ref ? ref["bits_per_byte"].get<double>() : 0.0;
  std::string s = fmt::format("# chatvec tune: {} candidates, target language {}\n\n", r["candidates"].size(), lang);
  s += "| | candidate | ratio | f1* | exact* | eos* | lang* | valid | tokens | bits/byte | vs target | verdict |\n";
  s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  const std::string chosen = r["choice"].value("name", "");
  for (const Json& c : r["candidates"]) {
    const Json& m = c["metrics"];
    std::string vs = "-";
    if (have_ref && m.contains("bits_per_byte") && ref_bpb > 0)
      vs = fmt::format("{:+.1f}%", (m["bits_per_byte"].get<double>() / ref_bpb - 1.0) * 100);
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                     c["name"] == chosen ? "**>**" : "", c["name"].get<std::string>(),
                     c["ratio"].is_number() ? fmt::format("{}", c["ratio"].get<double>()) : std::string("-"),
                     num_or_dash(m, "f1_strict"), num_or_dash(m, "exact_strict"), num_or_dash(m, "eos_strict"),
                     num_or_dash(m, "lang_share_strict"), num_or_dash(m, "valid"), num_or_dash(m, "mean_tokens", "{:.1f}"),
                     num_or_dash(m, "bits_per_byte", "{:.4f}"), vs, c.value("verdict", ""));
  }
  s += fmt::format("\n*: strict metrics (an empty answer or one with U+FFFD is a failure, in no language). "
                   "tokens: mean answer length. Metrics in {}; bits/byte on the held-out {} text.\n\n",
                   lang, lang);
  if (have_ref)
    s += fmt::format("Reference: the target {} itself, {:.4f} bits/byte.\n\n", ref.value("model", ""), ref_bpb);
  else
    s += fmt::format("Reference: no held-out {} text, the bits/byte bound is not applied.\n\n", lang);
  s += "Rule: " + r["rule"].value("text", "") + ".\n\n";
  s += "Choice: " + r["choice"].value("why", "") + ".\n";
  return s;
}

std::string render_svg(const Json& r) {
  struct Panel {
    const char* key;
    const char* title;
    bool unit;  // a share/rate: y from 0 to 1
  };
  static const Panel panels[] = {
      {"f1_strict", "F1 (strict)", true},         {"exact_strict", "exact (strict)", true},
      {"eos_strict", "end of turn (strict)", true}, {"lang_share_strict", "language share (strict)", true},
      {"valid", "valid answers", true},             {"mean_tokens", "answer length (tokens)", false},
      {"bits_per_byte", "held-out bits/byte", false}, {"f1", "F1", true},
      {"exact", "exact", true},                     {"eos", "end of turn", true},
      {"lang_share", "language share", true},
  };
  const int cols = 4, pw = 250, ph = 185, ml = 46, mr = 12, mt = 26, mb = 34;
  const int n_panels = int(std::size(panels));
  const int rows = (n_panels + cols - 1) / cols;
  const Json& cands = r["candidates"];
  const std::string chosen = r["choice"].value("name", "");
  const std::string lang = r.value("lang", "");
  const Json& rule = r["rule"];
  const Json& ref = r["reference"];

  // Candidates with a ratio (the axis), sorted by it; the others listed below.
  struct Pt {
    double x;
    const Json* c;
  };
  std::vector<Pt> pts;
  std::vector<const Json*> off_axis;
  for (const Json& c : cands) {
    if (c["ratio"].is_number())
      pts.push_back({c["ratio"].get<double>(), &c});
    else
      off_axis.push_back(&c);
  }
  std::stable_sort(pts.begin(), pts.end(), [](const Pt& a, const Pt& b) { return a.x < b.x; });
  double xmin = 0, xmax = 1;
  if (!pts.empty()) {
    xmin = pts.front().x;
    xmax = pts.back().x;
  }
  if (xmax - xmin < 1e-9) {
    xmin -= 0.5;
    xmax += 0.5;
  }
  const int extra = 30 + 16 * int(off_axis.size());
  const int W = cols * pw, H = 40 + rows * ph + extra;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H, W, H);
  s += fmt::format("<text x=\"10\" y=\"20\" font-size=\"14\">chatvec tune: metrics in {} against the ratio "
                   "(chosen: {})</text>\n",
                   xml_escape(lang), xml_escape(chosen));
  for (int p = 0; p < n_panels; ++p) {
    const Panel& P = panels[p];
    const int ox = (p % cols) * pw, oy = 40 + (p / cols) * ph;
    const int x0 = ox + ml, x1 = ox + pw - mr, y0 = oy + ph - mb, y1 = oy + mt;
    double ymin = 0, ymax = 1;
    std::vector<double> guides;  // dashed horizontal lines
    if (P.key == std::string(rule.value("lang_metric", "")) && rule.contains("min_lang_share"))
      guides.push_back(rule["min_lang_share"].get<double>());
    if (P.key == std::string("bits_per_byte")) {
      if (ref.contains("bits_per_byte") && ref["bits_per_byte"].is_number()) guides.push_back(ref["bits_per_byte"].get<double>());
      if (rule.contains("bpb_limit") && rule["bpb_limit"].is_number()) guides.push_back(rule["bpb_limit"].get<double>());
    }
    bool any = false;
    if (!P.unit) {
      double lo = std::numeric_limits<double>::infinity(), hi = -lo;
      for (const Pt& pt : pts)
        if ((*pt.c)["metrics"].contains(P.key)) {
          const double v = (*pt.c)["metrics"][P.key].get<double>();
          lo = std::min(lo, v), hi = std::max(hi, v);
          any = true;
        }
      for (double g : guides) lo = std::min(lo, g), hi = std::max(hi, g);
      if (!std::isfinite(lo)) lo = 0, hi = 1;
      if (P.key == std::string("mean_tokens")) lo = 0;
      const double pad = hi - lo < 1e-9 ? std::max(0.5, std::fabs(hi) * 0.05) : (hi - lo) * 0.08;
      ymin = lo == 0 ? 0 : lo - pad;
      ymax = hi + pad;
    }
    auto X = [&](double x) { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); };
    auto Y = [&](double y) { return y0 - (y - ymin) / (ymax - ymin) * (y0 - y1); };
    s += fmt::format("<g>\n<text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>\n", x0, oy + 16, P.title);
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", x0, y1,
                     x1 - x0, y0 - y1);
    for (int k = 0; k <= 4; ++k) {
      const double v = ymin + (ymax - ymin) * k / 4.0;
      s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#eee\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" fill=\"#555\">{}</text>\n",
                       x0 + 1, Y(v), x1 - 1, Y(v), x0 - 4, Y(v) + 4, short_num(v));
    }
    for (const Pt& pt : pts)
      s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n", X(pt.x), y0 + 14,
                       short_num(pt.x));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">ratio</text>\n", (x0 + x1) / 2,
                     y0 + 28);
    for (double g : guides)
      s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#c60\" "
                       "stroke-dasharray=\"4 3\"/>\n",
                       x0, Y(g), x1, Y(g));
    std::string poly;
    for (const Pt& pt : pts) {
      const Json& m = (*pt.c)["metrics"];
      if (!m.contains(P.key)) continue;
      any = true;
      poly += fmt::format("{:.1f},{:.1f} ", X(pt.x), Y(m[P.key].get<double>()));
    }
    if (!poly.empty())
      s += "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"" + poly + "\"/>\n";
    for (const Pt& pt : pts) {
      const Json& m = (*pt.c)["metrics"];
      if (!m.contains(P.key)) continue;
      const bool is_best = (*pt.c)["name"] == chosen;
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{}\" fill=\"{}\"><title>{}: {}</title></circle>\n",
                       X(pt.x), Y(m[P.key].get<double>()), is_best ? 5 : 3, is_best ? "#d22" : "#1f5fa8",
                       xml_escape((*pt.c)["name"].get<std::string>()), short_num(m[P.key].get<double>()));
    }
    if (!any)
      s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">(not measured)</text>\n",
                       (x0 + x1) / 2, (y0 + y1) / 2);
    s += "</g>\n";
  }
  int y = 40 + rows * ph + 16;
  std::string legend = "red: the chosen candidate; dashed: the rule's thresholds";
  if (ref.contains("bits_per_byte") && ref["bits_per_byte"].is_number())
    legend += " (bits/byte: the target's and the bound)";
  s += fmt::format("<text x=\"10\" y=\"{}\" fill=\"#555\">{}</text>\n", y, xml_escape(legend));
  for (const Json* c : off_axis) {
    y += 16;
    const Json& m = (*c)["metrics"];
    s += fmt::format("<text x=\"10\" y=\"{}\">{}{}: f1* {}, eos* {}, lang* {}, bits/byte {} (no single ratio)</text>\n",
                     y, (*c)["name"] == chosen ? "[chosen] " : "", xml_escape((*c)["name"].get<std::string>()),
                     num_or_dash(m, "f1_strict"), num_or_dash(m, "eos_strict"), num_or_dash(m, "lang_share_strict"),
                     num_or_dash(m, "bits_per_byte", "{:.4f}"));
  }
  s += "</svg>\n";
  return s;
}

}  // namespace chatvec::tune

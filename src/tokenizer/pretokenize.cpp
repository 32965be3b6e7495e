#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode.h"

namespace chatvec {

namespace {

constexpr std::string_view kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

using unicode::is_letter;
using unicode::is_number;
using unicode::is_space;

bool is_other(char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }
bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }
char32_t ascii_lower(char32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
size_t contraction(const std::vector<char32_t>& s, size_t i, bool fold_case) {
  size_t n = s.size();
  if (s[i] != '\'' || i + 1 >= n) return 0;
  auto low = [&](char32_t c) { return fold_case ? ascii_lower(c) : c; };
  char32_t a = low(s[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < n) {
    char32_t b = low(s[i + 2]);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

// The whitespace alternatives: \s+(?!\S)|\s+ (and first \s*[\r\n]+ when
// `newline_rule`).  s[i] is whitespace.
size_t whitespace(const std::vector<char32_t>& s, size_t i, bool newline_rule) {
  size_t n = s.size(), k = i;
  while (k < n && is_space(s[k])) ++k;
  if (newline_rule)
    for (size_t m = k; m > i; --m)
      if (is_newline(s[m - 1])) return m;
  if (k == n || k - i == 1) return k;
  return k - 1;
}

size_t match_llama3(const std::vector<char32_t>& s, size_t i, size_t max_digits) {
  size_t n = s.size();
  char32_t c = s[i];
  if (size_t len = contraction(s, i, true)) return i + len;
  if (is_letter(c) || (!is_newline(c) && !is_number(c) && i + 1 < n && is_letter(s[i + 1]))) {
    size_t j = i + 1;
    while (j < n && is_letter(s[j])) ++j;
    return j;
  }
  if (is_number(c)) {
    size_t j = i + 1;
    while (j < n && j - i < max_digits && is_number(s[j])) ++j;
    return j;
  }
  size_t j = (c == ' ' && i + 1 < n && is_other(s[i + 1])) ? i + 1 : i;
  if (is_other(s[j])) {
    while (j < n && is_other(s[j])) ++j;
    while (j < n && is_newline(s[j])) ++j;
    return j;
  }
  return whitespace(s, i, true);
}

size_t match_gpt2(const std::vector<char32_t>& s, size_t i) {
  size_t n = s.size();
  if (size_t len = contraction(s, i, false)) return i + len;
  size_t j = (s[i] == ' ' && i + 1 < n) ? i + 1 : i;
  char32_t c = s[j];
  bool (*cls)(char32_t) = nullptr;
  if (is_letter(c)) cls = is_letter;
  else if (is_number(c)) cls = is_number;
  else if (is_other(c)) cls = is_other;
  if (cls) {
    ++j;
    while (j < n && cls(s[j])) ++j;
    return j;
  }
  return whitespace(s, i, false);
}

}  // namespace

bool recognize_split_pattern(std::string_view regex, SplitPattern& out) {
  if (regex == kLlama3) out = SplitPattern::Llama3;
  else if (regex == kQwen2) out = SplitPattern::Qwen2;
  else if (regex == kGpt2) out = SplitPattern::Gpt2;
  else return false;
  return true;
}

std::vector<std::pair<size_t, size_t>> pretokenize(std::string_view text, SplitPattern pattern) {
  std::vector<char32_t> cps;
  std::vector<uint32_t> off;
  unicode::decode_utf8(text, cps, &off);
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t end;
    switch (pattern) {
      case SplitPattern::Llama3: end = match_llama3(cps, i, 3); break;
      case SplitPattern::Qwen2: end = match_llama3(cps, i, 1); break;
      default: end = match_gpt2(cps, i); break;
    }
    if (end <= i) end = i + 1;
    out.emplace_back(off[i], off[end]);
    i = end;
  }
  return out;
}

}  // namespace chatvec

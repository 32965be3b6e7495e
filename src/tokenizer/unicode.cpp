#include "tokenizer/unicode.h"

#include <algorithm>
#include <iterator>

namespace chatvec::unicode {

namespace {

struct CodeRange {
  char32_t first, last;
};
struct CccEntry {
  char32_t cp;
  uint8_t ccc;
};
struct DecompEntry {
  char32_t cp;
  uint32_t offset;
  uint32_t length;
};
struct ComposeEntry {
  char32_t first, second, composite;
};

#include "tokenizer/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](char32_t c, const CodeRange& r) { return c < r.first; });
  if (it == std::begin(table)) return false;
  --it;
  return cp <= it->last;
}

constexpr char32_t kReplacement = 0xFFFD;

// Length of the valid UTF-8 sequence at s[i], or 0 when invalid.
size_t valid_sequence(std::string_view s, size_t i, char32_t& cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  size_t n;
  char32_t v;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    v = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = b(i + k);
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return 0;
    v = (v << 6) | (d & 0x3F);
  }
  cp = v;
  return n;
}

int ccc_of(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCccTable), std::end(kCccTable), cp,
                             [](const CccEntry& e, char32_t c) { return e.cp < c; });
  return (it != std::end(kCccTable) && it->cp == cp) ? it->ccc : 0;
}

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    auto it = std::lower_bound(std::begin(kDecompTable), std::end(kDecompTable), cp,
                               [](const DecompEntry& e, char32_t c) { return e.cp < c; });
    if (it != std::end(kDecompTable) && it->cp == cp) {
      out.insert(out.end(), kDecompData + it->offset, kDecompData + it->offset + it->length);
      return;
    }
  }
  out.push_back(cp);
}

// The primary composite of (a, b), or 0.
char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(kComposeTable), std::end(kComposeTable), std::make_pair(a, b),
                             [](const ComposeEntry& e, const std::pair<char32_t, char32_t>& k) {
                               return e.first < k.first || (e.first == k.first && e.second < k.second);
                             });
  if (it != std::end(kComposeTable) && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

void decode_utf8(std::string_view text, std::vector<char32_t>& cps, std::vector<uint32_t>* offsets) {
  cps.clear();
  cps.reserve(text.size());
  if (offsets) {
    offsets->clear();
    offsets->reserve(text.size() + 1);
  }
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp;
    size_t n = valid_sequence(text, i, cp);
    if (n == 0) {
      cp = kReplacement;
      n = 1;
    }
    cps.push_back(cp);
    if (offsets) offsets->push_back(static_cast<uint32_t>(i));
    i += n;
  }
  if (offsets) offsets->push_back(static_cast<uint32_t>(text.size()));
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp;
    size_t n = valid_sequence(text, i, cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp;
    size_t n = valid_sequence(text, i, cp);
    if (n) {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    // Maximal subpart: a lead byte followed by as many valid continuation
    // bytes as fit its pattern counts as one error.
    unsigned char c = static_cast<unsigned char>(text[i]);
    size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
    size_t k = 1;
    for (; k < need && i + k < text.size(); ++k) {
      unsigned char d = static_cast<unsigned char>(text[i + k]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      }
      if (d < lo || d > hi) break;
    }
    append_utf8(out, kReplacement);
    i += k;
  }
  return out;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  return in_ranges(kLetterRanges, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}

bool is_space(char32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string nfc(std::string_view text) {
  bool simple = true;
  for (unsigned char c : text)
    if (c >= 0xCC) {  // a lead byte of U+0300 or above
      simple = false;
      break;
    }
  if (simple) return std::string(text);

  std::vector<char32_t> cps, d;
  decode_utf8(text, cps);
  d.reserve(cps.size() + 8);
  for (char32_t cp : cps) decompose(cp, d);
  // Canonical ordering: stable sort of each run of non-starters by class.
  for (size_t i = 0; i < d.size();) {
    if (ccc_of(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc_of(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t a, char32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }
  // Canonical composition.
  std::vector<char32_t> out;
  out.reserve(d.size());
  long starter = -1;  // index in out of the last starter
  int last_ccc = -1;  // class of the last character appended after the starter
  for (char32_t c : d) {
    int cc = ccc_of(c);
    if (starter >= 0) {
      bool blocked = last_ccc != -1 && (last_ccc == 0 || last_ccc >= cc);
      if (!blocked) {
        char32_t comp = compose_pair(out[starter], c);
        if (comp) {
          out[starter] = comp;
          continue;
        }
      }
    }
    out.push_back(c);
    if (cc == 0) {
      starter = static_cast<long>(out.size()) - 1;
      last_ccc = -1;
    } else {
      last_ccc = cc;
    }
  }
  std::string s;
  s.reserve(text.size());
  for (char32_t c : out) append_utf8(s, c);
  return s;
}

const char* unicode_version() { return CHATVEC_UNICODE_VERSION; }

}  // namespace chatvec::unicode

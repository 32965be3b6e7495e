// Unicode helpers for the tokenizers: UTF-8 coding, the character classes the
// pre-tokenizer regexes use (\p{L}, \p{N}, \s) and NFC normalization.
//
// The letter/number/normalization data come from unicode_tables.inc, which
// gen_unicode_tables.py generates from Python's unicodedata.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatvec::unicode {

// Decode UTF-8.  Invalid or truncated sequences decode as U+FFFD, one per
// offending byte, so every byte belongs to exactly one code point.  When
// `offsets` is given it receives the byte offset of each code point plus a
// final entry equal to text.size().
void decode_utf8(std::string_view text, std::vector<char32_t>& cps, std::vector<uint32_t>* offsets = nullptr);
void append_utf8(std::string& out, char32_t cp);
bool is_valid_utf8(std::string_view text);
// Replace invalid sequences by U+FFFD the way the WHATWG TextDecoder does
// (one replacement per maximal invalid subpart).
std::string sanitize_utf8(std::string_view text);

bool is_letter(char32_t cp);   // \p{L}
bool is_number(char32_t cp);   // \p{N}
bool is_space(char32_t cp);    // \s as JavaScript defines it
// Canonical composition (NFC).
std::string nfc(std::string_view text);

const char* unicode_version();

}  // namespace chatvec::unicode

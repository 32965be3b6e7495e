// tokenizer.json: Tokenizer::load (vocabulary, merges, added tokens,
// normalizer and pre-tokenizer choice) and, when it loads, encode and decode
// of a fixed text.
#include <cstdint>

#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = chatvec::fuzz::write_scratch("tokenizer.json", data, size);
  try {
    chatvec::Tokenizer tok = chatvec::Tokenizer::load(path);
    const auto ids = tok.encode("Hello, world! 123 \xc3\xa9t\xc3\xa9 <s> \xe4\xbd\xa0\xe5\xa5\xbd\n\t  x", true);
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    int prev = -1;
    for (int id : ids) {
      (void)tok.decode_piece(prev, id);
      prev = id;
    }
    const auto& v = tok.vocab();
    for (size_t i = 0; i < v.size() && i < 64; ++i) (void)v.token(int(i));
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

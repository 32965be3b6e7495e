// tokenizer.model (SentencePiece ModelProto): the hand-written protobuf
// reader, through Vocabulary::load.
#include <cstdint>

#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/vocab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = chatvec::fuzz::write_scratch("tokenizer.model", data, size);
  try {
    chatvec::Vocabulary v = chatvec::Vocabulary::load(path);
    for (size_t i = 0; i < v.size() && i < 64; ++i) {
      (void)v.token(int(i));
      (void)v.score(int(i));
      (void)v.type(int(i));
    }
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

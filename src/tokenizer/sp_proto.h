// A minimal reader and appender for SentencePiece's ModelProto (the
// tokenizer.model file).  Debian's libsentencepiece-dev does not ship the
// generated sentencepiece_model.pb.h, so the few fields we need are decoded
// by hand from the protobuf wire format:
//   ModelProto    1: repeated SentencePiece pieces, 2: TrainerSpec trainer_spec,
//                 3: NormalizerSpec normalizer_spec
//   SentencePiece 1: string piece, 2: float score, 3: enum type
//   TrainerSpec   3: model_type, 35: byte_fallback, 40..43: unk/bos/eos/pad id
//   NormalizerSpec 3: add_dummy_prefix
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace chatvec::detail {

struct SpPiece {
  std::string piece;
  float score = 0.0f;
  int type = 1;  // NORMAL
};

struct SpModelInfo {
  std::vector<SpPiece> pieces;
  int model_type = 1;  // UNIGRAM
  bool byte_fallback = false;
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool add_dummy_prefix = true;
};

// Throws InputError naming `what` on malformed input.
SpModelInfo parse_sp_model(std::string_view bytes, const std::string& what);
// One ModelProto `pieces` record; appending it to a serialized ModelProto
// appends the piece (repeated fields concatenate in wire order).
std::string serialize_sp_piece(const SpPiece& p);
// A whole ModelProto: the pieces, a TrainerSpec (model type, byte fallback,
// special ids) and an identity NormalizerSpec (spaces escaped to U+2581,
// add_dummy_prefix as given, extra whitespace kept).
std::string serialize_sp_model(const SpModelInfo& m);

}  // namespace chatvec::detail

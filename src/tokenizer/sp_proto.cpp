#include "tokenizer/sp_proto.h"

#include <cstdint>
#include <cstring>

#include "core/error.h"

namespace chatvec::detail {

namespace {

class Reader {
 public:
  Reader(std::string_view data, const std::string& what) : d_(data), what_(what) {}
  bool done() const { return pos_ >= d_.size(); }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= d_.size()) fail("truncated varint");
      auto b = static_cast<unsigned char>(d_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > d_.size() - pos_) fail("length-delimited field runs past the end");
    std::string_view s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  uint32_t fixed32() {
    if (d_.size() - pos_ < 4) fail("truncated fixed32");
    uint32_t v;
    std::memcpy(&v, d_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1:
        if (d_.size() - pos_ < 8) fail("truncated fixed64");
        pos_ += 8;
        break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: fail("unsupported wire type " + std::to_string(wire));
    }
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw InputError(what_ + ": not a SentencePiece model (" + why + ")");
  }

 private:
  std::string_view d_;
  size_t pos_ = 0;
  const std::string& what_;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

int to_int(uint64_t v) { return static_cast<int>(static_cast<int64_t>(v)); }

}  // namespace

SpModelInfo parse_sp_model(std::string_view bytes, const std::string& what) {
  SpModelInfo info;
  Reader r(bytes, what);
  while (!r.done()) {
    uint64_t tag = r.varint();
    int field = static_cast<int>(tag >> 3), wire = static_cast<int>(tag & 7);
    if (field == 1 && wire == 2) {
      Reader p(r.bytes(), what);
      SpPiece piece;
      bool has_piece = false;
      while (!p.done()) {
        uint64_t t = p.varint();
        int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if (f == 1 && w == 2) {
          piece.piece = std::string(p.bytes());
          has_piece = true;
        } else if (f == 2 && w == 5) {
          uint32_t u = p.fixed32();
          std::memcpy(&piece.score, &u, 4);
        } else if (f == 3 && w == 0) {
          piece.type = to_int(p.varint());
          if (piece.type < 1 || piece.type > 6)
            r.fail("piece " + std::to_string(info.pieces.size()) + " has unknown type " + std::to_string(piece.type));
        } else {
          p.skip(w);
        }
      }
      if (!has_piece) r.fail("piece " + std::to_string(info.pieces.size()) + " has no text");
      info.pieces.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {
      Reader t(r.bytes(), what);
      while (!t.done()) {
        uint64_t tg = t.varint();
        int f = static_cast<int>(tg >> 3), w = static_cast<int>(tg & 7);
        if (w != 0) {
          t.skip(w);
          continue;
        }
        uint64_t v = t.varint();
        switch (f) {
          case 3: info.model_type = to_int(v); break;
          case 35: info.byte_fallback = v != 0; break;
          case 40: info.unk_id = to_int(v); break;
          case 41: info.bos_id = to_int(v); break;
          case 42: info.eos_id = to_int(v); break;
          case 43: info.pad_id = to_int(v); break;
          default: break;
        }
      }
    } else if (field == 3 && wire == 2) {
      Reader n(r.bytes(), what);
      while (!n.done()) {
        uint64_t tg = n.varint();
        int f = static_cast<int>(tg >> 3), w = static_cast<int>(tg & 7);
        if (f == 3 && w == 0)
          info.add_dummy_prefix = n.varint() != 0;
        else
          n.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  if (info.pieces.empty()) r.fail("no pieces");
  return info;
}

std::string serialize_sp_piece(const SpPiece& p) {
  std::string body;
  body.push_back(0x0A);
  put_varint(body, p.piece.size());
  body += p.piece;
  body.push_back(0x15);
  uint32_t u;
  std::memcpy(&u, &p.score, 4);
  for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  body.push_back(0x18);
  put_varint(body, static_cast<uint64_t>(p.type));
  std::string out;
  out.push_back(0x0A);
  put_varint(out, body.size());
  out += body;
  return out;
}

namespace {
void put_field_varint(std::string& out, uint32_t field, uint64_t v) {
  put_varint(out, uint64_t(field) << 3);
  put_varint(out, v);
}
void put_field_bytes(std::string& out, uint32_t field, std::string_view b) {
  put_varint(out, (uint64_t(field) << 3) | 2);
  put_varint(out, b.size());
  out.append(b);
}
}  // namespace

std::string serialize_sp_model(const SpModelInfo& m) {
  std::string out;
  for (const auto& p : m.pieces) out += serialize_sp_piece(p);
  std::string trainer;
  put_field_varint(trainer, 3, uint64_t(m.model_type));
  put_field_varint(trainer, 35, m.byte_fallback ? 1 : 0);
  // int32 fields: negative values are sign-extended to 64 bits.
  put_field_varint(trainer, 40, uint64_t(int64_t(m.unk_id)));
  put_field_varint(trainer, 41, uint64_t(int64_t(m.bos_id)));
  put_field_varint(trainer, 42, uint64_t(int64_t(m.eos_id)));
  put_field_varint(trainer, 43, uint64_t(int64_t(m.pad_id)));
  put_field_bytes(out, 2, trainer);
  std::string norm;
  put_field_bytes(norm, 1, "identity");
  put_field_varint(norm, 3, m.add_dummy_prefix ? 1 : 0);
  put_field_varint(norm, 4, 0);  // remove_extra_whitespaces
  put_field_varint(norm, 5, 1);  // escape_whitespaces
  put_field_bytes(out, 3, norm);
  return out;
}

}  // namespace chatvec::detail

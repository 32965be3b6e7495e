#include "formats/pytorch/zip_reader.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "core/error.h"

namespace chatvec {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndMinSize = 56, kCentralSize = 46, kLocalSize = 30;

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

// Reads the zip64 extended-information extra field (id 0x0001) of a header:
// the 64-bit values of exactly those fields whose 32-bit (16-bit for the
// disk) form is saturated, in the APPNOTE order.
struct Zip64Fields {
  uint64_t size, csize, offset;
  uint32_t disk;
};

void read_zip64_extra(const uint8_t* extra, uint64_t extra_len, Zip64Fields& f, bool need_size, bool need_csize,
                      bool need_offset, bool need_disk, const std::string& where) {
  if (!need_size && !need_csize && !need_offset && !need_disk) return;
  uint64_t p = 0;
  while (p + 4 <= extra_len) {
    const uint16_t id = le16(extra + p), len = le16(extra + p + 2);
    if (p + 4 + len > extra_len) break;
    if (id == 0x0001) {
      const uint8_t* q = extra + p + 4;
      uint64_t left = len;
      auto take64 = [&](uint64_t& v) {
        if (left < 8) throw InputError(where + ": zip64 extra field too short");
        v = le64(q);
        q += 8;
        left -= 8;
      };
      if (need_size) take64(f.size);
      if (need_csize) take64(f.csize);
      if (need_offset) take64(f.offset);
      if (need_disk) {
        if (left < 4) throw InputError(where + ": zip64 extra field too short");
        f.disk = le32(q);
      }
      return;
    }
    p += 4 + uint64_t(len);
  }
  throw InputError(where + ": sizes or offset marked as zip64 but no zip64 extra field");
}

// An entry name for a one-line message: control characters as '?', at most
// 200 bytes.
std::string shown(const std::string& name) {
  std::string o = name.substr(0, 200);
  for (char& c : o)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return name.size() > 200 ? o + "..." : o;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ data[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

ZipDirectory ZipDirectory::parse(const uint8_t* data, uint64_t size, const std::string& what) {
  ZipDirectory z;
  z.what_ = what;
  auto bad = [&](const std::string& msg) { return InputError(what + ": " + msg); };
  if (size < kEndSize) throw bad("not a zip archive (" + std::to_string(size) + " bytes)");

  // The end record: the last "PK\5\6" whose comment runs exactly to the end.
  uint64_t end = UINT64_MAX;
  const uint64_t lowest = size - kEndSize > 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t p = size - kEndSize + 1; p-- > lowest;) {
    if (le32(data + p) == kEndSig && p + kEndSize + le16(data + p + 20) == size) {
      end = p;
      break;
    }
  }
  if (end == UINT64_MAX) throw bad("no zip end-of-central-directory record (not a zip archive, or truncated)");
  const uint8_t* e = data + end;
  uint64_t disk = le16(e + 4), cd_disk = le16(e + 6), count_disk = le16(e + 8), count = le16(e + 10);
  uint64_t cd_size = le32(e + 12), cd_offset = le32(e + 16);
  uint64_t cd_limit = end;  // the central directory ends before this

  // zip64: a locator just before the end record points to the zip64 end
  // record, whose 64-bit values replace saturated 32-bit ones.
  if (end >= kZip64LocatorSize && le32(data + end - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = data + end - kZip64LocatorSize;
    const uint64_t rec = le64(loc + 8);
    if (le32(loc + 4) != 0 || le32(loc + 16) != 1) throw bad("multi-disk zip archives are not supported");
    if (rec > end - kZip64LocatorSize || end - kZip64LocatorSize - rec < kZip64EndMinSize)
      throw bad("zip64 end record offset out of bounds");
    const uint8_t* r = data + rec;
    if (le32(r) != kZip64EndSig) throw bad("zip64 end record missing where the locator points");
    const uint64_t rec_size = le64(r + 4);
    if (rec_size < kZip64EndMinSize - 12 || rec_size > end - kZip64LocatorSize - rec - 12)
      throw bad("zip64 end record size out of bounds");
    const uint64_t d64 = le32(r + 16), cdd64 = le32(r + 20), cnt_d64 = le64(r + 24), cnt64 = le64(r + 32);
    const uint64_t cds64 = le64(r + 40), cdo64 = le64(r + 48);
    // Where the 32-bit fields are not saturated they must agree.
    if ((disk != 0xffff && disk != d64) || (cd_disk != 0xffff && cd_disk != cdd64) ||
        (count_disk != 0xffff && count_disk != cnt_d64) || (count != 0xffff && count != cnt64) ||
        (cd_size != 0xffffffff && cd_size != cds64) || (cd_offset != 0xffffffff && cd_offset != cdo64))
      throw bad("zip64 end record disagrees with the end record");
    disk = d64, cd_disk = cdd64, count_disk = cnt_d64, count = cnt64, cd_size = cds64, cd_offset = cdo64;
    cd_limit = rec;
  } else if (count == 0xffff || count_disk == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    throw bad("end record needs zip64 values but there is no zip64 locator (truncated?)");
  }
  if (disk != 0 || cd_disk != 0 || count_disk != count) throw bad("multi-disk zip archives are not supported");
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    throw bad("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
              " bytes) lies outside the file (truncated?)");
  if (count > kMaxZipEntries) throw bad(std::to_string(count) + " entries, more than the limit of " + std::to_string(kMaxZipEntries));
  if (count > cd_size / kCentralSize) throw bad("central directory too small for its " + std::to_string(count) + " entries");

  // Central directory.
  z.entries_.reserve(count);
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string where = what + ": central directory entry " + std::to_string(i);
    if (cd_end - p < kCentralSize || le32(data + p) != kCentralSig) throw InputError(where + " is damaged");
    const uint8_t* c = data + p;
    ZipEntry en;
    en.flags = le16(c + 8);
    en.method = le16(c + 10);
    en.crc32 = le32(c + 16);
    const uint32_t csize32 = le32(c + 20), size32 = le32(c + 24);
    const uint64_t name_len = le16(c + 28), extra_len = le16(c + 30), comment_len = le16(c + 32);
    const uint16_t disk16 = le16(c + 34);
    const uint32_t off32 = le32(c + 42);
    if (cd_end - p - kCentralSize < name_len + extra_len + comment_len) throw InputError(where + " runs past the central directory");
    en.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
    const std::string ewhere = what + ": entry \"" + shown(en.name) + "\"";
    if (en.name.empty() || en.name.find('\0') != std::string::npos) throw InputError(where + " has an empty name or one with a NUL byte");
    Zip64Fields f{size32, csize32, off32, disk16};
    read_zip64_extra(c + kCentralSize + name_len, extra_len, f, size32 == 0xffffffff, csize32 == 0xffffffff,
                     off32 == 0xffffffff, disk16 == 0xffff, ewhere);
    if (f.disk != 0) throw InputError(ewhere + " is on another disk (multi-disk archives are not supported)");
    if (en.flags & 0x41) throw InputError(ewhere + " is encrypted");
    en.size = f.size;
    en.compressed_size = f.csize;
    en.header_offset = f.offset;
    if (!z.index_.emplace(en.name, z.entries_.size()).second) throw InputError(ewhere + " appears twice in the archive");
    z.entries_.push_back(std::move(en));
    p += kCentralSize + name_len + extra_len + comment_len;
  }
  if (p != cd_end) throw bad("central directory size disagrees with its entries");

  // Local headers: where each entry's data starts, and agreement with the
  // central directory.
  for (ZipEntry& en : z.entries_) {
    const std::string ewhere = what + ": entry \"" + shown(en.name) + "\"";
    if (en.header_offset > cd_offset || cd_offset - en.header_offset < kLocalSize)
      throw InputError(ewhere + ": local header offset out of bounds");
    const uint8_t* l = data + en.header_offset;
    if (le32(l) != kLocalSig) throw InputError(ewhere + ": no local header at offset " + std::to_string(en.header_offset));
    const uint16_t lflags = le16(l + 6), lmethod = le16(l + 8);
    const uint32_t lcrc = le32(l + 14), lcsize = le32(l + 18), lsize = le32(l + 22);
    const uint64_t lname_len = le16(l + 26), lextra_len = le16(l + 28);
    if (cd_offset - en.header_offset - kLocalSize < lname_len + lextra_len) throw InputError(ewhere + ": local header runs past the data");
    if (lname_len != en.name.size() || std::memcmp(l + kLocalSize, en.name.data(), lname_len) != 0)
      throw InputError(ewhere + ": local header names a different file");
    if (lmethod != en.method || ((lflags ^ en.flags) & 0x0009))
      throw InputError(ewhere + ": local header disagrees with the central directory (method or flags)");
    Zip64Fields lf{lsize, lcsize, 0, 0};
    read_zip64_extra(l + kLocalSize + lname_len, lextra_len, lf, lsize == 0xffffffff, lcsize == 0xffffffff, false,
                     false, ewhere + " (local header)");
    const bool deferred = en.flags & 0x0008;  // CRC and sizes in a data descriptor after the data
    auto agrees = [&](uint64_t local, uint64_t central) { return local == central || (deferred && local == 0); };
    if (!agrees(lcrc, en.crc32) || !agrees(lf.size, en.size) || !agrees(lf.csize, en.compressed_size))
      throw InputError(ewhere + ": local header disagrees with the central directory (CRC or sizes)");
    en.data_offset = en.header_offset + kLocalSize + lname_len + lextra_len;
    if (en.compressed_size > cd_offset - en.data_offset)
      throw InputError(ewhere + ": data (" + std::to_string(en.compressed_size) + " bytes at offset " +
                       std::to_string(en.data_offset) + ") runs past the end of the entries (truncated?)");
  }
  // No entry may overlap another (one byte range read as two entries).
  std::vector<const ZipEntry*> order;
  order.reserve(z.entries_.size());
  for (const ZipEntry& en : z.entries_) order.push_back(&en);
  std::sort(order.begin(), order.end(), [](const ZipEntry* a, const ZipEntry* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i - 1]->data_offset + order[i - 1]->compressed_size > order[i]->header_offset)
      throw bad("entries \"" + shown(order[i - 1]->name) + "\" and \"" + shown(order[i]->name) + "\" overlap");
  return z;
}

const ZipEntry* ZipDirectory::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const ZipEntry& ZipDirectory::stored(std::string_view name) const {
  const ZipEntry* e = find(name);
  if (!e) throw InputError(what_ + ": no entry \"" + shown(std::string(name)) + "\" in the archive");
  if (e->method != 0)
    throw InputError(what_ + ": entry \"" + shown(e->name) + "\" is compressed (method " + std::to_string(e->method) +
                     "); torch.save stores entries uncompressed: was the file re-zipped? Unzip and re-store it "
                     "(zip -0), or convert the checkpoint to safetensors");
  if (e->compressed_size != e->size)
    throw InputError(what_ + ": stored entry \"" + shown(e->name) + "\" has different compressed and uncompressed sizes");
  return *e;
}

void ZipDirectory::verify_crc(const uint8_t* data, const ZipEntry& e) const {
  if (crc32_update(0, data + e.data_offset, e.compressed_size) != e.crc32)
    throw InputError(what_ + ": entry \"" + shown(e.name) + "\" fails its CRC-32 check (the file is damaged)");
}

}  // namespace chatvec

// One test per rule the safetensors reader enforces, each with a file that
// breaks it.
#include "formats/safetensors/safetensors_reader.h"

#include <fstream>

#include "core/error.h"
#include "test_support.h"

namespace chatvec {
namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a header text and a data section.
std::string make_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

SafetensorsHeader parse(const std::string& bytes) {
  return parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.safetensors");
}

// Expect an InputError whose message contains `fragment`.
void expect_error(const std::string& bytes, const std::string& fragment) {
  try {
    parse(bytes);
    ADD_FAILURE() << "accepted; expected error containing: " << fragment;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("t.safetensors", 0), 0u) << "error must name the file: " << e.what();
  }
}

const std::string kData8(8, '\x01');

TEST(SafetensorsReader, ValidFile) {
  auto h = parse(make_file(
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}})",
      kData8));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.metadata.at("format"), "pt");
}

TEST(SafetensorsReader, HeaderMayBePaddedWithSpaces) {
  EXPECT_NO_THROW(parse(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})" "      ", kData8)));
}

TEST(SafetensorsReader, EmptyModelAndZeroSizedTensors) {
  EXPECT_NO_THROW(parse(make_file("{}", "")));
  auto h = parse(make_file(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                           std::string(4, '\0')));
  EXPECT_EQ(h.tensors.size(), 2u);
}

TEST(SafetensorsReader, TooShortForLength) { expect_error("abc", "shorter than the 8-byte header length"); }

TEST(SafetensorsReader, HeaderLongerThanLimit) {
  expect_error(le64(100'000'001) + std::string(16, ' '), "exceeds the 100 MB limit");
}

TEST(SafetensorsReader, HeaderRunsPastEnd) { expect_error(le64(50) + "{}", "runs past the end of the file"); }

TEST(SafetensorsReader, HeaderMustStartWithBrace) {
  expect_error(make_file(R"( {"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", kData8), "does not start with '{'");
  expect_error(make_file("", ""), "does not start with '{'");
}

TEST(SafetensorsReader, HeaderMustBeJson) { expect_error(make_file("{nope}", ""), "invalid JSON"); }

TEST(SafetensorsReader, HeaderMustBeUtf8) {
  expect_error(make_file("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", kData8), "invalid JSON");
}

TEST(SafetensorsReader, HeaderMustBeObject) { expect_error(make_file("[1]", ""), "does not start with '{'"); }

TEST(SafetensorsReader, TrailingGarbageAfterJson) { expect_error(make_file("{}x", ""), "invalid JSON"); }

TEST(SafetensorsReader, DuplicateTensorNames) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                         kData8),
               "duplicate key");
}

TEST(SafetensorsReader, MetadataValuesMustBeStrings) {
  expect_error(make_file(R"({"__metadata__":{"n":1}})", ""), "__metadata__ value of \"n\" is not a string");
  expect_error(make_file(R"({"__metadata__":"x"})", ""), "__metadata__ is not an object");
}

TEST(SafetensorsReader, UnknownDtype) {
  expect_error(make_file(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}})", kData8), "unknown dtype \"F128\"");
}

TEST(SafetensorsReader, F8TypesRecognised) {
  for (const char* t : {"F8_E4M3", "F8_E5M2", "F8_E8M0"})
    EXPECT_NO_THROW(parse(make_file(std::string(R"({"a":{"dtype":")") + t + R"(","shape":[8],"data_offsets":[0,8]}})", kData8)))
        << t;
}

TEST(SafetensorsReader, SubByteTypesMustFillBytes) {
  EXPECT_NO_THROW(parse(make_file(R"({"a":{"dtype":"F4","shape":[16],"data_offsets":[0,8]}})", kData8)));
  expect_error(make_file(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "\x01\x02"), "do not fill whole bytes");
}

TEST(SafetensorsReader, MissingFields) {
  expect_error(make_file(R"({"a":{"shape":[8],"data_offsets":[0,8]}})", kData8), "missing dtype");
  expect_error(make_file(R"({"a":{"dtype":"U8","data_offsets":[0,8]}})", kData8), "missing shape");
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[8]}})", kData8), "data_offsets must be [begin, end]");
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0]}})", kData8), "data_offsets must be [begin, end]");
  expect_error(make_file(R"({"a":7})", ""), "entry is not an object");
}

TEST(SafetensorsReader, NegativeOrFractionalNumbers) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}})", kData8), "non-negative integer");
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8.5]}})", kData8), "non-negative integer");
}

TEST(SafetensorsReader, OffsetsReversed) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", kData8), "end before they begin");
}

TEST(SafetensorsReader, SizeMustMatchShapeTimesDtype) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kData8), "needs 12");
}

TEST(SafetensorsReader, ShapeOverflowIsCaught) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", kData8),
               "overflows");
  expect_error(make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", kData8),
               "overflows");
}

TEST(SafetensorsReader, HoleBetweenTensors) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                         kData8),
               "leaving a hole after offset 2");
}

TEST(SafetensorsReader, DataMustStartAtZero) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", kData8), "leaving a hole after offset 0");
}

TEST(SafetensorsReader, OverlappingTensors) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                         kData8),
               "overlaps");
}

TEST(SafetensorsReader, DataMustEndAtEndOfFile) {
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", kData8),
               "data ends at offset 4 but the data section is 8 bytes");
  expect_error(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", "1234"), "but the data section is 4 bytes");
}

TEST(SafetensorsReader, UnalignedDataIsFine) {
  // A header of odd length puts the F32 data at an odd file offset.
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  if (header.size() % 2 == 0) header += " ";
  const float v = 1.5f;
  auto h = parse(make_file(header, std::string(reinterpret_cast<const char*>(&v), 4)));
  ASSERT_EQ(h.data_start % 2, 1u);
  ASSERT_EQ(h.tensors.size(), 1u);
}

TEST(SafetensorsFile, ReadsFromDiskAndFindsByName) {
  testing::TempDir tmp;
  const std::string path = (tmp / "m.safetensors").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << make_file(R"({"w":{"dtype":"U8","shape":[2,4],"data_offsets":[0,8]}})", "ABCDEFGH");
  }
  SafetensorsFile st(path);
  const TensorInfo* t = st.find("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(st.data(*t)), 8), "ABCDEFGH");
  EXPECT_EQ(st.find("nope"), nullptr);
}

TEST(SafetensorsFile, MissingAndEmptyFiles) {
  testing::TempDir tmp;
  EXPECT_THROW(SafetensorsFile((tmp / "none").string()), InputError);
  { std::ofstream f(tmp / "empty"); }
  EXPECT_THROW(SafetensorsFile((tmp / "empty").string()), InputError);
}

}  // namespace
}  // namespace chatvec

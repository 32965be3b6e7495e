#include "core/file_util.h"

#include "core/error.h"
#include "test_support.h"

namespace chatvec {
namespace {

TEST(ParseSize, DecimalAndBinaryUnits) {
  EXPECT_EQ(parse_size("5GB"), 5'000'000'000ull);
  EXPECT_EQ(parse_size("500MB"), 500'000'000ull);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("1234"), 1234ull);
  EXPECT_EQ(parse_size("10kb"), 10'000ull);
  EXPECT_EQ(parse_size("1.5GB"), 1'500'000'000ull);
  EXPECT_THROW(parse_size("GB"), InputError);
  EXPECT_THROW(parse_size("5XB"), InputError);
  EXPECT_THROW(parse_size("0"), InputError);
}

TEST(OutputFile, RefusesToOverwrite) {
  testing::TempDir tmp;
  write_file((tmp / "a").string(), "x");
  EXPECT_THROW(OutputFile((tmp / "a").string()), RuntimeFailure);
  EXPECT_EQ(read_file((tmp / "a").string()), "x");
}

TEST(ReadFile, MissingFileIsInputError) {
  try {
    read_file("/nonexistent/file.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace chatvec

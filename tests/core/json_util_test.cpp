#include "core/json_util.h"

#include "core/error.h"
#include "test_support.h"

namespace chatvec {
namespace {

TEST(Json, DuplicateKeysRejected) {
  EXPECT_THROW(parse_json_strict(R"({"a":1,"a":2})", "x"), InputError);
  EXPECT_THROW(parse_json_strict(R"({"o":{"k":1,"k":1}})", "x"), InputError);
  EXPECT_NO_THROW(parse_json_strict(R"({"a":{"k":1},"b":{"k":1}})", "x"));
}

TEST(Json, InvalidUtf8Rejected) {
  EXPECT_THROW(parse_json_strict("{\"a\":\"\xff\"}", "x"), InputError);
  EXPECT_NO_THROW(parse_json_strict("{\"a\":\"\xc3\xa9\"}", "x"));
}

TEST(Json, ErrorNamesTheSource) {
  try {
    parse_json_strict("{", "dir/config.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("dir/config.json: invalid JSON", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace chatvec

// Resource limits on untrusted input: each bound is enforced before the
// large allocation or deep recursion it prevents, and the error names it.
#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "formats/safetensors/safetensors_reader.h"
#include "test_support.h"
#include "tokenizer/vocab.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string safetensors_file(const std::string& header, size_t data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data, '\0');
}

using chatvec::testing::error_of;

#define EXPECT_ERROR(expr, text) \
  EXPECT_NE(error_of([&] { (void)(expr); }).find(text), std::string::npos) << error_of([&] { (void)(expr); })

TEST(Limits, JsonNestingDepth) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_ERROR(parse_json_strict(deep, "deep.json"), "deep.json: invalid JSON: nested deeper than the limit of 256 levels");
  std::string objs;
  for (int i = 0; i < 300; ++i) objs += "{\"a\":";
  objs += "1" + std::string(300, '}');
  EXPECT_ERROR(parse_json_strict(objs, "o.json"), "nested deeper than the limit of 256");
  // Just inside the limit is fine.
  EXPECT_NO_THROW(parse_json_strict(std::string(255, '[') + std::string(255, ']'), "ok.json"));
}

TEST(Limits, DeepConfigAndTokenizerAreErrorsNotStackOverflows) {
  testing::TempDir tmp;
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  // config.json of a checkpoint (a merge copies it into the output).
  write(tmp / "model.safetensors", safetensors_file(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1));
  write(tmp / "config.json", "{\"a\":" + deep + "}");
  EXPECT_ERROR(Checkpoint::open(tmp.path().string()), "config.json: invalid JSON: nested deeper than the limit of 256");
  // tokenizer.json (the vocabulary reader walks pre_tokenizer recursively).
  write(tmp / "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":)" + deep + "}");
  EXPECT_ERROR(Vocabulary::load((tmp / "tokenizer.json").string()), "nested deeper than the limit of 256");
}

TEST(Limits, JsonAndTokenizerFileSizes) {
  testing::TempDir tmp;
  // Sparse files: no disk used, but too large to be read.
  for (const char* name : {"config.json", "tokenizer.json", "tokenizer.model"}) {
    const fs::path p = tmp / name;
    write(p, "");
    ASSERT_EQ(::truncate(p.c_str(), off_t(kMaxJsonFileBytes + 1)), 0);
  }
  EXPECT_ERROR(read_json_file((tmp / "config.json").string()), "over the limit for JSON files of 256 MB");
  EXPECT_ERROR(Vocabulary::load((tmp / "tokenizer.json").string()), "over the limit for JSON files of 256 MB");
  EXPECT_ERROR(Vocabulary::load((tmp / "tokenizer.model").string()), "over the limit for tokenizer files of 256 MB");
}

TEST(Limits, SafetensorsRankAndHeader) {
  std::string shape = "[";
  for (int i = 0; i < 65; ++i) shape += std::string(i ? "," : "") + "1";
  shape += "]";
  const std::string f = safetensors_file(R"({"x":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,1]}})", 1);
  EXPECT_ERROR(parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "r.safetensors"),
               "shape has 65 dimensions, over the limit of 64");
  std::string big(8, '\0');
  const uint64_t n = kMaxSafetensorsHeader + 1;
  for (int i = 0; i < 8; ++i) big[size_t(i)] = char((n >> (8 * i)) & 0xff);
  EXPECT_ERROR(parse_safetensors_header(reinterpret_cast<const uint8_t*>(big.data()), 1ull << 40, "h.safetensors"),
               "exceeds the 100 MB limit");
  const std::string ovf =
      safetensors_file(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4);
  EXPECT_ERROR(parse_safetensors_header(reinterpret_cast<const uint8_t*>(ovf.data()), ovf.size(), "o.safetensors"),
               "overflows");
}

TEST(Limits, ShardCount) {
  testing::TempDir tmp;
  std::string idx = R"({"weight_map":{)";
  for (size_t i = 0; i <= kMaxShards; ++i)
    idx += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":\"s" + std::to_string(i) + ".safetensors\"";
  write(tmp / "model.safetensors.index.json", idx + "}}");
  EXPECT_ERROR(Checkpoint::open(tmp.path().string()), "names 10001 shard files, over the limit of 10000");
}

TEST(Limits, TokenIdsAreBounded) {
  testing::TempDir tmp;
  write(tmp / "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0,"b":2147483647},"merges":[]}})");
  EXPECT_ERROR(Vocabulary::load((tmp / "tokenizer.json").string()), "has id 2147483647 out of range (ids are limited to 0..16777215)");
}

// A tiny tokenizer.json naming an id near the 16 M ceiling made the
// vocabulary allocate for 16 M tokens (about 0.5 GB): ids are now bounded by
// the number of tokens the files define (+ 65,536 for gaps).
TEST(Limits, TokenIdsAreBoundedByTheFilesTokenCount) {
  testing::TempDir tmp;
  const std::string tj = (tmp / "tokenizer.json").string();
  write(tmp / "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0,"b":16777215},"merges":[]}})");
  EXPECT_ERROR(Vocabulary::load(tj), tj + ": token id 16777215 is far beyond the 2 tokens the files define");
  write(tmp / "tokenizer.json",
        R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]},"added_tokens":[{"id":16000000,"content":"<x>"}]})");
  EXPECT_ERROR(Vocabulary::load(tj), tj + ": token id 16000000 is far beyond the 3 tokens the files define");
  // Gaps within the slack are fine.
  write(tmp / "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0,"b":60000},"merges":[]}})");
  EXPECT_EQ(Vocabulary::load(tj).size(), 60001u);
}

}  // namespace
}  // namespace chatvec

namespace chatvec {
namespace {

// Fuzz finding (fuzz_checkpoint_index): a shard name longer than a file name
// can be made open() fail with ENAMETOOLONG, reported as a runtime failure
// instead of bad input; a NUL in the name cut the path short and silently
// opened another shard.  Both are now "invalid shard file" input errors.
TEST(Limits, ShardNamesTooLongOrWithNul) {
  testing::TempDir tmp;
  write(tmp / "a.safetensors", safetensors_file(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1));
  write(tmp / "model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors\u0000junk"}})");
  EXPECT_ERROR(Checkpoint::open(tmp.path().string()), "weight_map names an invalid shard file");
  write(tmp / "model.safetensors.index.json", R"({"weight_map":{"x":")" + std::string(300, 'a') + R"(.safetensors"}})");
  EXPECT_ERROR(Checkpoint::open(tmp.path().string()), "weight_map names an invalid shard file");
}

}  // namespace
}  // namespace chatvec

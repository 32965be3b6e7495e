// The findings of the GGUF, GGUF import and recipe fuzz targets
// (fuzz/fuzz_gguf_model.cpp, fuzz_gguf_import.cpp, fuzz_recipe.cpp), each
// checked for its one-line error (the inputs are also replayed through the
// targets by fuzz_replay_test).
#include <chrono>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "engine/llama_model.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_model.h"
#include "gguf/gguf_reader.h"
#include "merge/plan.h"
#include "merge/schedule.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

std::string seed(const std::string& target, const std::string& name) {
  const fs::path p = testing::source_dir() / "fuzz" / "corpus" / target / name;
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_FALSE(ss.str().empty()) << p << " missing (fuzz/make_corpus.py writes it)";
  return ss.str();
}

using chatvec::testing::error_of;

// n_elements x type size wrapped around 2^64: an F32 tensor of 2^62
// elements "took" 0 bytes, passed the within-the-file check and was read
// far past the end of the map.
TEST(FuzzFindings, GgufTensorByteSizeOverflow) {
  const std::string b = seed("gguf_model", "bad_size_overflow.gguf");
  const std::string e = error_of([&] {
    (void)gguf::parse_header(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x.gguf");
  });
  EXPECT_NE(e.find("x.gguf: invalid GGUF: tensor token_embd.weight: 4611686018427387904 elements of F32 take more "
                   "bytes than the file holds"),
            std::string::npos)
      << e;
}

// fuzz_gguf_import (campaign of 2026-12-03): a Q8_0 blk.0.attn_q.weight of
// ne [0, 17179869216] has no elements, so it takes 0 bytes and passed every
// size check, but import walked its 2^34 rows to undo the q/k permutation
// (12 s before libFuzzer's timeout, hours in all), and so did the engine
// opening the file.  A dimension of 0 is now invalid GGUF.
std::string regression(const std::string& target, const std::string& name) {
  return read_file((testing::source_dir() / "tests/reliability/fuzz_regressions" / target / name).string());
}

TEST(FuzzFindings, GgufZeroDimensionTensorIsRefusedNotWalked) {
  const std::string b = regression("gguf_import", "timeout_zero_dim_rows.gguf");
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(error_of([&] { (void)gguf::parse_header(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x.gguf"); }),
            "x.gguf: invalid GGUF: tensor blk.0.attn_q.weight has a dimension of 0 (no elements) (at byte 772)");
  testing::TempDir tmp;
  const std::string in = (tmp.path() / "t.gguf").string();
  write_file(in, b);
  const fs::path out = tmp.path() / "out";
  fs::create_directory(out);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(error_of([&] { (void)gguf::import_gguf(in, out.string()); }).find("has a dimension of 0"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(out)) << "written before the error";
  EngineOptions opts;
  opts.context_length = 8;
  EXPECT_NE(error_of([&] { (void)gguf::open_gguf_model(in, opts); }).find("has a dimension of 0"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  // The same file with the tensor's 0 made 32 ([32, 17179869216]) is too
  // large for the file, as before.
  std::string big = b;
  const std::string name = "blk.0.attn_q.weight";
  const size_t at = big.find(name);
  ASSERT_NE(at, std::string::npos);
  const size_t dims = at + name.size() + 4;  // after the name: uint32 dimension count, then int64 dimensions
  ASSERT_EQ(big[dims], '\0');
  big[dims] = 32;
  EXPECT_NE(error_of([&] { (void)gguf::parse_header(reinterpret_cast<const uint8_t*>(big.data()), big.size(), "x.gguf"); })
                .find("take more bytes than the file holds"),
            std::string::npos);
}

// A chat template that is not UTF-8 made nlohmann::json throw type_error 316
// while writing tokenizer_config.json (not an InputError; config.json was
// already written).
TEST(FuzzFindings, GgufImportNonUtf8ChatTemplate) {
  testing::TempDir tmp;
  const std::string in = (tmp.path() / "t.gguf").string();
  write_file(in, seed("gguf_import", "bad_template_utf8.gguf"));
  const fs::path out = tmp.path() / "out";
  fs::create_directory(out);
  const std::string e = error_of([&] { (void)gguf::import_gguf(in, out.string()); });
  EXPECT_EQ(e, in + ": tokenizer.chat_template is not valid UTF-8");
  EXPECT_TRUE(fs::is_empty(out)) << "written before the error";
  // The same file with a UTF-8 template imports.
  const std::string good = (tmp.path() / "good.gguf").string();
  write_file(good, seed("gguf_import", "llama_f32.gguf"));
  EXPECT_NO_THROW((void)gguf::import_gguf(good, out.string()));
  EXPECT_TRUE(fs::exists(out / "tokenizer_config.json"));
}

// std::regex's backtracking executor recursed once per character of the
// name (a stack overflow for a long name) and took exponential time on
// nested repetitions.
TEST(FuzzFindings, RatioForRegexBoundedTimeAndStack) {
  RatioSchedule s;
  s.overrides = {{"(.)*x", 0.5}};
  {
    ResolvedSchedule r(s, 4, "--ratio");
    EXPECT_EQ(r.ratio_for("model.layers.0.x"), 0.5);
    const std::string huge(200000, 'a');
    EXPECT_EQ(error_of([&] { (void)r.ratio_for(huge); }),
              "tensor \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\": a name of 200000 bytes is longer than 1024 "
              "--ratio-for can match");
  }
  // Nested repetitions on a name at the length bound: polynomial time.
  s.overrides = {{"((a*)*)*b", 0.25}};
  ResolvedSchedule r(s, 4, "--ratio");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(r.ratio_for(std::string(kMaxMatchedName, 'a')), 1.0);  // no match: the schedule's ratio
  EXPECT_EQ(r.ratio_for(std::string(100, 'a') + "b"), 0.25);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);

  s.overrides = {{std::string(300, 'a'), 1}};
  EXPECT_EQ(error_of([&] { ResolvedSchedule(s, 4, "--ratio"); }),
            "--ratio-for \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\": a pattern of 300 bytes (at most 256)");
  s.overrides = {{"(a", 1}};
  EXPECT_NE(error_of([&] { ResolvedSchedule(s, 4, "--ratio"); }).find("--ratio-for \"(a\": invalid regular expression"),
            std::string::npos);
  // The same bounds for --include / --exclude.
  const TensorSelection sel = make_selection({"(.)*x"}, {});
  EXPECT_TRUE(sel.selected("model.x"));
  EXPECT_NE(error_of([&] { (void)sel.selected(std::string(5000, 'x')); }).find("longer than 1024 --include"),
            std::string::npos);
}

// fuzz_recipe (campaign of 2026-12-03): libstdc++'s regex compiler read
// the number of `\55555555555555555555` into a long without an overflow
// check (UBSan: signed integer overflow in regex_compiler.tcc).  Numbers of
// back-references and repetition counts are now at most 5 digits.
TEST(FuzzFindings, RegexBackReferenceAndCountDigitsBounded) {
  for (const std::string& p : {std::string("layers\\") + std::string(20, '5'), std::string("a{") + std::string(19, '9') + "}",
                              std::string("a{1,") + std::string(12, '7') + "}"}) {
    RatioSchedule s;
    s.overrides = {{p, 0.5}};
    EXPECT_NE(error_of([&] { ResolvedSchedule(s, 4, "--ratio"); }).find("back-reference or repetition count of"),
              std::string::npos)
        << p;
    EXPECT_NE(error_of([&] { (void)make_selection({p}, {}); }).find("--include \"" + p + "\": a back-reference"),
              std::string::npos)
        << p;
  }
  // Short counts and escaped digits still work; a literal long number too.
  RatioSchedule s;
  s.overrides = {{"layers\\.1{1,3}\\.", 0.5}, {"x\\d{2}y", 0.25}, {"layer_1234567890", 0.75}};
  ResolvedSchedule r(s, 4, "--ratio");
  EXPECT_EQ(r.ratio_for("model.layers.11.mlp"), 0.5);
  EXPECT_EQ(r.ratio_for("x42y"), 0.25);
  EXPECT_EQ(r.ratio_for("layer_1234567890"), 0.75);
}

}  // namespace
}  // namespace chatvec

namespace chatvec {
namespace {

// A safetensors embedding of shape [2^40, 0] (no elements, so no bytes):
// the vocabulary code trusted its row count and allocated 2^40 row
// decisions (std::bad_alloc, exit 1).  Now one line naming the tensor, exit
// 2, nothing written; GGUF export refuses an empty tensor the same way.
TEST(FuzzFindings, EmptyVocabularyTensorIsOneLineNotBadAlloc) {
  testing::TempDir tmp;
  const std::string header =
      R"({"model.embed_tokens.weight":{"dtype":"BF16","shape":[1099511627776,0],"data_offsets":[0,0]},)"
      R"("model.norm.weight":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
  file += header + std::string(8, '\0');
  for (const char* m : {"base", "chat", "target"}) {
    fs::create_directories(tmp.path() / m);
    write_file((tmp.path() / m / "model.safetensors").string(), file);
    write_file((tmp.path() / m / "config.json").string(),
               R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":1099511627776})");
  }
  const auto p = [&](const char* m) { return testing::shell_quote((tmp.path() / m).string()); };
  const auto r = testing::run_command(testing::shell_quote(testing::chatvec_bin()) + " merge --base " + p("base") +
                                      " --chat " + p("chat") + " --target " + p("target") + " -o " + p("out"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("tensor \"model.embed_tokens.weight\" in " + (tmp.path() / "target").string() +
                       " has no elements ([1099511627776, 0])"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path() / "out"));
}

}  // namespace
}  // namespace chatvec

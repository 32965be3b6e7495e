// append_tokens(): the written tokenizer files load, give the new ids, and
// the reference (transformers.js, libsentencepiece) agrees.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"
#include "tokenizer_test_util.h"

namespace chatvec {
namespace {

using namespace chatvec::testing;

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

TEST(AppendTokens, TokenizerJson) {
  auto in = lenml_models("llama3");
  CHATVEC_REQUIRE_PATH(in);
  TempDir out;
  std::vector<NewToken> add = {{"<|my_tool|>", true}, {"hello", false}, {"zzqq_newword", false}, {"<|my_tool|>", true}};
  std::vector<int> ids = append_tokens(in.string(), out.path().string(), add);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], 128256);
  EXPECT_EQ(ids[1], 15339);  // "hello" already exists
  EXPECT_EQ(ids[2], 128257);
  EXPECT_EQ(ids[3], 128256);

  Vocabulary v = Vocabulary::load(out.path().string());
  EXPECT_EQ(v.size(), 128258u);
  EXPECT_EQ(v.id("<|my_tool|>"), 128256);
  EXPECT_TRUE(v.is_special(128256));
  EXPECT_EQ(v.type(128256), TokenType::Control);
  EXPECT_EQ(v.type(128257), TokenType::UserDefined);
  EXPECT_EQ(v.added_tokens().size(), 258u);
  EXPECT_EQ(v.bos_id(), 128000);
  Json cfg = read_json_file((out / "tokenizer_config.json").string());
  EXPECT_EQ(cfg["added_tokens_decoder"]["128256"]["content"], "<|my_tool|>");
  EXPECT_EQ(cfg["added_tokens_decoder"]["128257"]["special"], false);

  Tokenizer tk = Tokenizer::load(out.path().string());
  std::vector<int> enc = tk.encode("call<|my_tool|> then zzqq_newword.", true);
  EXPECT_TRUE(contains(enc, 128256));
  EXPECT_TRUE(contains(enc, 128257));
  EXPECT_EQ(tk.decode(enc, false), "call<|my_tool|> then zzqq_newword.");

  // The reference reads the written files and agrees.
  if (peers_installed()) {
    TempDir tmp;
    write_file((tmp / "t.json").string(), "[\"call<|my_tool|> then zzqq_newword.\"]");
    auto r = run_command("node " + shell_quote((peers_dir() / "tokenizer_encode.mjs").string()) + " " +
                         shell_quote(out.path().string()) + " " + shell_quote((tmp / "t.json").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Json j = parse_json_strict(r.out, "reference");
    EXPECT_EQ(j["results"][0]["ids"].get<std::vector<int>>(), enc);
  }
}

TEST(AppendTokens, SentencePieceModel) {
  auto model = tok512_model();
  CHATVEC_REQUIRE_PATH(model);
  TempDir in, out;
  copy_file(model.string(), (in / "tokenizer.model").string());
  const std::string existing = Vocabulary::load(model.string()).token(403);
  std::vector<int> ids = append_tokens(in.path().string(), out.path().string(),
                                       {{"<|im_start|>", true}, {existing, false}, {"Zorblax", false}});
  EXPECT_EQ(ids, (std::vector<int>{512, 403, 513}));
  Vocabulary v = Vocabulary::load(out.path().string());
  EXPECT_EQ(v.size(), 514u);
  EXPECT_EQ(v.type(512), TokenType::Control);
  EXPECT_EQ(v.type(513), TokenType::UserDefined);
  EXPECT_EQ(v.token(513), "Zorblax");
  // libsentencepiece loads it and matches the user-defined piece in text.
  Tokenizer tk = Tokenizer::load(out.path().string());
  std::vector<int> enc = tk.encode("Lily met Zorblax", false);
  EXPECT_TRUE(contains(enc, 513));
  EXPECT_EQ(tk.decode(enc), "Lily met Zorblax");
  // Unchanged text encodes as before.
  Tokenizer orig = Tokenizer::load(model.string());
  EXPECT_EQ(tk.encode("Once upon a time", true), orig.encode("Once upon a time", true));
}

TEST(AppendTokens, Errors) {
  auto l2 = lenml_models("llama2");
  auto model = tok512_model();
  CHATVEC_REQUIRE_PATH(l2);
  CHATVEC_REQUIRE_PATH(model);
  TempDir in, out;
  // tokenizer.json of 32000 tokens beside a 512-piece tokenizer.model.
  copy_file((l2 / "tokenizer.json").string(), (in / "tokenizer.json").string());
  copy_file(model.string(), (in / "tokenizer.model").string());
  EXPECT_THROW(append_tokens(in.path().string(), out.path().string(), {{"<new>", true}}), InputError);
  EXPECT_THROW(append_tokens(l2.string(), l2.string(), {{"<new>", true}}), InputError);
  EXPECT_THROW(append_tokens(l2.string(), out.path().string(), {{"", true}}), InputError);
}

// Loads the real Llama-3 tokenizer (128,256 tokens, 280k merges) and records
// how long it took; the time is a measurement, not an assertion (speed is
// checked by benchmarks, never by timed unit tests: CI machines are shared).
TEST(TokenizerLoad, Llama3Loads) {
  auto dir = lenml_models("llama3");
  CHATVEC_REQUIRE_PATH(dir);
  auto t0 = std::chrono::steady_clock::now();
  Tokenizer tk = Tokenizer::load(dir.string());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("tokenizer_load_seconds", std::to_string(secs));
  std::printf("[ llama3 ] Tokenizer::load %.3f s\n", secs);
  EXPECT_EQ(tk.vocab().size(), 128256u);
}

}  // namespace
}  // namespace chatvec

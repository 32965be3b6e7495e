// Vocabulary reading (tokenizer.json, tokenizer.model) and append_tokens().
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "tokenizer/vocab.h"
#include "tokenizer_test_util.h"

namespace chatvec {
namespace {

using namespace chatvec::testing;

TEST(Vocabulary, Llama2Json) {
  auto dir = lenml_models("llama2");
  CHATVEC_REQUIRE_PATH(dir);
  Vocabulary v = Vocabulary::load(dir.string());
  EXPECT_EQ(v.size(), 32000u);
  EXPECT_EQ(v.base_size(), 32000u);
  EXPECT_EQ(v.kind(), ModelKind::SentencePieceBpe);
  EXPECT_EQ(v.format(), TokenizerFormat::HfJson);
  EXPECT_TRUE(v.byte_fallback());
  EXPECT_EQ(v.bos_id(), 1);
  EXPECT_EQ(v.eos_id(), 2);
  EXPECT_EQ(v.unk_id(), 0);
  EXPECT_FALSE(v.pad_id().has_value());
  EXPECT_TRUE(v.add_bos_default());
  EXPECT_EQ(v.token(1), "<s>");
  EXPECT_EQ(v.type(0), TokenType::Unknown);
  EXPECT_EQ(v.type(1), TokenType::Control);
  EXPECT_TRUE(v.is_special(2));
  EXPECT_EQ(v.type(3), TokenType::Byte);
  EXPECT_EQ(v.token(3), "<0x00>");
  EXPECT_EQ(v.type(v.id("<0xFF>")), TokenType::Byte);
  EXPECT_EQ(v.type(v.id("\xE2\x96\x81t")), TokenType::Normal);
  EXPECT_EQ(v.added_tokens().size(), 3u);
  ASSERT_EQ(v.merges().size(), 58980u);
  EXPECT_EQ(v.merges()[0], std::make_pair(std::string("\xE2\x96\x81"), std::string("t")));
  EXPECT_EQ(v.id("no such token"), -1);
  EXPECT_THROW(v.token(32000), InputError);
}

TEST(Vocabulary, Llama3Json) {
  auto dir = lenml_models("llama3");
  CHATVEC_REQUIRE_PATH(dir);
  auto t0 = std::chrono::steady_clock::now();
  Vocabulary v = Vocabulary::load(dir.string());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("load_seconds", std::to_string(secs));
  EXPECT_LT(secs, 3.0);  // well under a second in Release; generous for sanitizers
  EXPECT_EQ(v.size(), 128256u);
  EXPECT_EQ(v.base_size(), 128000u);
  EXPECT_EQ(v.kind(), ModelKind::ByteLevelBpe);
  EXPECT_FALSE(v.byte_fallback());
  EXPECT_EQ(v.added_tokens().size(), 256u);
  EXPECT_EQ(v.bos_id(), 128000);
  EXPECT_EQ(v.eos_id(), 128001);
  EXPECT_EQ(v.id("<|eot_id|>"), 128009);
  EXPECT_EQ(v.id("<|start_header_id|>"), 128006);
  EXPECT_TRUE(v.is_special(128009));
  EXPECT_EQ(v.type(128009), TokenType::Control);
  EXPECT_EQ(v.type(0), TokenType::Normal);
  EXPECT_FALSE(v.unk_id().has_value());
  // This tokenizer.json's post-processor is plain ByteLevel: no BOS added.
  EXPECT_FALSE(v.add_bos_default());
  EXPECT_EQ(v.merges().size(), 280147u);
  EXPECT_EQ(v.id("\xC4\xA0the"), 279);  // "Ġthe"
}

TEST(Vocabulary, Qwen3Json) {
  auto dir = lenml_models("qwen3");
  CHATVEC_REQUIRE_PATH(dir);
  Vocabulary v = Vocabulary::load(dir.string());
  EXPECT_EQ(v.base_size(), 151643u);
  EXPECT_EQ(v.added_tokens().size(), 26u);
  EXPECT_EQ(v.size(), 151643u + 26u);
  EXPECT_EQ(v.kind(), ModelKind::ByteLevelBpe);
  EXPECT_FALSE(v.bos_id().has_value());  // "bos_token": null
  EXPECT_EQ(v.eos_id(), v.id("<|im_end|>"));
  EXPECT_EQ(v.id("<|im_end|>"), 151645);
  EXPECT_EQ(v.pad_id(), 151643);
  EXPECT_EQ(v.id("<|im_start|>"), 151644);
  EXPECT_TRUE(v.is_special(151644));
  // <think> is added but not special.
  int think = v.id("<think>");
  ASSERT_GE(think, 0);
  EXPECT_TRUE(v.is_added(think));
  EXPECT_FALSE(v.is_special(think));
  EXPECT_EQ(v.type(think), TokenType::UserDefined);
  EXPECT_FALSE(v.add_bos_default());
  EXPECT_EQ(v.merges().size(), 151387u);
}

TEST(Vocabulary, SentencePieceModel) {
  auto path = tok512_model();
  CHATVEC_REQUIRE_PATH(path);
  Vocabulary v = Vocabulary::load(path.string());
  EXPECT_EQ(v.format(), TokenizerFormat::SentencePieceModel);
  EXPECT_EQ(v.size(), 512u);
  EXPECT_EQ(v.bos_id(), 1);
  EXPECT_EQ(v.eos_id(), 2);
  EXPECT_EQ(v.unk_id(), 0);
  EXPECT_EQ(v.token(0), "<unk>");
  EXPECT_EQ(v.token(1), "<s>");
  EXPECT_EQ(v.type(0), TokenType::Unknown);
  EXPECT_EQ(v.type(1), TokenType::Control);
  EXPECT_EQ(v.type(2), TokenType::Control);
  EXPECT_TRUE(v.add_bos_default());
  EXPECT_TRUE(v.merges().empty());
}

TEST(Vocabulary, MalformedFilesNameTheFile) {
  TempDir tmp;
  auto bad = (tmp / "tokenizer.json").string();
  write_file(bad, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}}}");
  try {
    Vocabulary::load(tmp.path().string());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("duplicate"), std::string::npos) << e.what();
  }
  auto bad2 = (tmp / "t2.json").string();
  write_file(bad2, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}}");
  EXPECT_THROW(Vocabulary::load(bad2), InputError);
  auto bad3 = (tmp / "t3.json").string();
  write_file(bad3, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
  EXPECT_THROW(Vocabulary::load(bad3), InputError);
  auto bad4 = (tmp / "t4.json").string();
  write_file(bad4, "{\"model\": ");
  EXPECT_THROW(Vocabulary::load(bad4), InputError);
  auto badm = (tmp / "x.model").string();
  write_file(badm, std::string("\x0a\xff\xff\xff\x0f", 5));
  try {
    Vocabulary::load(badm);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(badm), std::string::npos) << e.what();
  }
  EXPECT_THROW(Vocabulary::load((tmp / "missing").string()), InputError);
  std::filesystem::create_directory(tmp / "empty");
  EXPECT_THROW(Vocabulary::load((tmp / "empty").string()), InputError);
}

}  // namespace
}  // namespace chatvec

#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace chatvec {
namespace {

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::is_letter(U'a'));
  EXPECT_TRUE(unicode::is_letter(U'\u00E9'));
  EXPECT_TRUE(unicode::is_letter(U'\u4F60'));
  EXPECT_FALSE(unicode::is_letter(U'1'));
  EXPECT_FALSE(unicode::is_letter(U'\U0001F600'));
  EXPECT_TRUE(unicode::is_number(U'7'));
  EXPECT_TRUE(unicode::is_number(U'\u00BD'));
  EXPECT_TRUE(unicode::is_number(U'\u0663'));
  EXPECT_TRUE(unicode::is_space(U'\u3000'));
  EXPECT_FALSE(unicode::is_space(U'\u0085'));  // as in JavaScript
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(unicode::nfc("plain"), "plain");
  EXPECT_EQ(unicode::nfc("e\xCC\x81"), "\xC3\xA9");                     // e + acute -> é
  EXPECT_EQ(unicode::nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"), "\xED\x95\x9C");  // Hangul L V T -> 한
  // a + dot below (220) + acute (230) and the other order compose alike.
  EXPECT_EQ(unicode::nfc("a\xCC\x81\xCC\xA3"), unicode::nfc("a\xCC\xA3\xCC\x81"));
  EXPECT_EQ(unicode::nfc("\xE2\x84\xAB"), "\xC3\x85");  // Angstrom sign -> Å (singleton)
}

TEST(Unicode, Utf8) {
  EXPECT_TRUE(unicode::is_valid_utf8("h\xC3\xA9"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xC3"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_EQ(unicode::sanitize_utf8("a\xF0\x9F\x98" "b"), "a\xEF\xBF\xBD" "b");
}

TEST(Pretokenize, Llama3Pieces) {
  std::string s = "Hello  world's 12345\n\n  x";
  std::vector<std::string> got;
  for (auto [b, e] : pretokenize(s, SplitPattern::Llama3)) got.push_back(s.substr(b, e - b));
  std::vector<std::string> want = {"Hello", " ", " world", "'s", " ", "123", "45", "\n\n", " ", " x"};
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace chatvec

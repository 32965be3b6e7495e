// Encode/decode against the reference: transformers.js (@lenml/tokenizers
// 3.7.2) for the tokenizer.json files, libsentencepiece for tokenizer.model.
#include <gtest/gtest.h>

#include <chrono>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace chatvec {
namespace {

using namespace chatvec::testing;

struct Reference {
  std::vector<int> ids;
  std::string decoded, decoded_skip;
};

std::vector<Reference> run_reference(const fs::path& models, const std::vector<std::string>& texts) {
  TempDir tmp;
  Json arr = Json::array();
  for (const auto& t : texts) arr.push_back(t);
  auto path = (tmp / "texts.json").string();
  write_file(path, arr.dump());
  auto r = run_command("node " + shell_quote((peers_dir() / "tokenizer_encode.mjs").string()) + " " +
                       shell_quote(models.string()) + " " + shell_quote(path));
  if (r.exit_code != 0) throw std::runtime_error("reference failed: " + r.err);
  Json j = parse_json_strict(r.out, "reference output");
  std::vector<Reference> out;
  for (const auto& e : j.at("results"))
    out.push_back({e.at("ids").get<std::vector<int>>(), e.at("decoded").get<std::string>(),
                   e.at("decoded_skip").get<std::string>()});
  return out;
}

std::string show(const std::vector<int>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

bool contains_added(const Vocabulary& v, const std::string& text) {
  for (const auto& a : v.added_tokens())
    if (text.find(a.content) != std::string::npos) return true;
  return false;
}

// Compares every sample with the reference; returns the number identical.
void compare_with_reference(const std::string& name) {
  auto models = lenml_models(name);
  CHATVEC_REQUIRE_PATH(models);
  if (!peers_installed()) GTEST_SKIP() << "peers not installed";
  Tokenizer tk = Tokenizer::load(models.string());
  std::vector<std::string> texts = sample_texts();
  // A longer text for timing.
  std::string big;
  while (big.size() < 4096)
    for (size_t i = 5; i < 12; ++i) big += sample_texts()[i] + " ";
  texts.push_back(big);
  auto ref = run_reference(models, texts);
  ASSERT_EQ(ref.size(), texts.size());

  int identical = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string& x = texts[i];
    SCOPED_TRACE("text " + std::to_string(i) + ": " + x.substr(0, 80));
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int> ids = tk.encode(x, /*add_bos=*/true);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (x.size() > 4000) {
      ::testing::Test::RecordProperty("encode_4k_ms", std::to_string(ms));
      EXPECT_LT(ms, 100.0) << "encode of " << x.size() << " bytes took " << ms << " ms";
    }
    EXPECT_EQ(show(ids), show(ref[i].ids));
    if (ids == ref[i].ids) ++identical;

    EXPECT_EQ(tk.decode(ref[i].ids, /*skip_special=*/false), ref[i].decoded);
    EXPECT_EQ(tk.decode(ref[i].ids, /*skip_special=*/true), ref[i].decoded_skip);

    // Round trip: exact for text free of added tokens (and for byte-level
    // BPE always, keeping special tokens), modulo NFC where the tokenizer
    // normalizes.
    std::string expect = x;
    if (name == "qwen3") expect = unicode::nfc(x);
    if (!contains_added(tk.vocab(), x)) {
      EXPECT_EQ(tk.decode(ids), expect);
    }
    if (tk.vocab().kind() == ModelKind::ByteLevelBpe) {
      EXPECT_EQ(tk.decode(tk.encode(x, /*add_bos=*/false), false), expect);  // no BOS (Llama-3.1 adds one)
    }

    // Streaming pieces add up to the decoded text.
    std::string streamed;
    int prev = -1;
    for (int id : ids) {
      streamed += tk.decode_piece(prev, id);
      prev = id;
    }
    EXPECT_EQ(streamed, tk.decode(ids));
  }
  ::testing::Test::RecordProperty("identical", std::to_string(identical) + "/" + std::to_string(texts.size()));
  std::printf("[ %s ] identical ids for %d of %zu texts\n", name.c_str(), identical, texts.size());
  EXPECT_EQ(identical, static_cast<int>(texts.size()));
}

// Pseudo-random texts built from fragments that stress the pre-tokenizer
// boundaries (apostrophes, digit runs, whitespace runs before letters and
// newlines, punctuation, multi-byte characters, added tokens).
std::vector<std::string> random_texts(size_t count, uint32_t seed) {
  static const std::vector<std::string> frags = {
      "a", "Z", "word", " the", "'s", "'T", "'re", "'LL", "'", "0", "12", "3456", "7890123", " ", "  ", "\t",
      "\n", "\r\n", " \n", "\n\n", ".", ",", "!?", "...", "(", ")", "{", "}", "-", "_", "/", "\"", "#",
      "\xC3\xA9", "\xC3\xB1", "\xE4\xBD\xA0\xE5\xA5\xBD", "\xE3\x81\x82", "\xF0\x9F\x98\x80",
      "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "\xD9\xA3", "\xC2\xBD", "\xE2\x80\x94", "\xC2\xA0",
      "\xE1\x84\x92\xE1\x85\xA1", "e\xCC\x81", "<|eot_id|>", "<|im_start|>", "</s>", "<think>", "<0x41>",
      "\xE2\x96\x81", "\x01", "\xF0\x9D\x94\x98"};
  std::vector<std::string> out;
  uint32_t state = seed;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  for (size_t i = 0; i < count; ++i) {
    std::string t;
    size_t n = 1 + next() % 24;
    for (size_t k = 0; k < n; ++k) t += frags[next() % frags.size()];
    out.push_back(t);
  }
  return out;
}

void compare_random(const std::string& name) {
  auto models = lenml_models(name);
  CHATVEC_REQUIRE_PATH(models);
  if (!peers_installed()) GTEST_SKIP() << "peers not installed";
  Tokenizer tk = Tokenizer::load(models.string());
  auto texts = random_texts(300, 12345);
  auto ref = run_reference(models, texts);
  ASSERT_EQ(ref.size(), texts.size());
  int identical = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = tk.encode(texts[i], true);
    if (ids == ref[i].ids) ++identical;
    else ADD_FAILURE() << "text " << i << " \"" << texts[i] << "\": " << show(ids) << " vs reference " << show(ref[i].ids);
    EXPECT_EQ(tk.decode(ref[i].ids, false), ref[i].decoded) << texts[i];
  }
  std::printf("[ %s ] random texts: identical ids for %d of %zu\n", name.c_str(), identical, texts.size());
}

TEST(TokenizerReference, Llama2) { compare_with_reference("llama2"); }
TEST(TokenizerReference, Llama2Random) { compare_random("llama2"); }
TEST(TokenizerReference, Llama3Random) { compare_random("llama3"); }
TEST(TokenizerReference, Qwen3Random) { compare_random("qwen3"); }
TEST(TokenizerReference, Llama3) { compare_with_reference("llama3"); }
TEST(TokenizerReference, Qwen3) { compare_with_reference("qwen3"); }
TEST(TokenizerReference, Llama3_1) { compare_with_reference("llama3_1"); }
TEST(TokenizerReference, Gemma3) { compare_with_reference("gemma3"); }
TEST(TokenizerReference, Gemma3Random) { compare_random("gemma3"); }

TEST(Tokenizer, BosHandling) {
  auto l2 = lenml_models("llama2"), l3 = lenml_models("llama3");
  CHATVEC_REQUIRE_PATH(l2);
  CHATVEC_REQUIRE_PATH(l3);
  Tokenizer a = Tokenizer::load(l2.string());
  EXPECT_TRUE(a.adds_bos());
  EXPECT_EQ(a.encode("Hi", true).front(), 1);
  EXPECT_NE(a.encode("Hi", false).front(), 1);
  EXPECT_EQ(a.decode(a.encode("Hi there", true)), "Hi there");
  EXPECT_EQ(a.decode(a.encode("Hi there", true), false), "<s> Hi there");
  Tokenizer b = Tokenizer::load(l3.string());
  EXPECT_FALSE(b.adds_bos());
  EXPECT_EQ(b.encode("Hi", true), b.encode("Hi", false));
  EXPECT_THROW(b.decode({1 << 30}), InputError);
}

TEST(Tokenizer, SentencePieceModel) {
  auto path = tok512_model();
  CHATVEC_REQUIRE_PATH(path);
  Tokenizer tk = Tokenizer::load(path.string());
  const std::vector<int> expected = {403, 407, 261, 378, 432, 317, 284, 316, 261, 400, 428};
  EXPECT_EQ(tk.encode("Once upon a time, Lily met a dog", false), expected);
  std::vector<int> with_bos = expected;
  with_bos.insert(with_bos.begin(), 1);
  EXPECT_EQ(tk.encode("Once upon a time, Lily met a dog", true), with_bos);
  EXPECT_TRUE(tk.adds_bos());
  EXPECT_EQ(tk.decode(with_bos), "Once upon a time, Lily met a dog");
  EXPECT_EQ(tk.decode(with_bos, false), "<s>Once upon a time, Lily met a dog");
  EXPECT_EQ(tk.encode("", true), std::vector<int>{1});
  for (const auto& x : sample_texts()) {
    auto ids = tk.encode(x, true);
    std::string streamed;
    int prev = -1;
    for (int id : ids) {
      streamed += tk.decode_piece(prev, id);
      prev = id;
    }
    EXPECT_EQ(streamed, tk.decode(ids)) << x;
  }
  // ASCII text without rare characters round-trips (no unknowns).
  std::string s = "Lily and Tom played in the park. They were happy.";
  EXPECT_EQ(tk.decode(tk.encode(s, true)), s);
}

// As Hugging Face's LlamaTokenizer: the special tokens <s>, </s>, <unk> in
// text are split out (a chat template writing {{ eos_token }} gives the EOS
// id); each piece of text between them is encoded on its own (legacy mode:
// with SentencePiece's dummy prefix).  libsentencepiece itself never matches
// them: it encodes "</s>" as the characters.
TEST(Tokenizer, SentencePieceSpecialTokensInText) {
  auto path = tok512_model();
  CHATVEC_REQUIRE_PATH(path);
  Tokenizer tk = Tokenizer::load(path.string());
  auto cat = [](std::vector<std::vector<int>> parts) {
    std::vector<int> out;
    for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  const std::vector<int> a = tk.encode("[INST] Hi [/INST]", false), b = tk.encode(" Hello ", false);
  EXPECT_EQ(tk.encode("<s>[INST] Hi [/INST] Hello </s>", false), cat({{1}, a, b, {2}}));
  EXPECT_EQ(tk.encode("</s><s>", false), (std::vector<int>{2, 1}));
  EXPECT_EQ(tk.encode("x<unk>y", false), cat({tk.encode("x", false), {0}, tk.encode("y", false)}));
  EXPECT_EQ(tk.encode("</s>", true), (std::vector<int>{1, 2}));
  // Not a special token: encoded as text, no id 1/2 in it.
  for (const char* t : {"<s", "</ s>", "<S>", "s>"}) {
    const auto ids = tk.encode(t, false);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), 1) + std::count(ids.begin(), ids.end(), 2), 0) << t;
  }
  // Decoding with specials shown gives the text back.
  EXPECT_EQ(tk.decode(tk.encode("<s>Hi</s>", false), false), "<s>Hi</s>");
}

}  // namespace
}  // namespace chatvec

namespace chatvec {
namespace {

using namespace chatvec::testing;

// Split on a literal string with each of Hugging Face's delimiter behaviours
// (tokenizers' SplitDelimiterBehavior): the merges "a ␣" and "␣ b" show
// where each behaviour cuts "a  b" (two spaces), "␣ ␣" whether a piece holds
// both spaces.
TEST(Tokenizer, SplitOnStringBehaviours) {
  const struct {
    const char* behaviour;
    std::vector<int> ids;
  } cases[] = {
      {"Removed", {0, 1}},                    // a | b
      {"Isolated", {0, 2, 2, 1}},             // a | ␣ | ␣ | b
      {"MergedWithPrevious", {3, 2, 1}},      // a␣ | ␣ | b
      {"MergedWithNext", {0, 2, 4}},          // a | ␣ | ␣b
      {"Contiguous", {0, 5, 1}},              // a | ␣␣ | b
  };
  for (const auto& c : cases) {
    TempDir tmp;
    Json j = Json::parse(R"({"version": "1.0", "added_tokens": [], "normalizer": null,
      "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "", "invert": false},
      "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, " ": 2, "a ": 3, " b": 4, "  ": 5},
                "merges": [["a", " "], [" ", "b"], [" ", " "]]}})");
    j["pre_tokenizer"]["behavior"] = c.behaviour;
    write_file((tmp / "tokenizer.json").string(), j.dump());
    Tokenizer tk = Tokenizer::load((tmp / "tokenizer.json").string());
    EXPECT_EQ(tk.encode("a  b", false), c.ids) << c.behaviour;
  }
}

}  // namespace
}  // namespace chatvec

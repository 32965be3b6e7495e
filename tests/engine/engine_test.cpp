// The engine against independent references: llama2.c's run.c (greedy token
// equality on stories260K) and a PyTorch float64 program (logits and
// perplexity).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "engine/generation.h"
#include "engine/llama_model.h"
#include "engine/sampler.h"
#include "engine_test_support.h"
#include "tiny_model.h"

namespace chatvec::testing {
namespace {

// ---- stories260K -------------------------------------------------------

// Expected ids from llama2.c's run.c (karpathy/llama2.c, master, built with
// `gcc -O3 run.c -lm` in /tmp, with one local fprintf added to print each
// `next` id; not part of this repository):
//   ./run stories260K.bin -z tok512.bin -t 0.0 -n 100 -i "Once upon a time"
//   ./run stories260K.bin -z tok512.bin -t 0.0 -n 100 -i "Lily met a dog"
// Prompt ids are BOS (1) + SentencePiece's encoding; run.c then printed
//   "Once upon a time, there was a little girl named Lily. She loved to play
//    outside in the park. One day, she saw a big, red ball. She wanted to play
//    with it, but it was too high.\nLily's mom said, \"Lily, let's go to the
//    park.\" Lily was sad and didn't know w"
// and
//   "Lily met a dog named Max. Max loved to play with his toys. One day, Max's
//    mom told her that it was time to go to the park. Max was very happy and
//    didn't want to play with it.\nLily's mom said, \"Lily, you can't find it.
//    We can't find it"
struct GreedyCase {
  std::vector<int64_t> prompt;
  std::vector<int64_t> expected;
};
const GreedyCase kGreedy[] = {
    {{1, 403, 407, 261, 378},
     {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
      411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
      338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13,  438, 310,
      439, 419, 357, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 267, 265, 282, 295, 433,
      426, 436, 317, 286, 296, 418, 269, 279, 292, 416, 439, 413, 409, 416, 327, 263}},
    {{1, 317, 284, 316, 261, 400, 428},
     {395, 392, 412, 444, 426, 392, 412, 444, 401, 396, 267, 337, 335, 345, 267, 422, 419, 426, 385, 328,
      432, 392, 412, 444, 439, 419, 357, 267, 341, 311, 351, 312, 286, 378, 267, 298, 414, 267, 265, 282,
      295, 433, 426, 392, 412, 444, 286, 399, 393, 269, 279, 292, 416, 439, 413, 391, 267, 337, 335, 312,
      426, 13,  438, 310, 439, 419, 357, 336, 432, 313, 438, 310, 432, 364, 280, 303, 439, 413, 272, 417,
      264, 312, 426, 410, 448, 411, 280, 303, 439, 413, 272, 417, 264, 312}},
};

TEST(EngineStories, GreedyMatchesLlama2cRunC) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  auto model = LlamaModel::open(converted_stories());
  for (const GreedyCase& c : kGreedy) {
    Sampler greedy({0.0, 1.0, 0});
    std::vector<int64_t> got;
    generate_tokens(*model, greedy, c.prompt, 0, int64_t(c.expected.size()), {},
                    [&](int64_t t) { got.push_back(t); return true; });
    EXPECT_EQ(got, c.expected);
  }
}

TEST(EngineStories, LogitsMatchFloat64Reference) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  const std::string dir = converted_stories();
  auto model = LlamaModel::open(dir);
  std::vector<int64_t> tokens = kGreedy[0].prompt;
  tokens.insert(tokens.end(), kGreedy[0].expected.begin(), kGreedy[0].expected.begin() + 60);
  const double err = max_relative_error(*model, tokens, reference_logits(dir, tokens));
  std::printf("[ stories260K ] max relative logit error vs float64: %.3g\n", err);
  EXPECT_LT(err, 1e-4);
}

// A few verses (one sequence each, BOS first) through our engine and the
// reference; SentencePiece ids come from the reference so that this test
// does not depend on chatvec's tokenizer.
void check_perplexity(const std::string& tsv, int first_line, int lines, double lo, double hi) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  CHATVEC_REQUIRE_PATH(shared_dir() / "data" / "bible" / tsv);
  TempDir tmp;
  {
    std::ifstream in(shared_dir() / "data" / "bible" / tsv);
    std::ofstream out(tmp / "verses.txt");
    std::string line;
    for (int i = 0; std::getline(in, line) && i < first_line + lines; ++i)
      if (i >= first_line) out << line.substr(line.find('\t') + 1) << "\n";
  }
  const std::string dir = converted_stories();
  Json ref = reference_nll_text(dir, (tmp / "verses.txt").string(), (stories_dir() / "tok512.model").string());
  auto model = LlamaModel::open(dir);
  double nll = 0;
  int64_t count = 0;
  for (const Json& ids : ref["ids"]) {
    SequenceScore s = score_sequence(*model, ids.get<std::vector<int64_t>>());
    nll += s.nll;
    count += s.predicted;
  }
  const double ppl = std::exp(nll / double(count)), ref_ppl = ref["perplexity"].get<double>();
  std::printf("[ %s ] %d verses, %lld tokens: perplexity %.4f (reference %.4f)\n", tsv.c_str(), lines,
              (long long)count, ppl, ref_ppl);
  EXPECT_EQ(count, ref["count"].get<int64_t>());
  EXPECT_NEAR(nll, ref["nll"].get<double>(), 1e-5 * std::abs(ref["nll"].get<double>()));
  EXPECT_GT(ppl, lo);
  EXPECT_LT(ppl, hi);
}

TEST(EngineStories, PerplexityEnglishKjv) { check_perplexity("bible-en-kjv.tsv", 0, 20, 30, 250); }
TEST(EngineStories, PerplexitySpanishRv1909) { check_perplexity("bible-es-rv1909.tsv", 0, 20, 800, 20000); }

// ---- generated models ---------------------------------------------------

struct TinyCase {
  const char* name;
  Json (*config)();
  DType dtype;
  int64_t tokens;
};

void PrintTo(const TinyCase& c, std::ostream* os) { *os << c.name; }

class EngineTiny : public ::testing::TestWithParam<TinyCase> {};

TEST_P(EngineTiny, LogitsMatchFloat64Reference) {
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  const TinyCase& c = GetParam();
  TempDir tmp;
  write_tiny_model(tmp.path().string(), {c.config(), c.dtype, 7});
  auto model = LlamaModel::open(tmp.path().string());
  const std::vector<int64_t> tokens = some_tokens(c.tokens, model->config().vocab_size, 11);
  const double err = max_relative_error(*model, tokens, reference_logits(tmp.path().string(), tokens));
  std::printf("[ %s ] max relative logit error vs float64: %.3g\n", c.name, err);
  EXPECT_LT(err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Models, EngineTiny,
    ::testing::Values(TinyCase{"llama3_gqa_f32", tiny_llama3_config, DType::F32, 100},
                      TinyCase{"llama3_gqa_bf16", tiny_llama3_config, DType::BF16, 100},
                      TinyCase{"qwen2_bias_f32", tiny_qwen2_config, DType::F32, 40},
                      TinyCase{"qwen2_bias_bf16", tiny_qwen2_config, DType::BF16, 40},
                      TinyCase{"qwen2_bias_f16", tiny_qwen2_config, DType::F16, 40},
                      TinyCase{"mistral_window_f32", tiny_mistral_config, DType::F32, 30}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- configuration errors ----------------------------------------------

void expect_config_error(Json cfg, const std::string& needle) {
  try {
    parse_model_config(cfg, "config.json");
    ADD_FAILURE() << "accepted; expected an error about " << needle;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(EngineConfig, RejectsWithFieldName) {
  Json c = tiny_llama3_config();
  c["architectures"] = {"GPT2LMHeadModel"};
  expect_config_error(c, "\"architectures\"");
  c = tiny_llama3_config();
  c["rope_scaling"]["rope_type"] = "yarn";
  expect_config_error(c, "rope_scaling.rope_type");
  c = tiny_llama3_config();
  c.erase("hidden_size");
  expect_config_error(c, "\"hidden_size\"");
  c = tiny_llama3_config();
  c["num_key_value_heads"] = 3;
  expect_config_error(c, "\"num_key_value_heads\"");
  c = tiny_llama3_config();
  c["hidden_act"] = "gelu";
  expect_config_error(c, "\"hidden_act\"");
  c = tiny_llama3_config();
  c["rope_scaling"].erase("low_freq_factor");
  expect_config_error(c, "rope_scaling.low_freq_factor");
  c = tiny_llama3_config();
  c["rms_norm_eps"] = "small";
  expect_config_error(c, "\"rms_norm_eps\"");
}

TEST(EngineConfig, ReadsFields) {
  ModelConfig c = parse_model_config(tiny_llama3_config(), "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.rope_scaling, RopeScaling::Llama3);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 3}));
  ModelConfig q = parse_model_config(tiny_qwen2_config(), "config.json");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_TRUE(q.tie_word_embeddings);
  EXPECT_EQ(q.head_dim, 8);
}

TEST(EngineModel, MissingTensorNamed) {
  TempDir tmp;
  Json cfg = tiny_qwen2_config();
  cfg["tie_word_embeddings"] = false;  // the file has no lm_head.weight
  write_tiny_model(tmp.path().string(), {tiny_qwen2_config(), DType::F32, 1});
  fs::remove(tmp / "config.json");
  write_file((tmp / "config.json").string(), dump_json_pretty(cfg));
  try {
    LlamaModel::open(tmp.path().string());
    ADD_FAILURE() << "accepted a model without lm_head.weight";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("lm_head.weight"), std::string::npos) << e.what();
  }
}

TEST(EngineModel, PositionBeyondContextIsAnError) {
  TempDir tmp;
  write_tiny_model(tmp.path().string(), {tiny_mistral_config(), DType::F32, 1});
  auto m = LlamaModel::open(tmp.path().string(), {4});
  for (int p = 0; p < 4; ++p) m->forward(1, p);
  EXPECT_THROW(m->forward(1, 4), InputError);
  EXPECT_THROW(m->forward(128, 0), InputError);
}

// ---- sampler -------------------------------------------------------------

TEST(Sampler, GreedyAndSeeded) {
  const float logits[5] = {0.1f, 2.0f, 2.0f, -1.0f, 1.5f};
  EXPECT_EQ(argmax(logits, 5), 1);
  Sampler g({0.0, 1.0, 5});
  EXPECT_EQ(g.sample(logits, 5), 1);
  Sampler a({1.0, 0.9, 42}), b({1.0, 0.9, 42});
  std::vector<int64_t> sa, sb;
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 2000; ++i) {
    sa.push_back(a.sample(logits, 5));
    sb.push_back(b.sample(logits, 5));
    seen[sa.back()]++;
  }
  EXPECT_EQ(sa, sb);
  // top-p 0.9 keeps {1, 2, 4} (mass of the top two is ~0.70, three ~0.94).
  EXPECT_EQ(seen[0], 0);
  EXPECT_EQ(seen[3], 0);
  EXPECT_GT(seen[4], 100);
  Sampler tiny_p({1.0, 0.01, 3});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(tiny_p.sample(logits, 5), 1);
  EXPECT_THROW(Sampler({-1.0, 0.9, 0}), InputError);
  EXPECT_THROW(Sampler({1.0, 0.0, 0}), InputError);
}

}  // namespace
}  // namespace chatvec::testing

namespace chatvec::testing {
namespace {

// Batched prompt processing gives bit-identical logits to one token at a
// time (each dot product is computed the same way).
TEST(EngineModel, BatchEqualsStepwiseBitForBit) {
  for (DType dt : {DType::F32, DType::BF16}) {
    TempDir tmp;
    write_tiny_model(tmp.path().string(), {tiny_llama3_config(), dt, 3});
    auto a = LlamaModel::open(tmp.path().string()), b = LlamaModel::open(tmp.path().string());
    const std::vector<int64_t> tokens = some_tokens(77, 300, 5);  // 2 full batches + 13
    const int64_t V = 300;
    std::vector<float> stepwise;
    for (size_t p = 0; p < tokens.size(); ++p) {
      const float* lg = a->forward(tokens[p], int64_t(p));
      if (p >= 70) stepwise.insert(stepwise.end(), lg, lg + V);
    }
    b->forward_batch(tokens.data(), 70, 0);
    const float* all = b->forward_batch(tokens.data() + 70, 7, 70, true);
    EXPECT_EQ(0, std::memcmp(all, stepwise.data(), stepwise.size() * 4)) << dtype_name(dt);
    // Last-token mode across several internal batches.
    auto c = LlamaModel::open(tmp.path().string());
    const float* last = c->forward_batch(tokens.data(), 77, 0);
    EXPECT_EQ(0, std::memcmp(last, stepwise.data() + 6 * V, V * 4));
  }
}

}  // namespace
}  // namespace chatvec::testing

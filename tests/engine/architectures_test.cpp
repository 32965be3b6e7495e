// Qwen3, Gemma 2 and Gemma 3 in the engine against the float64 reference
// (tests/engine/reference_gemma_qwen3.py, written from transformers' model
// definitions), on small generated models that use every feature: GQA,
// head_dim != hidden / heads, tied and untied heads, q/k norms, Gemma's
// (1 + w) norms and sandwich norms, GELU, embedding scaling, query scaling,
// attention and final soft-capping in their non-linear range, sliding windows
// shorter than the prompt on some layers, Gemma 3's two rotary embeddings.
// Each feature is also shown to matter: the engine run with the feature
// changed in config.json is far from the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "engine/llama_model.h"
#include "engine_test_support.h"
#include "formats/model_config.h"

namespace chatvec::testing {
namespace {

constexpr int64_t kTokens = 40;  // longer than every sliding window below

struct ArchCase {
  const char* name;
  const char* args;  // make_synthetic_model.py flags
};

// Shapes: hidden 32, 4 query heads, 2 key/value heads of head_dim 16
// (q_dim 64 != hidden), fan-in initialisation (activations of order one).
const ArchCase kCases[] = {
    {"qwen3_f32",
     "--arch qwen3 --dtype f32 --tied --set rope_theta=1000000.0"},
    {"qwen3_untied_bf16", "--arch qwen3 --dtype bf16 --layers 3"},
    {"gemma2_f32",
     "--arch gemma2 --dtype f32 --layers 4 --set sliding_window=8 --set attn_logit_softcapping=1.5 "
     "--set final_logit_softcapping=5.0 --set query_pre_attn_scalar=24"},
    {"gemma3_bf16",
     "--arch gemma3 --dtype bf16 --layers 6 --set sliding_window=8 --set sliding_window_pattern=3 "
     "--set rope_theta=100.0 --set rope_local_base_freq=10000.0 "
     "--set 'rope_scaling={\"rope_type\":\"linear\",\"factor\":4.0}' --set final_logit_softcapping=5.0"},
    {"gemma3_layer_types_f16",
     "--arch gemma3 --dtype f16 --layers 4 --set sliding_window=6 --set tie_word_embeddings=false "
     "--set 'layer_types=[\"sliding_attention\",\"full_attention\",\"sliding_attention\",\"sliding_attention\"]' "
     "--set attn_logit_softcapping=2.0 --set query_pre_attn_scalar=20"},
};
constexpr const char* kCommon =
    " --vocab 128 --hidden 32 --intermediate 64 --heads 4 --kv-heads 2 --head-dim 16 --init fan-in --seed 5";

class EngineArchitectures : public SharedDirSuite<EngineArchitectures> {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists("/usr/bin/python3")) {
      why_ = "/usr/bin/python3 is absent";
      return;
    }
    tmp_ = new TempDir();
    ok_ = true;
    std::vector<ReferenceJob> jobs;
    for (const ArchCase& c : kCases) {
      gen(c.name, std::string(c.args) + kCommon);
      jobs.push_back({path(c.name), tokens()});
    }
    if (!ok_) return;
    try {
      const auto refs = reference_logits_batch(jobs);
      for (size_t i = 0; i < jobs.size(); ++i) refs_[kCases[i].name] = refs[i];
    } catch (const std::exception& e) {
      ok_ = false;
      why_ = e.what();
    }
  }
  static std::vector<int64_t> tokens() { return some_tokens(kTokens, 128, 23); }

  // The engine's error against the reference of `name`, on the model with
  // `change` applied to config.json (in a copy of the directory).
  static double error_with(const std::string& name, const Json& change) {
    TempDir d;
    Json cfg = read_json_file(path(name) + "/config.json");
    for (auto it = change.begin(); it != change.end(); ++it) cfg[it.key()] = it.value();
    write_file((d / "config.json").string(), dump_json_pretty(cfg));
    fs::copy_file(path(name) + "/model.safetensors", d / "model.safetensors");
    auto m = LlamaModel::open(d.path().string());
    return max_relative_error(*m, tokens(), refs_.at(name));
  }

  static void batched_equals_stepwise();
  static void every_feature_matters();

  inline static std::map<std::string, std::vector<double>> refs_;
};

// One test: under ctest each test is a process of its own, which would
// generate the models and run the reference again.
TEST_F(EngineArchitectures, LogitsMatchFloat64Reference) {
  SCOPED_TRACE("logits");
  for (const ArchCase& c : kCases) {
    auto m = LlamaModel::open(path(c.name));
    const double err = max_relative_error(*m, tokens(), refs_.at(c.name));
    std::printf("[ %s ] max relative logit error vs float64: %.3g\n", c.name, err);
    EXPECT_LT(err, 1e-4) << c.name;
  }
  batched_equals_stepwise();
  every_feature_matters();
}

// Prompt batches give the logits of one token at a time, bit for bit.
void EngineArchitectures::batched_equals_stepwise() {
  for (const ArchCase& c : kCases) {
    auto a = LlamaModel::open(path(c.name)), b = LlamaModel::open(path(c.name));
    const std::vector<int64_t> t = tokens();
    const int64_t V = a->config().vocab_size;
    std::vector<float> stepwise;
    for (size_t p = 0; p < t.size(); ++p) {
      const float* lg = a->forward(t[p], int64_t(p));
      if (p >= 20) stepwise.insert(stepwise.end(), lg, lg + V);
    }
    b->forward_batch(t.data(), 20, 0);
    const float* all = b->forward_batch(t.data() + 20, 20, 20, true);
    EXPECT_EQ(0, std::memcmp(all, stepwise.data(), stepwise.size() * 4)) << c.name;
  }
}

// Each feature changes the logits well beyond the tolerance, so the match
// above could not hold if the engine ignored it.
void EngineArchitectures::every_feature_matters() {
  const struct {
    const char* model;
    const char* change;
  } changes[] = {
      {"gemma2_f32", R"({"attn_logit_softcapping": null})"},
      {"gemma2_f32", R"({"final_logit_softcapping": null})"},
      {"gemma2_f32", R"({"sliding_window": 4096})"},
      {"gemma2_f32", R"({"query_pre_attn_scalar": 16})"},
      {"gemma3_bf16", R"({"sliding_window_pattern": 1000})"},    // no global layer
      {"gemma3_bf16", R"({"rope_local_base_freq": 100.0})"},     // local rotary = global base
      {"gemma3_bf16", R"({"rope_scaling": null})"},              // global rotary unscaled
      {"gemma3_bf16", R"({"final_logit_softcapping": null})"},
      {"gemma3_layer_types_f16", R"({"layer_types": null})"},  // the default pattern instead
      {"gemma3_layer_types_f16", R"({"attn_logit_softcapping": null})"},
      {"qwen3_f32", R"({"rope_theta": 10000.0})"},
  };
  for (const auto& ch : changes) {
    const double err = error_with(ch.model, Json::parse(ch.change));
    std::printf("[ %s %s ] error %.3g\n", ch.model, ch.change, err);
    EXPECT_GT(err, 1e-3) << ch.model << " " << ch.change << " makes no difference";
  }
}

// ---- configuration ----------------------------------------------------------

Json gemma3_config() {
  return Json::parse(R"({
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "vocab_size": 262144, "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 32768, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512,
    "sliding_window_pattern": 6, "attn_logit_softcapping": null, "final_logit_softcapping": null,
    "bos_token_id": 2, "eos_token_id": [1, 106], "torch_dtype": "bfloat16"})");
}

Json gemma2_config() {
  return Json::parse(R"({
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "attention_bias": false,
    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
    "intermediate_size": 9216, "max_position_embeddings": 8192, "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 256000, "bos_token_id": 2, "eos_token_id": [1, 107]})");
}

Json qwen3_config() {
  return Json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": false, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072, "max_position_embeddings": 40960,
    "max_window_layers": 28, "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
    "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151936})");
}

// The published configs of gemma-3-1b, gemma-2-2b and Qwen3-0.6B read as
// their modeling code reads them.
TEST(EngineArchConfig, ReadsPublishedConfigs) {
  const ModelConfig g3 = parse_model_config(gemma3_config(), "config.json");
  EXPECT_TRUE(g3.qk_norm && g3.sandwich_norms && g3.norm_weight_offset && g3.tie_word_embeddings);
  EXPECT_EQ(g3.activation, Activation::GeluTanh);
  EXPECT_DOUBLE_EQ(g3.embedding_multiplier, std::sqrt(1152.0));
  EXPECT_DOUBLE_EQ(g3.attention_scale(), 1.0 / 16);
  EXPECT_EQ(g3.attn_logit_softcap, 0);
  EXPECT_EQ(g3.final_logit_softcap, 0);
  EXPECT_EQ(g3.sliding_window, 512);
  for (int64_t l = 0; l < 26; ++l) EXPECT_EQ(g3.is_sliding(l), l % 6 != 5) << l;
  EXPECT_TRUE(g3.has_local_rope);
  EXPECT_EQ(g3.rope(0).theta, 10000);
  EXPECT_EQ(g3.rope(5).theta, 1e6);

  const ModelConfig g2 = parse_model_config(gemma2_config(), "config.json");
  EXPECT_FALSE(g2.qk_norm);
  EXPECT_TRUE(g2.sandwich_norms && g2.tie_word_embeddings);
  EXPECT_EQ(g2.attn_logit_softcap, 50);
  EXPECT_EQ(g2.final_logit_softcap, 30);
  for (int64_t l = 0; l < 26; ++l) EXPECT_EQ(g2.is_sliding(l), l % 2 == 0) << l;
  EXPECT_FALSE(g2.has_local_rope);

  const ModelConfig q3 = parse_model_config(qwen3_config(), "config.json");
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.sandwich_norms || q3.norm_weight_offset || q3.qkv_bias);
  EXPECT_EQ(q3.head_dim, 128);
  EXPECT_EQ(q3.sliding_window, 0);
  EXPECT_DOUBLE_EQ(q3.attention_scale(), 1.0 / std::sqrt(128.0));

  // Gemma 3 27B's query scaling, and Gemma 4B+'s rotary scaling (global
  // layers only).
  Json c = gemma3_config();
  c["query_pre_attn_scalar"] = 168;
  c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  const ModelConfig big = parse_model_config(c, "config.json");
  EXPECT_DOUBLE_EQ(big.attention_scale(), 1.0 / std::sqrt(168.0));
  EXPECT_EQ(big.rope(5).scaling, RopeScaling::Linear);
  EXPECT_EQ(big.rope(5).factor, 8.0);
  EXPECT_EQ(big.rope(0).scaling, RopeScaling::None);
}

// transformers 5 writes the rotary settings as rope_parameters (one object,
// or one per layer type): the same model.
TEST(EngineArchConfig, RopeParametersEqualOldFields) {
  Json v5 = gemma3_config();
  for (const char* k : {"rope_theta", "rope_local_base_freq", "rope_scaling"}) v5.erase(k);
  v5["rope_parameters"] = Json::parse(R"({"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000},
                                          "sliding_attention": {"rope_type": "default", "rope_theta": 10000}})");
  Json old = gemma3_config();
  old["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  const ModelConfig a = parse_model_config(v5, "config.json"), b = parse_model_config(old, "config.json");
  for (int64_t l : {0, 5}) {
    EXPECT_EQ(rope_inv_freq(a.rope(l), a.head_dim), rope_inv_freq(b.rope(l), b.head_dim)) << l;
  }
  Json q = qwen3_config();
  q.erase("rope_theta");
  q["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  EXPECT_EQ(parse_model_config(q, "config.json").rope_theta, 5e5);
}

void expect_config_error(Json cfg, const std::string& needle) {
  try {
    parse_model_config(cfg, "config.json");
    ADD_FAILURE() << "accepted; expected an error about " << needle;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(EngineArchConfig, RejectsUnsupportedValuesNamingTheField) {
  Json c = gemma2_config();
  c["hidden_activation"] = "gelu";
  expect_config_error(c, "\"hidden_activation\"");
  c = gemma3_config();
  c["layer_types"] = Json::array({"sliding_attention"});
  expect_config_error(c, "\"layer_types\"");
  c = gemma3_config();
  c["layer_types"] = Json::array();
  for (int i = 0; i < 26; ++i) c["layer_types"].push_back(i == 3 ? "chunked_attention" : "full_attention");
  expect_config_error(c, "chunked_attention");
  c = qwen3_config();
  c["layer_types"] = Json::array();
  for (int i = 0; i < 28; ++i) c["layer_types"].push_back("sliding_attention");
  expect_config_error(c, "\"layer_types\"");
  c = qwen3_config();
  c["use_sliding_window"] = true;
  expect_config_error(c, "\"use_sliding_window\"");
  c = qwen3_config();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_config_error(c, "rope_scaling.rope_type");
  c = gemma3_config();
  c["rope_parameters"] = {{"full_attention", {{"rope_type", "dynamic"}}}};
  expect_config_error(c, "rope_parameters.full_attention.rope_type");
  c = gemma2_config();
  c["attention_bias"] = true;
  expect_config_error(c, "\"attention_bias\"");
  c = gemma2_config();
  c["attn_logit_softcapping"] = -1.0;
  expect_config_error(c, "\"attn_logit_softcapping\"");
  c = gemma3_config();
  c["architectures"] = {"Gemma3ForConditionalGeneration"};
  expect_config_error(c, "multimodal");
  c["architectures"] = {"Qwen3MoeForCausalLM"};
  expect_config_error(c, "mixture-of-experts");
}

TEST(EngineArchConfig, MissingGemmaNormNamed) {
  TempDir tmp;
  auto r = make_synthetic_model(tmp.path().string(), "--arch gemma2 --dtype f32 --drop model.layers.1.post_feedforward_layernorm.weight");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  try {
    LlamaModel::open(tmp.path().string());
    ADD_FAILURE() << "accepted a Gemma 2 model without a post-feedforward norm";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.post_feedforward_layernorm.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chatvec::testing

namespace chatvec::testing {
namespace {

// The trainer runs Llama-style layers only and says so for the others.
TEST(EngineArchConfig, TrainRefusesOtherArchitectures) {
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  for (const char* arch : {"qwen3", "gemma2", "gemma3"}) {
    TempDir tmp;
    auto g = make_synthetic_model((tmp / "m").string(), std::string("--arch ") + arch + " --dtype f32");
    ASSERT_EQ(g.exit_code, 0) << g.err;
    write_file((tmp / "data.txt").string(), "one line of text\n");
    CommandResult r = run_command(shell_quote(chatvec_bin()) + " -q train " + shell_quote((tmp / "m").string()) +
                                  " --data " + shell_quote((tmp / "data.txt").string()) + " -o " +
                                  shell_quote((tmp / "out").string()) + " --steps 1");
    EXPECT_EQ(r.exit_code, 2) << arch << ": " << r.err;
    EXPECT_NE(r.err.find("train: architecture "), std::string::npos) << arch << ": " << r.err;
    EXPECT_FALSE(fs::exists(tmp / "out")) << arch;
  }
}

}  // namespace
}  // namespace chatvec::testing

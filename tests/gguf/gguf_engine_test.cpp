// The engine reading a GGUF file in place (gguf/gguf_model.h): logits equal
// those of the safetensors directory the file was exported from (bit for bit
// for F32 / F16 / BF16, and for Q8_0 against the import of the same file,
// which dequantises to F32), the Q8_0 file within a stated distance of the
// unquantised model, and malformed files rejected in one line with exit 2.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "engine/llama_model.h"
#include "gguf/gguf_export.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_model.h"
#include "test_support.h"
#include "../engine/tiny_model.h"

using namespace chatvec;
using namespace chatvec::gguf;
using namespace chatvec::testing;
namespace fs = std::filesystem;

namespace {

std::string cv() { return shell_quote(chatvec_bin()); }

// A Llama config (GQA, head_dim, untied head: the q/k rows permuted in the
// file) whose widths are whole Q8_0 blocks, and Qwen2 (biases, tied).
Json llama_config() {
  Json c = tiny_llama3_config();
  c.erase("rope_scaling");  // llama3 scaling travels as rope_freqs.weight, which the engine refuses
  return c;
}

// Minimal tokenizer metadata (our engine does not read it; the export needs some).
std::vector<KeyValue> tokenizer_kvs(int64_t vocab) {
  std::vector<std::string> toks;
  for (int64_t i = 0; i < vocab; ++i) toks.push_back("t" + std::to_string(i));
  return {{"tokenizer.ggml.model", Value::str("gpt2")},
          {"tokenizer.ggml.tokens", Value::str_array(toks)},
          {"tokenizer.ggml.token_type", Value::i32_array(std::vector<int32_t>(size_t(vocab), 1))},
          {"tokenizer.ggml.bos_token_id", Value::u32(1)},
          {"tokenizer.ggml.eos_token_id", Value::u32(2)}};
}

std::vector<int64_t> prompt(int64_t vocab) {
  std::vector<int64_t> t;
  for (int i = 0; i < 24; ++i) t.push_back((i * 37 + 5) % vocab);
  return t;
}

std::vector<float> logits(LlamaModel& m, const std::vector<int64_t>& ids) {
  const float* l = m.forward_batch(ids.data(), int64_t(ids.size()), 0, true);
  return std::vector<float>(l, l + ids.size() * size_t(m.config().vocab_size));
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double mx = 0, scale = 0;
  for (float x : b) scale = std::max(scale, std::fabs(double(x)));
  for (size_t i = 0; i < a.size(); ++i) mx = std::max(mx, std::fabs(double(a[i]) - double(b[i])));
  return mx / scale;
}

struct Case {
  const char* name;
  Json (*config)();
  DType dtype;
  TensorType type;
};

class GgufEngine : public ::testing::TestWithParam<Case> {};

TEST_P(GgufEngine, LogitsEqualTheExportedDirectory) {
  const Case& k = GetParam();
  TempDir tmp;
  const std::string dir = (tmp / "model").string(), file = (tmp / "model.gguf").string();
  fs::create_directories(dir);
  const Json cfg = k.config();
  write_tiny_model(dir, {cfg, k.dtype, 7});
  ExportOptions eo;
  eo.type = k.type;
  eo.tokenizer_kvs = tokenizer_kvs(cfg["vocab_size"].get<int64_t>());
  export_gguf(dir, file, eo);

  auto st = LlamaModel::open(dir);
  auto gg = open_gguf_model(file);
  EXPECT_EQ(gg->config().num_layers, st->config().num_layers);
  EXPECT_EQ(gg->config().eos_token_ids, std::vector<int64_t>{2});
  const std::vector<int64_t> ids = prompt(cfg["vocab_size"].get<int64_t>());
  const std::vector<float> a = logits(*st, ids), b = logits(*gg, ids);
  ASSERT_EQ(a.size(), b.size());
  if (k.type != TensorType::Q8_0) {
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0)
        << k.name << ": max relative difference " << max_rel(b, a);
    return;
  }
  // Q8_0: the kernels widen each block as d * q, exactly the f32 values the
  // import writes, so the file read in place equals its import bit for bit.
  const std::string imported = (tmp / "imported").string();
  fs::create_directories(imported);
  import_gguf(file, imported);
  auto im = LlamaModel::open(imported);
  const std::vector<float> c = logits(*im, ids);
  EXPECT_EQ(std::memcmp(b.data(), c.data(), b.size() * 4), 0) << "q8_0 in place vs imported: " << max_rel(b, c);
  const double rel = max_rel(b, a);
  std::printf("[ %s ] q8_0 logits vs the unquantised model: max |diff| / max |logit| = %.3g\n", k.name, rel);
  EXPECT_LT(rel, 0.02);   // 8-bit weights: about 1e-3 here
  EXPECT_GT(rel, 1e-6);   // and it did quantise
}

INSTANTIATE_TEST_SUITE_P(Models, GgufEngine,
                         ::testing::Values(Case{"llama_f32", llama_config, DType::F32, TensorType::F32},
                                           Case{"llama_bf16", llama_config, DType::BF16, TensorType::BF16},
                                           Case{"llama_f16", llama_config, DType::F16, TensorType::F16},
                                           Case{"qwen2_bf16", tiny_qwen2_config, DType::BF16, TensorType::BF16},
                                           Case{"llama_q8_0", llama_config, DType::F32, TensorType::Q8_0}),
                         [](const auto& i) { return std::string(i.param.name); });

TEST(GgufEngineCli, GeneratesFromTheFileAsFromTheDirectory) {
  TempDir tmp;
  const std::string dir = (tmp / "model").string(), file = (tmp / "model.gguf").string();
  fs::create_directories(dir);
  write_tiny_model(dir, {llama_config(), DType::BF16, 3});
  ExportOptions eo;
  eo.type = TensorType::BF16;
  eo.tokenizer_kvs = tokenizer_kvs(300);
  export_gguf(dir, file, eo);
  auto gen = [](const std::string& m) {
    return run_command(cv() + " -q generate " + shell_quote(m) + " --prompt-ids 1,5,9,200 -n 12 --temperature 0");
  };
  const CommandResult a = gen(dir), b = gen(file);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  // Text needs the tokenizer, and this file's gpt2 metadata has no merges:
  // one line naming the file and the key.
  const CommandResult t = run_command(cv() + " -q generate " + shell_quote(file) + " --prompt hello");
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_NE(t.err.find(file + ": GGUF metadata has no tokenizer.ggml.merges"), std::string::npos) << t.err;
  EXPECT_EQ(t.err.find('\n'), t.err.size() - 1) << t.err;
}

TEST(GgufEngineCli, TruncatedOrMalformedFileIsOneLineExit2) {
  TempDir tmp;
  const std::string dir = (tmp / "model").string(), file = (tmp / "model.gguf").string();
  fs::create_directories(dir);
  write_tiny_model(dir, {tiny_qwen2_config(), DType::F32, 3});
  ExportOptions eo;
  eo.type = TensorType::F32;
  eo.tokenizer_kvs = tokenizer_kvs(256);
  export_gguf(dir, file, eo);
  std::string bytes;
  {
    std::ifstream f(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string p = (tmp / name).string();
    std::ofstream f(p, std::ios::binary);
    f << content;
    return p;
  };
  std::string bad_version = bytes;
  bad_version[4] = 9;
  for (const std::string& p : {write("cut.gguf", bytes.substr(0, bytes.size() - 100)),
                               write("header.gguf", bytes.substr(0, 64)), write("version.gguf", bad_version)}) {
    EXPECT_THROW(open_gguf_model(p), InputError) << p;
    const CommandResult r = run_command(cv() + " generate " + shell_quote(p) + " --prompt-ids 1,2 -n 2");
    EXPECT_EQ(r.exit_code, 2) << p << ": " << r.err;
    EXPECT_NE(r.err.find(p), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace

// GGUF writer, reader, export and import; llama.cpp (node-llama-cpp) and
// @huggingface/gguf as references.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "gguf/gguf_format.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_names.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_tokenizer.h"
#include "gguf/gguf_writer.h"
#include "test_support.h"
#include "core/file_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_test_util.h"

using namespace chatvec;
using namespace chatvec::gguf;
using namespace chatvec::testing;

namespace {

std::string cv() { return shell_quote(chatvec_bin()); }

fs::path stories_dir() { return shared_dir() / "models" / "stories260K"; }

// stories260K converted once per test process.
std::string converted_stories(const TempDir& tmp) {
  const fs::path out = tmp / "s260";
  if (!fs::exists(out)) {
    CommandResult r = run_command(cv() + " -q convert llama2c " + shell_quote((stories_dir() / "stories260K.bin").string()) +
                                  " --tokenizer " + shell_quote((stories_dir() / "tok512.model").string()) + " -o " +
                                  shell_quote(out.string()));
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  return out.string();
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> v;
  std::istringstream in(s);
  int64_t x;
  while (in >> x) v.push_back(x);
  return v;
}

// A small valid GGUF: a few key-values of every kind and three tensors.
std::vector<KeyValue> sample_kvs() {
  std::vector<KeyValue> kv;
  kv.push_back({"general.architecture", Value::str("llama")});
  kv.push_back({"general.alignment", Value::u32(32)});
  kv.push_back({"test.f32", Value::f32(1.5f)});
  kv.push_back({"test.bool", Value::boolean(true)});
  kv.push_back({"test.strs", Value::str_array({"a", "bc", ""})});
  kv.push_back({"test.i32s", Value::i32_array({1, -2, 3})});
  return kv;
}
std::vector<TensorDecl> sample_tensors() {
  return {{"a", uint32_t(TensorType::F32), {3}}, {"b", uint32_t(TensorType::F16), {4, 2}},
          {"c", uint32_t(TensorType::Q8_0), {32, 2}}};
}
std::string sample_file_bytes() {
  std::string s = header_bytes(sample_kvs(), sample_tensors());
  for (const auto& t : sample_tensors()) {
    std::string d(t.nbytes(), '\x01');
    s += d;
    s.resize(pad_to(s.size(), 32), '\0');
  }
  return s;
}

void expect_rejected(const std::string& bytes, const std::string& needle, const std::string& label) {
  try {
    parse_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.gguf");
    ADD_FAILURE() << label << ": accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << label << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << label << ": " << e.what();
  }
}

template <class T>
void put(std::string& s, size_t at, T v) {
  std::memcpy(s.data() + at, &v, sizeof v);
}

}  // namespace

TEST(GgufFormat, Q8_0MatchesGgmlDefinition) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = std::sin(0.37f * i) * (i < 32 ? 1.0f : 0.001f);
  x[5] = -2.0f;  // amax of block 0
  std::vector<uint8_t> q(2 * kQ8BlockBytes);
  quantize_q8_0(x.data(), 64, q.data());
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    uint16_t dh;
    std::memcpy(&dh, q.data() + b * 34, 2);
    EXPECT_EQ(dh, f32_to_f16(d));
    for (int j = 0; j < 32; ++j) EXPECT_EQ(int8_t(q[b * 34 + 2 + j]), int8_t(std::roundf(x[b * 32 + j] * (1.0f / d))));
  }
  EXPECT_EQ(int8_t(q[2 + 5]), -127);
  std::vector<float> y(64);
  dequantize_q8_0(q.data(), 64, y.data());
  // Each value within half a step (d / 2 = amax / 254) of the original.
  // (plus the f16 rounding of a tiny scale in the second block).
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(y[i], x[i], i < 32 ? 2.0 / 254 * 1.01 : 0.001 / 254 + 127 * 6e-8);
  // An all-zero block has scale 0 and zeros.
  std::vector<float> z(32, 0.0f);
  quantize_q8_0(z.data(), 32, q.data());
  for (int j = 0; j < 34; ++j) EXPECT_EQ(q[j], 0);
}

TEST(GgufFormat, NamesAndPermutationInvert) {
  EXPECT_EQ(*hf_to_gguf_name("model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(*hf_to_gguf_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(*hf_to_gguf_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(*hf_to_gguf_name("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(*hf_to_gguf_name("model.layers.1.self_attn.k_proj.bias"), "blk.1.attn_k.bias");
  EXPECT_FALSE(hf_to_gguf_name("model.layers.01.mlp.up_proj.weight"));
  EXPECT_FALSE(hf_to_gguf_name("vision.patch"));
  EXPECT_EQ(*gguf_to_hf_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(qk_kind("blk.0.attn_q.weight"), 1);
  EXPECT_EQ(qk_kind("blk.0.attn_k.bias"), 2);
  EXPECT_EQ(qk_kind("blk.0.attn_v.weight"), 0);
  // head_dim 8: GGUF rows 0..7 of a head hold HF rows 0,4,1,5,2,6,3,7.
  const uint64_t expect[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (uint64_t r = 0; r < 8; ++r) EXPECT_EQ(hf_row_for_gguf_row(8 + r, 32, 4), 8 + expect[r]);
  for (uint64_t r = 0; r < 32; ++r) EXPECT_EQ(gguf_row_for_hf_row(hf_row_for_gguf_row(r, 32, 4), 32, 4), r);
}

TEST(GgufReader, ReadsWhatTheWriterWrote) {
  TempDir tmp;
  const fs::path p = tmp / "x.gguf";
  {
    std::ofstream f(p, std::ios::binary);
    f << sample_file_bytes();
  }
  File g(p.string());
  EXPECT_EQ(g.header().version, 3u);
  ASSERT_EQ(g.kvs().size(), 6u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.find("test.f32")->f, 1.5);
  EXPECT_EQ(g.find("test.bool")->u, 1u);
  EXPECT_EQ(g.find("test.strs")->strings, (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(g.find("test.i32s")->count, 3u);
  ASSERT_EQ(g.tensors().size(), 3u);
  EXPECT_EQ(g.tensors()[1].ne, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(g.tensors()[1].offset, 32u);
  EXPECT_EQ(g.tensors()[2].nbytes, 68u);
  EXPECT_EQ(g.data(g.tensors()[0])[0], 1);
  EXPECT_EQ(g.header().data_offset % 32, 0u);
}

TEST(GgufReader, RejectsMalformedFiles) {
  const std::string good = sample_file_bytes();
  const std::string hdr = header_bytes(sample_kvs(), sample_tensors());
  // Offsets of fields in the sample: after 24 bytes of preamble, the first key.
  const size_t kv0 = 24;
  expect_rejected("", "truncated", "empty file");
  expect_rejected("GGU", "truncated", "short magic");
  {
    std::string s = good;
    s[0] = 'X';
    expect_rejected(s, "bad magic", "magic");
  }
  {
    std::string s = good;
    put<uint32_t>(s, 4, 1);
    expect_rejected(s, "version 1", "version 1");
    put<uint32_t>(s, 4, 4);
    expect_rejected(s, "unsupported version 4", "version 4");
  }
  {
    std::string s = good;
    put<uint64_t>(s, 8, uint64_t(1) << 60);
    expect_rejected(s, "tensor count", "huge tensor count");
    s = good;
    put<uint64_t>(s, 16, ~uint64_t(0));
    expect_rejected(s, "key-value count", "huge kv count");
  }
  {
    std::string s = good;
    put<uint64_t>(s, kv0, uint64_t(1) << 62);  // key length
    expect_rejected(s, "has length", "string beyond the file");
  }
  expect_rejected(good.substr(0, hdr.size() - 40), "truncated", "truncated tensor infos");
  auto with = [](std::vector<KeyValue> kvs, std::vector<TensorDecl> ts) {
    std::string s = header_bytes(kvs, ts);
    uint64_t n = 0;
    for (auto& t : ts) n += pad_to(t.nbytes(), 32);
    return s + std::string(n, '\0');
  };
  {
    auto kvs = sample_kvs();
    kvs.push_back({"test.f32", Value::f32(2.0f)});
    expect_rejected(with(kvs, sample_tensors()), "duplicate key test.f32", "duplicate key");
  }
  {
    auto ts = sample_tensors();
    ts.push_back({"b", uint32_t(TensorType::F32), {1}});
    expect_rejected(with(sample_kvs(), ts), "duplicate tensor name b", "duplicate tensor");
  }
  {
    auto kvs = sample_kvs();
    kvs[1].value = Value::u32(48);
    expect_rejected(with(kvs, {}), "not a power of two", "alignment 48");
    kvs[1].value = Value::i32(32);
    expect_rejected(with(kvs, {}), "expected u32", "alignment i32");
    kvs[1].value = Value::u32(0);
    expect_rejected(with(kvs, {}), "not a power of two", "alignment 0");
  }
  {
    std::vector<KeyValue> kvs{{"k", Value::u32(7)}};
    std::string s = with(kvs, {});
    put<uint32_t>(s, 24 + 8 + 1, 13);  // value type
    expect_rejected(s, "invalid value type 13", "value type");
    kvs[0].value = Value::i32_array({1, 2});
    s = with(kvs, {});
    put<uint32_t>(s, 24 + 8 + 1 + 4, 9);  // element type ARRAY
    expect_rejected(s, "nested arrays", "nested array");
    put<uint32_t>(s, 24 + 8 + 1 + 4, 4);
    put<uint64_t>(s, 24 + 8 + 1 + 8, uint64_t(1) << 61);  // array length
    expect_rejected(s, "exceeds the file", "array length");
    kvs[0].value = Value::boolean(true);
    s = with(kvs, {});
    s[24 + 8 + 1 + 4] = 2;
    expect_rejected(s, "neither 0 nor 1", "bool 2");
    kvs[0].key = "";
    expect_rejected(with(kvs, {}), "empty key", "empty key");
  }
  // Tensor infos: one tensor named "t" after no key-values.
  const size_t ti = 24 + 8 + 1;  // after the name
  auto one = [&](TensorDecl t) { return with({}, {t}); };
  {
    std::string s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    put<uint32_t>(s, ti, 5);
    expect_rejected(s, "5 dimensions", "n_dims 5");
    s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    put<int64_t>(s, ti + 4, -2);
    expect_rejected(s, "negative dimension", "negative dim");
    s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    put<int64_t>(s, ti + 4, int64_t(1) << 40);
    put<int64_t>(s, ti + 12, int64_t(1) << 40);
    expect_rejected(s, "overflows", "dims overflow");
    s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    put<uint32_t>(s, ti + 20, 4);  // ggml type 4 (removed Q4_2)
    expect_rejected(s, "invalid ggml type 4", "ggml type");
    s = one({"t", uint32_t(TensorType::F32), {32, 2}});
    put<uint32_t>(s, ti + 20, uint32_t(TensorType::Q8_0));
    put<int64_t>(s, ti + 4, 33);
    expect_rejected(s, "not a multiple of the block size", "q8_0 row");
    s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    put<uint64_t>(s, ti + 24, 8);
    expect_rejected(s, "has offset 8, expected 0", "offset");
    s = one({"t", uint32_t(TensorType::F32), {2, 2}});
    expect_rejected(s.substr(0, s.size() - 17), "not within the file", "data beyond the end");
  }
  {
    std::string name(64, 'n');
    std::string s = header_bytes({}, {{std::string(63, 'n'), uint32_t(TensorType::F32), {1}}}) + std::string(32, '\0');
    put<uint64_t>(s, 24, 64);  // lengthen the name by one byte (the next byte becomes part of it)
    expect_rejected(s, "longer than 63", "long name");
  }
  {
    // Through the command line: exit status 2 and the file named.
    TempDir tmp;
    std::string s = good;
    s[0] = 'X';
    s.replace(0, 4, "GGUF");
    put<uint32_t>(s, 4, 9);
    {
      std::ofstream f(tmp / "bad.gguf", std::ios::binary);
      f << s;
    }
    CommandResult r = run_command(cv() + " inspect " + shell_quote((tmp / "bad.gguf").string()));
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unsupported version 9"), std::string::npos) << r.err;
  }
}

// Export stories260K; llama.cpp loads each file and continues a prompt
// greedily as our engine does; @huggingface/gguf sees the metadata; the
// GGUF -> safetensors -> GGUF round trip is byte-identical.
class GgufStories : public ::testing::Test {
 protected:
  void SetUp() override {
    CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
    dir_ = converted_stories(tmp_);
  }
  std::string export_type(const std::string& type) {
    const std::string out = (tmp_ / ("s." + type + ".gguf")).string();
    CommandResult r = run_command(cv() + " -q export gguf " + shell_quote(dir_) + " -o " + shell_quote(out) +
                                  " --type " + type);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }
  TempDir tmp_;
  std::string dir_;
};

// The greedy continuation run.c gives for this prompt (tests/engine).
const char* kPrompt = "1,403,407,261,378";
const std::vector<int64_t> kRunC = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
                                    410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394,
                                    261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432,
                                    398, 312, 286, 267, 414, 270, 333, 415, 426, 13,  438, 310, 439, 419, 357, 336};

std::vector<int64_t> llama_cpp_greedy(const std::string& gguf, const std::string& prompt, int n) {
  CommandResult r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_llama_generate.mjs " +
                                shell_quote(gguf) + " " + prompt + " " + std::to_string(n));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<int64_t> out;
  if (r.exit_code != 0) return out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j.contains("tokens")) << r.out << r.err;
  for (auto& t : j["tokens"]) out.push_back(t.get<int64_t>());
  return out;
}

std::vector<int64_t> engine_greedy(const std::string& dir, const std::string& prompt, int n) {
  CommandResult r = run_command(cv() + " -q generate " + shell_quote(dir) + " --prompt-ids " + prompt + " -n " +
                                std::to_string(n) + " --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return parse_ids(r.out);
}

size_t agreeing_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t k = 0;
  while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
  return k;
}

TEST_F(GgufStories, LlamaCppGreedyEqualsEngine) {
  if (!peers_installed()) CHATVEC_REQUIRE_PATH(peers_dir() / "node_modules");
  const std::vector<int64_t> ours = engine_greedy(dir_, kPrompt, 64);
  ASSERT_EQ(ours.size(), 64u);
  EXPECT_EQ(ours, kRunC) << "our engine no longer matches llama2.c run.c";
  for (const std::string type : {"f32", "f16"}) {
    const std::vector<int64_t> theirs = llama_cpp_greedy(export_type(type), kPrompt, 64);
    EXPECT_EQ(theirs, ours) << type << ": llama.cpp and our engine agree on the first "
                            << agreeing_prefix(theirs, ours) << " tokens";
    EXPECT_EQ(theirs, kRunC) << type << ": llama.cpp and run.c agree on the first " << agreeing_prefix(theirs, kRunC);
  }
  const std::vector<int64_t> q8 = llama_cpp_greedy(export_type("q8_0"), kPrompt, 64);
  size_t same = 0;
  for (size_t i = 0; i < q8.size() && i < ours.size(); ++i) same += q8[i] == ours[i];
  std::printf("q8_0: %zu of the first 64 tokens equal our engine's (common prefix %zu)\n", same,
              agreeing_prefix(q8, ours));
  RecordProperty("q8_0_tokens_agreeing", int(same));
  EXPECT_GE(agreeing_prefix(q8, ours), 8u);
}

TEST_F(GgufStories, HuggingFaceGgufSeesOurMetadata) {
  if (!peers_installed()) CHATVEC_REQUIRE_PATH(peers_dir() / "node_modules");
  const std::string f = export_type("q8_0");
  CommandResult r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_parse.mjs " + shell_quote(f));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& md = j["metadata"];
  EXPECT_EQ(md["version"], 3);
  EXPECT_EQ(md["general.architecture"], "llama");
  EXPECT_EQ(md["general.file_type"], 7);
  EXPECT_EQ(md["general.alignment"], 32);
  EXPECT_EQ(md["llama.block_count"], 5);
  EXPECT_EQ(md["llama.embedding_length"], 64);
  EXPECT_EQ(md["llama.feed_forward_length"], 172);
  EXPECT_EQ(md["llama.attention.head_count"], 8);
  EXPECT_EQ(md["llama.attention.head_count_kv"], 4);
  EXPECT_EQ(md["llama.context_length"], 512);
  EXPECT_EQ(md["tokenizer.ggml.model"], "llama");
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["count"], 512);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["first"][1], "<s>");
  EXPECT_EQ(md["tokenizer.ggml.bos_token_id"], 1);
  EXPECT_EQ(md["tokenizer.ggml.eos_token_id"], 2);
  // Same tensors, types and offsets as our reader sees.
  File g(f);
  ASSERT_EQ(j["tensors"].size(), g.tensors().size());
  for (size_t i = 0; i < g.tensors().size(); ++i) {
    EXPECT_EQ(j["tensors"][i]["name"], g.tensors()[i].name);
    EXPECT_EQ(j["tensors"][i]["dtype"], g.tensors()[i].type);
    EXPECT_EQ(j["tensors"][i]["offset"], g.tensors()[i].offset);
  }
  EXPECT_EQ(g.find_tensor("blk.0.ffn_down.weight")->type, uint32_t(TensorType::F16));  // 172 % 32 != 0
  EXPECT_EQ(g.find_tensor("blk.0.ffn_up.weight")->type, uint32_t(TensorType::Q8_0));
  EXPECT_EQ(g.find_tensor("blk.0.attn_norm.weight")->type, uint32_t(TensorType::F32));
}

TEST_F(GgufStories, RoundTripGgufSafetensorsGgufIsBitExact) {
  for (const std::string type : {"f32", "f16", "bf16"}) {
    const std::string a = export_type(type);
    const std::string st = (tmp_ / ("st." + type)).string(), b = (tmp_ / ("b." + type + ".gguf")).string();
    CommandResult r = run_command(cv() + " -q export safetensors " + shell_quote(a) + " -o " + shell_quote(st));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_command(cv() + " -q export gguf " + shell_quote(st) + " -o " + shell_quote(b) + " --type " + type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    File fa(a), fb(b);
    ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
    for (const auto& t : fa.tensors()) {
      const TensorEntry* u = fb.find_tensor(t.name);
      ASSERT_TRUE(u) << t.name;
      EXPECT_EQ(u->type, t.type) << t.name;
      EXPECT_EQ(u->ne, t.ne) << t.name;
      ASSERT_EQ(u->nbytes, t.nbytes);
      EXPECT_EQ(std::memcmp(fa.data(t), fb.data(*u), t.nbytes), 0) << type << " " << t.name;
    }
    for (const auto& kv : fa.kvs()) {
      if (kv.key == "general.name") continue;
      const Value* v = fb.find(kv.key);
      ASSERT_TRUE(v) << kv.key;
      EXPECT_EQ(v->to_string(1 << 20), kv.value.to_string(1 << 20)) << kv.key;
    }
    // The safetensors side equals the original model tensor for tensor (f32).
    if (type == "f32") {
      r = run_command(cv() + " diff " + shell_quote(dir_) + " " + shell_quote(st));
      EXPECT_NE(r.out.find("47 identical"), std::string::npos) << r.out << r.err;
    }
  }
}

// A chat-vector merge of generated Llama-shaped models, written as GGUF by
// merge --format gguf, loads in llama.cpp, generates, and chats through the
// chat template stored in its metadata.
TEST(GgufMerge, MergeFormatGgufLoadsInLlamaCpp) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "tok512.model");
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  if (!peers_installed()) CHATVEC_REQUIRE_PATH(peers_dir() / "node_modules");
  TempDir tmp;
  const std::string py = "/usr/bin/python3 " + shell_quote((source_dir() / "scripts" / "make_synthetic_model.py").string());
  const std::string tpl =
      "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
  auto mk = [&](const std::string& name, const std::string& extra) {
    CommandResult r = run_command(py + " " + shell_quote((tmp / name).string()) + " --shape small --dtype bf16 " + extra);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    fs::copy_file(stories_dir() / "tok512.model", tmp / name / "tokenizer.model");
  };
  mk("base", "--seed 1");
  mk("chat", "--seed 2 --derive-from " + shell_quote((tmp / "base").string()) + " --chat-template " + shell_quote(tpl));
  mk("target", "--seed 3 --derive-from " + shell_quote((tmp / "base").string()));
  const std::string out = (tmp / "merged.gguf").string();
  CommandResult r = run_command(cv() + " -q merge --base " + shell_quote((tmp / "base").string()) + " --chat " +
                                shell_quote((tmp / "chat").string()) + " --target " +
                                shell_quote((tmp / "target").string()) + " -o " + shell_quote(out) + " --format gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& e : fs::directory_iterator(tmp.path()))  // nothing staged is left behind
    EXPECT_EQ(e.path().filename().string().find("chatvec-tmp"), std::string::npos) << e.path();
  File g(out);
  EXPECT_EQ(g.get_string("tokenizer.chat_template"), tpl);
  EXPECT_EQ(g.get_uint("general.file_type"), kFileTypeMostlyF16);
  const std::vector<int64_t> toks = llama_cpp_greedy(out, "1,403,407", 8);
  EXPECT_EQ(toks.size(), 8u);
  r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_llama_generate.mjs " + shell_quote(out) +
                  " x 4 --chat Hello");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["wrapper"], "JinjaTemplate") << r.out;
}

namespace {

// Runs of spaces, or spaces at the start or end: SentencePiece's
// remove_extra_whitespaces (on in tok512.model) changes them, llama.cpp
// (and so a GGUF tokenizer) keeps them.
bool spaces_normalised_away(const std::string& t) {
  return t.find("  ") != std::string::npos || (!t.empty() && (t.front() == ' ' || t.back() == ' ')) ||
         t.find(" <") != std::string::npos || t.find("> ") != std::string::npos;
}

}  // namespace

// The tokenizer of the exported stories260K file: the ids of llama.cpp's
// tokenizer on the same file (every sample), and of the SentencePiece model
// it came from wherever SentencePiece's whitespace normalisation (which the
// GGUF metadata cannot carry) leaves the text as it is.
TEST_F(GgufStories, GgufTokenizerEqualsSentencePieceAndLlamaCpp) {
  const std::string gguf = export_type("f32");
  const Tokenizer g = load_gguf_tokenizer(gguf);
  const Tokenizer d = Tokenizer::load(dir_);
  std::vector<std::string> texts = sample_texts();
  texts.push_back("Once upon a time, Lily met a dog");
  texts.push_back("<s>Once</s><s> upon<unk>a time");
  EXPECT_EQ(g.adds_bos(), d.adds_bos());
  EXPECT_EQ(g.vocab().bos_id(), d.vocab().bos_id());
  EXPECT_EQ(g.vocab().eos_id(), d.vocab().eos_id());
  EXPECT_EQ(g.encode("Once upon a time, Lily met a dog", true),
            (std::vector<int>{1, 403, 407, 261, 378, 432, 317, 284, 316, 261, 400, 428}));
  int same = 0, compared = 0;
  for (const std::string& t : texts) {
    if (spaces_normalised_away(t)) continue;
    ++compared;
    const std::vector<int> a = g.encode(t, true), b = d.encode(t, true);
    if (a == b) ++same;
    EXPECT_EQ(a, b) << "\"" << t << "\"";
    EXPECT_EQ(g.decode(a), d.decode(b)) << "\"" << t << "\"";
  }
  std::printf("[ stories260K GGUF tokenizer ] = SentencePiece on %d of %d samples\n", same, compared);
  EXPECT_GE(compared, 15);
  if (!peers_installed()) GTEST_SKIP() << "needs the npm peers for llama.cpp's tokenizer";
  Json jobs = Json::array({{{"model", gguf}, {"prompt", Json::array()}, {"n", 0}, {"texts", texts}}});
  write_file((tmp_ / "jobs.json").string(), jobs.dump());
  CommandResult r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_llama_batch.mjs " +
                                shell_quote((tmp_ / "jobs.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto res = nlohmann::json::parse(r.out).at(0);
  EXPECT_EQ(res["add_bos"].get<bool>(), g.adds_bos());
  ASSERT_EQ(res["tokenized"].size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int> ours = g.encode(texts[i], false);
    EXPECT_EQ(std::vector<int64_t>(ours.begin(), ours.end()), res["tokenized"][i].get<std::vector<int64_t>>())
        << "\"" << texts[i] << "\"";
  }
}

// perplexity, generate --prompt and eval on the .gguf report what they
// report on the directory (the f32 file's logits are the directory's).
TEST_F(GgufStories, PerplexityGenerateEvalOnTheGgufEqualTheDirectory) {
  // A chat template, carried into the GGUF by export.
  fs::remove(fs::path(dir_) / "tokenizer_config.json");
  write_file((fs::path(dir_) / "tokenizer_config.json").string(),
             R"({"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>", "chat_template": )"
             R"("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}</s>{% endif %}"})");
  const std::string gguf = export_type("f32");
  ASSERT_TRUE(gguf_chat_template(File(gguf)).has_value());
  const std::string text = (tmp_ / "t.txt").string();
  write_file(text, "Once upon a time, there was a little girl.\nShe liked to play with\ther dog. Caf\xC3\xA9 \xE6\x97\xA5\n");
  for (const char* flags : {"", " --lines"}) {
    CommandResult a = run_command(cv() + " -q perplexity " + shell_quote(dir_) + " --file " + shell_quote(text) + flags);
    CommandResult b = run_command(cv() + " -q perplexity " + shell_quote(gguf) + " --file " + shell_quote(text) + flags);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    ASSERT_EQ(b.exit_code, 0) << b.err;
    EXPECT_EQ(a.out, b.out) << flags;
  }
  CommandResult a = run_command(cv() + " -q generate " + shell_quote(dir_) + " --prompt 'Once upon a time' -n 24 --temperature 0");
  CommandResult b = run_command(cv() + " -q generate " + shell_quote(gguf) + " --prompt 'Once upon a time' -n 24 --temperature 0 -t 1");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_GT(a.out.size(), 30u);
  // eval: every answer and metric equal (timings aside).
  const std::string tasks = (tmp_ / "tasks.jsonl").string();
  write_file(tasks,
             R"({"id": "a", "lang": "en", "type": "dialogue", "messages": [{"role": "user", "content": "Lily had a dog."}], "expected": "dog"})"
             "\n"
             R"({"id": "b", "lang": "en", "type": "dialogue", "messages": [{"role": "user", "content": "Tom was sad."}]})"
             "\n");
  write_file((tmp_ / "held.txt").string(), "Once upon a time, there was a cat.\nThe cat liked the sun.\n");
  auto eval = [&](const std::string& model, const std::string& out) {
    CommandResult r = run_command(cv() + " -q eval " + shell_quote(model) + " --tasks " + shell_quote(tasks) +
                                  " --max-new 16 --heldout en=" + shell_quote((tmp_ / "held.txt").string()) +
                                  " --lang-data en=" + shell_quote((tmp_ / "held.txt").string()) + " --json " +
                                  shell_quote(out));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    Json j = read_json_file(out);
    std::function<void(Json&)> strip = [&](Json& x) {
      if (x.is_object()) {
        for (const char* k : {"seconds", "model", "tokens_per_second", "elapsed_s", "wall_seconds"}) x.erase(k);
        for (auto& [k, v] : x.items()) strip(v);
      } else if (x.is_array()) {
        for (auto& v : x) strip(v);
      }
    };
    strip(j);
    return j;
  };
  const Json ja = eval(dir_, (tmp_ / "a.json").string()), jb = eval(gguf, (tmp_ / "b.json").string());
  EXPECT_EQ(ja.dump(1), jb.dump(1));

  // A merge of GGUF inputs (base = chat: the target's weights exactly) and
  // an import write directories whose only tokenizer is the tokenizer.gguf
  // sidecar: generate --prompt and eval read it (and the chat template with
  // its BOS/EOS texts) and give the GGUF's output.
  const std::string merged = (tmp_ / "merged-from-gguf").string(), imported = (tmp_ / "imported").string();
  CommandResult m = run_command(cv() + " -q merge --base " + shell_quote(gguf) + " --chat " + shell_quote(gguf) +
                                " --target " + shell_quote(gguf) + " -o " + shell_quote(merged));
  ASSERT_EQ(m.exit_code, 0) << m.err;
  CommandResult im = run_command(cv() + " -q export safetensors " + shell_quote(gguf) + " -o " + shell_quote(imported));
  ASSERT_EQ(im.exit_code, 0) << im.err;
  for (const std::string& d : {merged, imported}) {
    ASSERT_FALSE(fs::exists(fs::path(d) / "tokenizer.json")) << d;
    ASSERT_TRUE(fs::exists(fs::path(d) / "tokenizer.gguf")) << d;
    CommandResult g = run_command(cv() + " -q generate " + shell_quote(d) + " --prompt 'Once upon a time' -n 24 --temperature 0");
    ASSERT_EQ(g.exit_code, 0) << g.err;
    EXPECT_EQ(g.out, b.out) << d;
    EXPECT_EQ(eval(d, (tmp_ / "c.json").string()).dump(1), jb.dump(1)) << d;
  }
}

// A GGUF with an end-of-turn id besides EOS (tokenizer.ggml.eot_token_id,
// as Llama-3 files have): its import lists both in generation_config.json
// (what the engine commands stop on for a directory); without one, no
// generation_config.json is written.
TEST_F(GgufStories, ImportKeepsEveryStopIdInGenerationConfig) {
  const std::string plain = export_type("f32");
  const File f(plain);
  std::vector<KeyValue> kv = f.header().kvs;
  kv.push_back({"tokenizer.ggml.eot_token_id", Value::u32(5)});
  std::vector<TensorDecl> decls;
  for (const TensorEntry& t : f.tensors()) decls.push_back({t.name, t.type, t.ne});
  const std::string with_eot = (tmp_ / "eot.gguf").string();
  {
    Writer w(with_eot, kv, decls, f.header().alignment);
    for (const TensorEntry& t : f.tensors()) w.append(f.data(t), size_t(t.nbytes));
    w.finish();
  }
  const std::vector<int64_t> want = gguf_stop_ids(File(with_eot));
  ASSERT_EQ(want.size(), 2u);
  const std::string a = (tmp_ / "imp-eot").string(), b = (tmp_ / "imp-plain").string();
  for (const auto& [in, out] : {std::pair{with_eot, a}, std::pair{plain, b}}) {
    CommandResult r = run_command(cv() + " -q export safetensors " + shell_quote(in) + " -o " + shell_quote(out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const Json gc = read_json_file(a + "/generation_config.json");
  EXPECT_EQ(gc["eos_token_id"].get<std::vector<int64_t>>(), want);
  EXPECT_FALSE(fs::exists(fs::path(b) / "generation_config.json"));
  // The weights are the same either way.
  EXPECT_EQ(read_all(fs::path(a) / "model.safetensors"), read_all(fs::path(b) / "model.safetensors"));
}

// The other way: a directory whose generation_config.json lists EOS and an
// end-of-turn id exports both (tokenizer.ggml.eot_token_id), so the .gguf
// stops where the directory does, and importing it gives the list back; a
// malformed list is one line naming the file.
TEST_F(GgufStories, ExportCarriesEveryStopIdOfGenerationConfig) {
  const std::string gen = (fs::path(dir_) / "generation_config.json").string();
  auto put_gen = [&](const char* text) {
    fs::remove(gen);
    write_file(gen, text);
  };
  put_gen(R"({"bos_token_id": 1, "eos_token_id": [2, 5]})");
  const std::string gguf = export_type("f32");
  const File f(gguf);
  ASSERT_NE(f.find("tokenizer.ggml.eot_token_id"), nullptr);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eot_token_id"), 5u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.find("tokenizer.ggml.eom_token_id"), nullptr);
  EXPECT_EQ(gguf_stop_ids(f), (std::vector<int64_t>{2, 5}));
  const std::string back = (tmp_ / "back").string();
  CommandResult r = run_command(cv() + " -q export safetensors " + shell_quote(gguf) + " -o " + shell_quote(back));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json_file(back + "/generation_config.json")["eos_token_id"].get<std::vector<int64_t>>(),
            (std::vector<int64_t>{2, 5}));
  // EOS alone: no end-of-turn key.
  put_gen(R"({"eos_token_id": 2})");
  EXPECT_EQ(File(export_type("f16")).find("tokenizer.ggml.eot_token_id"), nullptr);
  put_gen(R"({"eos_token_id": [2, "x"]})");
  const std::string bad = (tmp_ / "bad.gguf").string();
  r = run_command(cv() + " -q export gguf " + shell_quote(dir_) + " -o " + shell_quote(bad));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("generation_config.json: field \"eos_token_id\" must be an integer or a list"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(bad));
}

// `chat` on the .gguf: the transcript of piped stdin turns (template, stop
// ids, BOS/EOS text and tokenizer all from the file's metadata) and the
// --messages JSON are those of the directory the file was exported from.
TEST_F(GgufStories, ChatOnTheGgufEqualsTheDirectory) {
  fs::remove(fs::path(dir_) / "tokenizer_config.json");
  write_file((fs::path(dir_) / "tokenizer_config.json").string(),
             R"({"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>", "chat_template": )"
             R"("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n)"
             R"({% elif m['role'] == 'assistant' %}A: {{ m['content'] }}{{ eos_token }}{% else %}{{ m['content'] }}\n)"
             R"({% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}"})");
  const std::string gguf = export_type("f32");
  ASSERT_TRUE(gguf_chat_template(File(gguf)).has_value());
  const std::string turns = (tmp_ / "turns.txt").string();
  write_file(turns, "Once upon a time\nLily met a dog\n");
  // run_command sends /dev/null to stdin: redirect inside a subshell.
  auto chat = [&](const std::string& model, const std::string& flags) {
    return run_command("(" + cv() + " chat " + shell_quote(model) + " --system 'A story.' --temperature 0 -n 20" +
                       flags + " < " + shell_quote(turns) + ")");
  };
  const CommandResult a = chat(dir_, ""), b = chat(gguf, " -t 1");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, a.out);
  EXPECT_GT(b.out.size(), 20u) << b.out;
  // One speed report per turn on the file too (the second turn extends the cache).
  size_t reports = 0;
  for (size_t at = b.err.find("generated:"); at != std::string::npos; at = b.err.find("generated:", at + 1)) ++reports;
  EXPECT_EQ(reports, 2u) << b.err;
  // --messages: the same replies and conversation.
  const std::string msgs = (tmp_ / "two.json").string();
  write_file(msgs, R"([{"role": "user", "content": "Tom was sad."}, {"role": "user", "content": "The cat ran."}])");
  auto messages = [&](const std::string& model) {
    return run_command(cv() + " -q chat " + shell_quote(model) + " --temperature 0 -n 16 --messages " +
                       shell_quote(msgs));
  };
  const CommandResult ma = messages(dir_), mb = messages(gguf);
  ASSERT_EQ(ma.exit_code, 0) << ma.err;
  ASSERT_EQ(mb.exit_code, 0) << mb.err;
  EXPECT_EQ(mb.out, ma.out);
  EXPECT_EQ(nlohmann::json::parse(mb.out)["replies"].size(), 2u) << mb.out;
}

// Malformed tokenizer metadata: one InputError naming the file and the key.
TEST(GgufTokenizer, MalformedMetadataIsOneLineNamingTheKey) {
  TempDir tmp;
  auto base = [] {
    std::vector<KeyValue> kv;
    kv.push_back({"general.architecture", Value::str("llama")});
    kv.push_back({"tokenizer.ggml.model", Value::str("gpt2")});
    kv.push_back({"tokenizer.ggml.pre", Value::str("qwen2")});
    kv.push_back({"tokenizer.ggml.tokens", Value::str_array({"a", "b", "ab", "<|end|>"})});
    kv.push_back({"tokenizer.ggml.token_type", Value::i32_array({1, 1, 1, 3})});
    kv.push_back({"tokenizer.ggml.merges", Value::str_array({"a b"})});
    kv.push_back({"tokenizer.ggml.eos_token_id", Value::u32(3)});
    return kv;
  };
  auto write = [&](const std::vector<KeyValue>& kv, const std::string& name) {
    const std::string p = (tmp / name).string();
    Writer w(p, kv, {});
    w.finish();
    return p;
  };
  {
    const Tokenizer t = load_gguf_tokenizer(write(base(), "ok.gguf"));
    EXPECT_EQ(t.encode("abab<|end|>a", false), (std::vector<int>{2, 2, 3, 0}));
    EXPECT_EQ(gguf_stop_ids(File((tmp / "ok.gguf").string())), std::vector<int64_t>{3});
  }
  auto set = [](std::vector<KeyValue> kv, const std::string& key, std::optional<Value> v) {
    for (auto it = kv.begin(); it != kv.end(); ++it)
      if (it->key == key) {
        if (v) it->value = *v;
        else kv.erase(it);
        return kv;
      }
    if (v) kv.push_back({key, *v});
    return kv;
  };
  const struct {
    const char* name;
    std::vector<KeyValue> kv;
    const char* needle;
  } cases[] = {
      {"no-tokens", set(base(), "tokenizer.ggml.tokens", std::nullopt), "no tokenizer.ggml.tokens"},
      {"tokens-type", set(base(), "tokenizer.ggml.tokens", Value::i32_array({1, 2, 3, 4})), "tokenizer.ggml.tokens is not an array of str"},
      {"model-name", set(base(), "tokenizer.ggml.model", Value::str("t5")), "tokenizer.ggml.model \"t5\""},
      {"pre-name", set(base(), "tokenizer.ggml.pre", Value::str("falcon")), "tokenizer.ggml.pre \"falcon\""},
      {"eos-range", set(base(), "tokenizer.ggml.eos_token_id", Value::u32(4)), "tokenizer.ggml.eos_token_id = 4 is out of range"},
      {"eot-range", set(base(), "tokenizer.ggml.eot_token_id", Value::u32(99)), "tokenizer.ggml.eot_token_id = 99"},
      {"types-count", set(base(), "tokenizer.ggml.token_type", Value::i32_array({1, 1})), "token_type has 2 entries for 4 tokens"},
      {"types-value", set(base(), "tokenizer.ggml.token_type", Value::i32_array({1, 1, 9, 1})), "token_type of token 2 is 9"},
      {"merge", set(base(), "tokenizer.ggml.merges", Value::str_array({"ab"})), "merges entry 0"},
      {"no-scores", set(base(), "tokenizer.ggml.model", Value::str("llama")), "no tokenizer.ggml.scores"},
      {"bool", set(base(), "tokenizer.ggml.add_bos_token", Value::u32(1)), "tokenizer.ggml.add_bos_token is not a bool"},
  };
  for (const auto& c : cases) {
    const std::string p = write(c.kv, std::string(c.name) + ".gguf");
    try {
      (void)load_gguf_tokenizer(p);
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const InputError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(p), std::string::npos) << c.name << ": " << m;
      EXPECT_NE(m.find(c.needle), std::string::npos) << c.name << ": " << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << c.name << ": " << m;
    }
  }
}

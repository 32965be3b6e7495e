// llama2.c import: header validation, exact size checks, q/k permutation,
// output layout, and the atomic-publish rule.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "convert/llama2c_import.h"
#include "core/error.h"
#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "test_support.h"

namespace chatvec::testing {
namespace {

// A tiny llama2.c file with value i at float index i (so each tensor's
// origin can be recognised after conversion).
struct TinyBin {
  int32_t dim = 8, hidden = 12, layers = 2, heads = 2, kv_heads = 1, vocab = 10, seq = 4;
  bool shared = true, freq_cis = true;
  std::vector<uint8_t> bytes() const {
    const int64_t hs = dim / heads, kv = kv_heads * hs;
    int64_t n = int64_t(vocab) * dim + layers * dim + layers * dim * dim + 2 * layers * kv * dim +
                layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim;
    if (freq_cis) n += seq * hs;
    if (!shared) n += int64_t(vocab) * dim;
    std::vector<uint8_t> b(28 + 4 * n);
    const int32_t h[7] = {dim, hidden, layers, heads, kv_heads, shared ? vocab : -vocab, seq};
    std::memcpy(b.data(), h, 28);
    for (int64_t i = 0; i < n; ++i) {
      const float f = float(i);
      std::memcpy(b.data() + 28 + 4 * i, &f, 4);
    }
    return b;
  }
};

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

struct Fixture {
  TempDir tmp;
  fs::path bin = tmp / "model.bin", tok = tmp / "tokenizer.model", out = tmp / "out";
  Fixture(const TinyBin& t) {
    write_bytes(bin, t.bytes());
    write_bytes(tok, {1, 2, 3});
  }
  Llama2cImportOptions opts() const { return {bin.string(), tok.string(), out.string()}; }
};

float at(const CheckpointTensor& t, size_t i) {
  float f;
  std::memcpy(&f, t.data() + 4 * i, 4);
  return f;
}

TEST(ConvertLlama2c, PermutationIsInverseOfInterleave) {
  // Hugging Face row (h, c*half + i) comes from Meta row (h, 2i + c).
  EXPECT_EQ(meta_row_for_hf_row(0, 8), 0);
  EXPECT_EQ(meta_row_for_hf_row(1, 8), 2);
  EXPECT_EQ(meta_row_for_hf_row(3, 8), 6);
  EXPECT_EQ(meta_row_for_hf_row(4, 8), 1);
  EXPECT_EQ(meta_row_for_hf_row(7, 8), 7);
  EXPECT_EQ(meta_row_for_hf_row(9, 8), 10);
  std::vector<int> seen(16, 0);
  for (int r = 0; r < 16; ++r) seen[meta_row_for_hf_row(r, 8)]++;
  for (int s : seen) EXPECT_EQ(s, 1);
}

TEST(ConvertLlama2c, WritesHuggingFaceLayout) {
  for (bool shared : {true, false})
    for (bool freq : {true, false}) {
      TinyBin t;
      t.shared = shared;
      t.freq_cis = freq;
      Fixture f(t);
      const Llama2cHeader h = import_llama2c(f.opts());
      EXPECT_EQ(h.has_freq_cis, freq);
      Checkpoint c = Checkpoint::open(f.out.string());
      const Json& cfg = c.config();
      EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
      EXPECT_EQ(cfg["hidden_size"], 8);
      EXPECT_EQ(cfg["intermediate_size"], 12);
      EXPECT_EQ(cfg["num_key_value_heads"], 1);
      EXPECT_EQ(cfg["vocab_size"], 10);
      EXPECT_EQ(cfg["max_position_embeddings"], 4);
      EXPECT_EQ(cfg["tie_word_embeddings"], shared);
      EXPECT_EQ(cfg["rms_norm_eps"], 1e-5);
      EXPECT_EQ(c.find("lm_head.weight") != nullptr, !shared);
      EXPECT_EQ(c.tensor_count(), size_t(2 + 9 * 2 + (shared ? 0 : 1)));
      // Offsets in floats: emb 80, rms_att 16, wq 128 (2 x 64), wk 2 x 32.
      const int64_t o_wq = 80 + 16, o_wk = o_wq + 128;
      const CheckpointTensor& q1 = c.at("model.layers.1.self_attn.q_proj.weight");
      // HF row 1 of a head of size 4 (half 2) is Meta row 2.
      EXPECT_EQ(at(q1, 1 * 8 + 3), float(o_wq + 64 + 2 * 8 + 3));
      EXPECT_EQ(at(q1, 2 * 8), float(o_wq + 64 + 1 * 8));
      EXPECT_EQ(at(q1, 5 * 8), float(o_wq + 64 + 6 * 8));  // head 1: HF 5 -> Meta 4 + 2
      const CheckpointTensor& k0 = c.at("model.layers.0.self_attn.k_proj.weight");
      EXPECT_EQ(k0.shape(), (std::vector<uint64_t>{4, 8}));
      EXPECT_EQ(at(k0, 1 * 8), float(o_wk + 2 * 8));
      const CheckpointTensor& up = c.at("model.layers.0.mlp.up_proj.weight");  // w3
      const int64_t o_w3 = o_wk + 64 + 64 + 128 + 16 + 2 * 96 + 2 * 96;
      EXPECT_EQ(at(up, 0), float(o_w3));
      const CheckpointTensor& norm = c.at("model.norm.weight");
      EXPECT_EQ(at(norm, 0), float(o_w3 + 2 * 96));
      if (!shared) {
        EXPECT_EQ(at(c.at("lm_head.weight"), 0), float(o_w3 + 2 * 96 + 8 + (freq ? 4 * 4 : 0)));
      }
      EXPECT_TRUE(fs::exists(f.out / "tokenizer.model"));
      Json tc = read_json_file((f.out / "tokenizer_config.json").string());
      EXPECT_EQ(tc["tokenizer_class"], "LlamaTokenizer");
      EXPECT_EQ(tc["bos_token"], "<s>");
      EXPECT_EQ(tc["add_bos_token"], true);
      Json gc = read_json_file((f.out / "generation_config.json").string());
      EXPECT_EQ(gc["eos_token_id"], 2);
      // Nothing left beside the output.
      int entries = 0;
      for (const auto& e : fs::directory_iterator(f.tmp.path())) entries += e.path().filename().string()[0] == '.';
      EXPECT_EQ(entries, 0);
    }
}

void expect_error(const Llama2cImportOptions& o, const std::string& needle, const fs::path& out) {
  try {
    import_llama2c(o);
    ADD_FAILURE() << "accepted; expected " << needle;
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(out) && !fs::is_empty(out)) << "output left behind";
}

TEST(ConvertLlama2c, RejectsBadInput) {
  TinyBin t;
  {
    Fixture f(t);
    auto b = t.bytes();
    b.resize(b.size() - 4);
    write_bytes(f.bin, b);
    expect_error(f.opts(), "truncated", f.out);
    b.resize(20);
    write_bytes(f.bin, b);
    expect_error(f.opts(), "28-byte header", f.out);
    b = t.bytes();
    b.push_back(0);
    write_bytes(f.bin, b);
    expect_error(f.opts(), "does not match its header", f.out);
    b = t.bytes();
    const int32_t magic[2] = {0x616b3432, 1};
    std::memcpy(b.data(), magic, 8);
    write_bytes(f.bin, b);
    expect_error(f.opts(), "version 1", f.out);
  }
  for (auto mutate : std::vector<std::pair<std::string, void (*)(TinyBin&)>>{
           {"n_heads 3", [](TinyBin& x) { x.heads = 3; }},
           {"n_kv_heads 3", [](TinyBin& x) { x.kv_heads = 3; }},
           {"field n_layers = 0", [](TinyBin& x) { x.layers = 0; }},
           {"field seq_len = -4", [](TinyBin& x) { x.seq = -4; }},
           {"is odd", [](TinyBin& x) { x.heads = 8; x.kv_heads = 8; }},
       }) {
    TinyBin bad = t;
    mutate.second(bad);
    Fixture f(t);
    std::vector<uint8_t> b = t.bytes();
    const int32_t h[7] = {bad.dim, bad.hidden, bad.layers, bad.heads, bad.kv_heads, bad.vocab, bad.seq};
    std::memcpy(b.data(), h, 28);
    write_bytes(f.bin, b);
    expect_error(f.opts(), mutate.first, f.out);
  }
  {
    Fixture f(t);
    auto o = f.opts();
    o.tokenizer_model = (f.tmp / "missing.model").string();
    expect_error(o, "missing.model", f.out);
    o = f.opts();
    o.model_bin = (f.tmp / "missing.bin").string();
    expect_error(o, "missing.bin", f.out);
    fs::create_directory(f.out);
    write_bytes(f.out / "keep", {1});
    try {
      import_llama2c(f.opts());
      ADD_FAILURE() << "overwrote a non-empty directory";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos);
    }
    EXPECT_TRUE(fs::exists(f.out / "keep"));
  }
}

TEST(ConvertLlama2c, Stories260KHeader) {
  const fs::path bin = shared_dir() / "models" / "stories260K" / "stories260K.bin";
  CHATVEC_REQUIRE_PATH(bin);
  TempDir tmp;
  const Llama2cHeader h = import_llama2c({bin.string(), (bin.parent_path() / "tok512.model").string(),
                                          (tmp / "hf").string()});
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_TRUE(h.shared_classifier);
  EXPECT_TRUE(h.has_freq_cis);
  Checkpoint c = Checkpoint::open((tmp / "hf").string());
  EXPECT_EQ(c.parameter_count(), uint64_t(512 * 64 + 5 * (2 * 64 + 64 * 64 * 2 + 2 * 32 * 64 + 3 * 172 * 64) + 64));
}

// The command line: exit status 2 and one line on stderr for bad input.
TEST(ConvertCli, ErrorsExitTwo) {
  TempDir tmp;
  write_bytes(tmp / "bad.bin", {1, 2, 3});
  write_bytes(tmp / "tok.model", {1});
  CommandResult r = run_command(shell_quote(chatvec_bin()) + " convert llama2c " + shell_quote((tmp / "bad.bin").string()) +
                                " --tokenizer " + shell_quote((tmp / "tok.model").string()) + " -o " +
                                shell_quote((tmp / "out").string()));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("bad.bin"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

}  // namespace
}  // namespace chatvec::testing

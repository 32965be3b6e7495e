// The inputs users have, end to end through the chatvec command:
// PyTorch .bin checkpoints written by Debian's python3-torch (merged to
// exactly the bytes the same merge gives from safetensors of the same
// weights, written by hand in Python), hostile and unreadable .bin files
// refused with nothing executed and nothing written, Hugging Face cache ids
// (a cache layout built here: refs, snapshots, blob symlinks, two revisions,
// a missing model), and FP8 block-scaled checkpoints checked element by
// element against a numpy dequantisation (tests/cli/make_input_models.py).
#include <fstream>
#include <set>
#include <sstream>

#include "core/json_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

const char* kPython = "/usr/bin/python3";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class InputsCli : public testing::SharedDirSuite<InputsCli> {
 protected:
  static void SetUpTestSuite() {
    if (!begin_suite("numpy, torch")) return;
    auto r = script("bin " + shell_quote(path("b")) + " " + shell_quote(marker()));
    if (r.exit_code == 0) r = script("fp8 " + shell_quote(path("f")));
    if (r.exit_code != 0) {
      ok_ = false;
      why_ = "make_input_models.py failed: " + r.err;
    }
  }
  static std::string marker() { return path("MARKER-created-by-the-pickle"); }
  static testing::CommandResult script(const std::string& args) {
    return run_command(std::string(kPython) + " " +
                       shell_quote((testing::source_dir() / "tests/cli/make_input_models.py").string()) + " " + args);
  }
  static testing::CommandResult chatvec(const std::string& args, const std::string& env = "") {
    return run_command("cd " + shell_quote(tmp_->path().string()) + " && " + env + " " +
                       shell_quote(testing::chatvec_bin()) + " " + args);
  }
  static std::string merge(const std::string& base, const std::string& chat, const std::string& target,
                           const std::string& out) {
    return "merge --base " + base + " --chat " + chat + " --target " + target + " -o " + out;
  }
  static void expect_no_output(const std::string& out) {
    EXPECT_FALSE(fs::exists(out)) << out;
    for (const auto& e : fs::directory_iterator(fs::path(out).parent_path()))
      EXPECT_EQ(e.path().filename().string().find(".chatvec-tmp-"), std::string::npos) << e.path();
  }
  // The cache: org/base, org/chat (main: the sharded .bin; tag old: the
  // safetensors of the same weights), org/target, as huggingface_hub lays
  // them out (files are relative symlinks into blobs/).
  static std::string hub() {
    static bool made = false;
    const fs::path h = tmp_->path() / "hub";
    if (made) return h.string();
    made = true;
    int blob = 0;
    auto snapshot = [&](const std::string& repo, const std::string& commit, const fs::path& from) {
      const fs::path r = h / ("models--org--" + repo);
      fs::create_directories(r / "blobs");
      fs::create_directories(r / "snapshots" / commit);
      for (const auto& e : fs::directory_iterator(from)) {
        const std::string b = "blob" + std::to_string(blob++);
        fs::copy_file(e.path(), r / "blobs" / b);
        fs::create_symlink(fs::path("../../blobs") / b, r / "snapshots" / commit / e.path().filename());
      }
    };
    auto ref = [&](const std::string& repo, const std::string& name, const std::string& commit) {
      const fs::path p = h / ("models--org--" + repo) / "refs" / name;
      fs::create_directories(p.parent_path());
      std::ofstream(p) << commit;  // no newline, as huggingface_hub writes it
    };
    snapshot("base", kBase, path("b/bin_base"));
    ref("base", "main", kBase);
    snapshot("chat", kChatMain, path("b/bin_chat"));
    ref("chat", "main", kChatMain);
    snapshot("chat", kChatOld, path("b/st_chat"));
    ref("chat", "old", kChatOld);
    snapshot("target", kTarget, path("b/bin_target"));
    ref("target", "main", kTarget);
    return h.string();
  }
  static std::string hub_env() { return "HF_HUB_CACHE=" + shell_quote(hub()); }

  static constexpr const char* kBase = "1111111111111111111111111111111111111111";
  static constexpr const char* kChatMain = "2222222222222222222222222222222222222222";
  static constexpr const char* kChatOld = "3333333333333333333333333333333333333333";
  static constexpr const char* kTarget = "4444444444444444444444444444444444444444";
};

TEST_F(InputsCli, PytorchBinMergesExactlyAsTheSafetensorsOfTheSameWeights) {
  // base and target: one pytorch_model.bin each; chat: two shards and the index.
  auto r = chatvec("-q " + merge("b/bin_base", "b/bin_chat", "b/bin_target", "m_bin") + " -r 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = chatvec("-q " + merge("b/st_base", "b/st_chat", "b/st_target", "m_st") + " -r 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The same tensors in the same order: the same file, byte for byte.
  const std::string a = slurp(path("m_bin/model.safetensors")), b = slurp(path("m_st/model.safetensors"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the merge of the .bin inputs differs from the merge of their safetensors";
  // And the safetensors merge is PyTorch's arithmetic (tests/merge/reference_merge.py).
  auto ref = run_command(std::string(kPython) + " " +
                         shell_quote((testing::source_dir() / "tests/merge/reference_merge.py").string()) + " " +
                         path("m_st") + " " + path("b/st_target") + " --term 0.5 " + path("b/st_chat") + " " +
                         path("b/st_base"));
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  Json j = Json::parse(ref.out);
  EXPECT_EQ(j["combined"].get<int>(), 12) << ref.out;
  EXPECT_EQ(j["copied"].get<int>(), 1) << ref.out;  // the int64 buffer

  // extract from .bin: the same vector as from safetensors.
  r = chatvec("-q extract --base b/bin_base --chat b/bin_chat -o v_bin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = chatvec("-q extract --base b/st_base --chat b/st_chat -o v_st");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // (Their headers differ: the metadata names the inputs.)
  auto same = script("same-tensors " + path("v_bin") + " " + path("v_st"));
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  EXPECT_NE(same.out.find("\"tensors\": 12"), std::string::npos) << same.out;
}

TEST_F(InputsCli, InspectAndDiffReadPytorchBin) {
  auto r = chatvec("inspect --json b/bin_chat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["format"], "pytorch");
  EXPECT_EQ(j["shards"].size(), 2u);
  const Json expected = read_json_file(path("b/expected.json"));
  std::set<std::string> seen;
  for (const Json& t : j["tensors"]) {
    const std::string name = t["name"].get<std::string>();
    seen.insert(name);
    ASSERT_TRUE(expected.contains(name)) << name;
    EXPECT_EQ(t["dtype"], expected[name]["dtype"]) << name;
    EXPECT_EQ(t["shape"], expected[name]["shape"]) << name;
  }
  EXPECT_EQ(seen.size(), expected.size());
  // Tied weights (one storage in the single-file target): both names, equal.
  r = chatvec("diff --json b/bin_target b/st_target");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_EQ(j["identical"].get<size_t>(), expected.size()) << r.out;
  EXPECT_TRUE(j["only_in_a"].empty() && j["only_in_b"].empty() && j["mismatched"].empty()) << r.out;
}

TEST_F(InputsCli, UnreadablePytorchFilesAreRefusedWithNothingWritten) {
  struct Case {
    const char* dir;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"b/bin_noncontig", {"model.layers.0.self_attn.o_proj.weight", "not contiguous", ".contiguous()"}},
      {"b/bin_legacy", {"legacy format", "PyTorch < 1.6"}},
      {"b/bin_evil", {"posix.system", "nothing was executed"}},
  };
  for (const Case& c : cases) {
    const std::string out = std::string("refused_") + fs::path(c.dir).filename().string();
    auto r = chatvec(merge("b/bin_base", "b/bin_chat", c.dir, out));
    EXPECT_EQ(r.exit_code, 2) << c.dir << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find(std::string(c.dir) + "/pytorch_model.bin"), std::string::npos) << r.err;
    for (const auto& s : c.says) EXPECT_NE(r.err.find(s), std::string::npos) << c.dir << ": " << r.err;
    expect_no_output(path(out));
    r = chatvec("inspect " + std::string(c.dir));
    EXPECT_EQ(r.exit_code, 2) << r.err;
  }
  // The payload never ran: its file does not exist.  (That it is live -
  // torch.load creates the file - is shown by pytorch_bin_test.)
  EXPECT_FALSE(fs::exists(marker()));
}

TEST_F(InputsCli, HuggingFaceCacheIdsResolveEverywhere) {
  const std::string env = hub_env();
  // The same merge as from the directories: the same bytes.
  auto r = chatvec("-q " + merge("b/bin_base", "b/bin_chat", "b/bin_target", "h_dirs") + " -r 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = chatvec(merge("org/base", "org/chat", "org/target", "h_ids") + " -r 0.5", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(std::string("org/chat revision main = commit ") + kChatMain), std::string::npos) << r.err;
  EXPECT_TRUE(slurp(path("h_dirs/model.safetensors")) == slurp(path("h_ids/model.safetensors")));
  // The target's files come from its snapshot, as files (not links into the cache).
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path("h_ids/config.json"))));
  EXPECT_EQ(read_json_file(path("h_ids/config.json"))["hidden_size"], 64);
  // The model card records the ids and the commits.
  const std::string card = slurp(path("h_ids/README.md"));
  for (const char* s : {"org/base", "org/chat", "org/target", kBase, kChatMain, kTarget})
    EXPECT_NE(card.find(s), std::string::npos) << s << "\n" << card;

  // The recipe keeps the ids (not paths made of them), and reruns from the cache.
  const Json merged = read_json_file(path("h_ids/chatvec.json"));
  EXPECT_EQ(merged["base"], "org/base");
  EXPECT_EQ(merged["target"], "org/target");
  r = chatvec("-q merge --recipe h_ids/chatvec.json -o h_rerun", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(slurp(path("h_rerun/model.safetensors")) == slurp(path("h_ids/model.safetensors")));

  // Another revision (a tag: the safetensors of the same weights), by tag and
  // by abbreviated commit.
  for (const std::string rev : {"old", "3333333"}) {
    const std::string out = "h_old_" + rev;
    r = chatvec("-q " + merge("org/base", "org/chat@" + rev, "org/target", out) + " -r 0.5", env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(slurp(path(out + "/model.safetensors")) == slurp(path("h_dirs/model.safetensors")));
    EXPECT_NE(slurp(path(out + "/README.md")).find(kChatOld), std::string::npos);
  }
  // extract records them in chatvec.json.
  r = chatvec("-q extract --base org/base --chat org/chat@old -o h_vec", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json recipe = read_json_file(path("h_vec/chatvec.json"));
  EXPECT_EQ(recipe["chat"], "org/chat@old");
  EXPECT_EQ(recipe["hub"]["chat"]["commit"], kChatOld);
  EXPECT_EQ(recipe["hub"]["base"]["id"], "org/base");

  // inspect and diff take ids too.
  r = chatvec("inspect --json org/chat@old", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["format"], "safetensors");
  r = chatvec("diff --json org/chat org/chat@old", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["identical"].get<size_t>(), 13u) << r.out;

  // Not cached: one line, where it looked and how to fetch it; exit 2; no output.
  r = chatvec(merge("org/missing", "org/chat", "org/target", "h_missing"), env);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find(hub() + "/models--org--missing"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("huggingface-cli download org/missing"), std::string::npos) << r.err;
  expect_no_output(path("h_missing"));
  r = chatvec(merge("org/base", "org/chat@v9", "org/target", "h_norev"), env);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("revision v9"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--revision v9"), std::string::npos) << r.err;
  for (const char* cmd : {"inspect org/missing", "generate org/missing --prompt-ids 1", "export gguf org/missing -o x.gguf"}) {
    r = chatvec(cmd, env);
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("huggingface-cli download org/missing"), std::string::npos) << cmd << ": " << r.err;
  }

  // A local directory of the same name wins, and --dry-run says so.
  fs::create_directories(path("org"));
  fs::copy(path("b/st_target"), path("org/target"), fs::copy_options::recursive);
  r = chatvec(merge("org/base", "org/chat", "org/target", "h_local") + " --dry-run", env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("target model org/target: the local directory is used, not the Hugging Face model of that name"),
            std::string::npos)
      << r.err;
  expect_no_output(path("h_local"));
  fs::remove_all(path("org"));
}

TEST_F(InputsCli, Fp8BlockScaledWeightsDequantisedOnRead) {
  const std::string check = "fp8-check ";
  auto verify = [&](const std::string& out, const std::string& target, const char* ratio, const std::string& kept) {
    auto ref = script(check + path(out) + " " + path(target) + " " + ratio + " " + path("f/fp8_chat") + " " +
                      path("f/fp8_base") + (kept.empty() ? "" : " " + kept));
    EXPECT_EQ(ref.exit_code, 0) << out << ": " << ref.out << ref.err;
    if (ref.exit_code == 0) {
      EXPECT_EQ(Json::parse(ref.out)["checked"].get<int>(), 8) << ref.out;
    }
  };
  // All three FP8; a bf16 target with an FP8 chat vector; a tensor outside
  // the selection (dequantised, not copied as FP8 without its scales).
  auto r = chatvec("-q " + merge("f/fp8_base", "f/fp8_chat", "f/fp8_target", "f_all") + " -r 0.7");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  verify("f_all", "f/fp8_target", "0.7", "");
  r = chatvec("-q " + merge("f/fp8_base", "f/fp8_chat", "f/bf16_target", "f_bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  verify("f_bf16", "f/bf16_target", "1.0", "");
  r = chatvec("-q " + merge("f/fp8_base", "f/fp8_chat", "f/fp8_target", "f_sel") + " -r 0.7 --exclude down_proj");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  verify("f_sel", "f/fp8_target", "0.7", "model.layers.0.mlp.down_proj.weight");
  // The output is a bf16 model: no scale tensors, no quantization_config.
  const Json cfg = read_json_file(path("f_all/config.json"));
  EXPECT_FALSE(cfg.contains("quantization_config"));
  r = chatvec("inspect --json f_all");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_FALSE(j.contains("quantization"));
  EXPECT_EQ(j["dtypes"].size(), 1u);
  EXPECT_TRUE(j["dtypes"].contains("BF16"));

  // inspect shows the scheme of the input.
  r = chatvec("inspect --json f/fp8_chat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_EQ(j["quantization"]["scheme"], "fp8-block");
  EXPECT_EQ(j["quantization"]["block"], Json::array({128, 128}));
  EXPECT_EQ(j["quantization"]["weights"].get<int>(), 4);
  EXPECT_EQ(j["tensor_count"].get<int>(), 8);  // the scale tensors are not the model's tensors
  r = chatvec("inspect f/fp8_chat");
  EXPECT_NE(r.out.find("quantisation: FP8 block-scaled, 4 F8_E4M3 weights with 128x128 blocks"), std::string::npos)
      << r.out;
  // diff compares dequantised values: the model against itself.
  r = chatvec("diff --json f/fp8_chat f/fp8_chat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["identical"].get<int>(), 8) << r.out;
}

}  // namespace
}  // namespace chatvec

// Ratio schedules, operations on the chat vector (DARE, magnitude pruning,
// norm clipping, TIES) and recipes, end to end through the chatvec command:
// every output element checked against tests/merge/reference_vecops.py, an
// independent numpy implementation of docs/operations.md (the DARE random
// function included), on Llama-shaped models with several shards and mixed
// dtypes (bf16, f16, f32) whose embedding is larger than the chunk size used.
#include <fstream>

#include "core/file_util.h"
#include "core/json_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

const char* kPython = "/usr/bin/python3";
// 4 layers, hidden 128: the embedding and LM head (1024 x 128) are 128K
// elements, far more than a 16 KiB chunk (4K f32 elements) or one
// statistics block.
const char* kShape = "--shape small --hidden 128 --intermediate 344 --vocab 1024 --heads 4 --kv-heads 2";

class VecOpsCli : public testing::SharedDirSuite<VecOpsCli> {
 protected:
  static void SetUpTestSuite() {
    if (!begin_suite("numpy")) return;
    const std::string s = kShape;
    gen("base", s + " --dtype mixed --seed 21 --shard-bytes 300000");
    gen("chat", s + " --dtype mixed --derive-from " + path("base") + " --seed 22 --noise 0.01 --shard-bytes 200000");
    gen("chat2", s + " --dtype mixed --derive-from " + path("base") + " --seed 24 --noise 0.01");
    gen("target", s + " --dtype mixed --derive-from " + path("base") + " --seed 23 --noise 0.05 --reverse-order");
  }

  static testing::CommandResult chatvec(const std::string& args) {
    return run_command(shell_quote(testing::chatvec_bin()) + " " + args);
  }
  static testing::CommandResult reference(const std::string& args) {
    return run_command(std::string(kPython) + " " +
                       shell_quote((testing::source_dir() / "tests/merge/reference_vecops.py").string()) + " " + args);
  }
  static std::string merge_args(const std::string& out) {
    return "merge --base " + path("base") + " --chat " + path("chat") + " --target " + path("target") + " -o " +
           path(out);
  }
  static std::string ref_merge(const std::string& out) {
    return path(out) + " " + path("target") + " --vector " + path("chat") + " " + path("base");
  }
  // Every file of two outputs byte for byte, README.md (title, command line) aside.
  static void expect_same_files(const std::string& a, const std::string& b) {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(path(a))) {
      const std::string f = e.path().filename().string();
      if (f == "README.md") continue;
      ASSERT_TRUE(fs::exists(path(b) + "/" + f)) << f;
      EXPECT_EQ(read_file(path(a) + "/" + f), read_file(path(b) + "/" + f)) << a << " vs " << b << ": " << f;
      ++n;
    }
    EXPECT_GT(n, 3u);
  }
  static void expect_no_output(const std::string& out) {
    EXPECT_FALSE(fs::exists(path(out))) << out;
    for (const auto& e : fs::directory_iterator(tmp_->path()))
      EXPECT_EQ(e.path().filename().string().find(".chatvec-tmp-"), std::string::npos) << e.path();
  }
};

TEST_F(VecOpsCli, ScheduleAndOverridesEqualNumpy) {
  const std::string sched = " --ratio 0.2,1.0,0.5 --ratio-for 'embed_tokens|lm_head=0' --ratio-for 'norm=0.75'";
  auto r = chatvec("-q " + merge_args("sched") + sched);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ref = reference(ref_merge("sched") + " --ratio 0.2,1.0,0.5 --ratio-for 'embed_tokens|lm_head=0' --ratio-for 'norm=0.75'");
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  const Json j = Json::parse(ref.out);
  EXPECT_EQ(j["combined"].get<int>(), 39);
  // Layers 0..3 at t = 0, 2/3, 4/3, 2 of the 3 points.
  EXPECT_DOUBLE_EQ(j["ratios"]["model.layers.0.mlp.up_proj.weight"].get<double>(), 0.2);
  EXPECT_NEAR(j["ratios"]["model.layers.1.mlp.up_proj.weight"].get<double>(), 0.2 + 0.8 * 2 / 3, 1e-12);
  EXPECT_NEAR(j["ratios"]["model.layers.2.mlp.up_proj.weight"].get<double>(), 1.0 - 0.5 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(j["ratios"]["model.layers.3.mlp.up_proj.weight"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["ratios"]["model.layers.3.input_layernorm.weight"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j["ratios"]["lm_head.weight"].get<double>(), 0.0);
  // Non-layer defaults: embeddings the first point, final norm / LM head the last.
  ASSERT_EQ(chatvec("-q " + merge_args("sched2") + " --ratio 0.3,0.9").exit_code, 0);
  auto ref2 = reference(ref_merge("sched2") + " --ratio 0.3,0.9");
  ASSERT_EQ(ref2.exit_code, 0) << ref2.out;
  const Json j2 = Json::parse(ref2.out);
  EXPECT_DOUBLE_EQ(j2["ratios"]["model.embed_tokens.weight"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(j2["ratios"]["model.norm.weight"].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(j2["ratios"]["lm_head.weight"].get<double>(), 0.9);
}

TEST_F(VecOpsCli, EveryOperationEqualsNumpyWhateverThreadsAndChunks) {
  struct Case {
    const char* name;
    std::string flags, ref;
  };
  const std::vector<Case> cases = {
      {"dare", "--dare 0.3 --seed 7 --ratio 0.8", "--dare 0.3 --seed 7 --ratio 0.8"},
      {"keep", "--keep 0.25", "--keep 0.25"},
      {"keep_l1", "--keep 0.4 --keep-rescale l1", "--keep 0.4 --rescale l1"},
      {"keep_l2", "--keep 0.1 --keep-rescale l2 --ratio 0.2,1", "--keep 0.1 --rescale l2 --ratio 0.2,1"},
      {"clip", "--clip 0.02", "--clip 0.02"},
      {"all", "--dare 0.5 --seed 3 --keep 0.5 --keep-rescale l2 --clip 0.03 --ratio 1,0.5",
       "--dare 0.5 --seed 3 --keep 0.5 --rescale l2 --clip 0.03 --ratio 1,0.5"},
  };
  for (const auto& c : cases) {
    const std::string a = std::string(c.name) + "_a", b = std::string(c.name) + "_b";
    auto r = chatvec("-q " + merge_args(a) + " " + c.flags + " --threads 1");
    ASSERT_EQ(r.exit_code, 0) << c.name << ": " << r.err;
    r = chatvec("-q " + merge_args(b) + " " + c.flags + " --threads 2 --chunk-size 16KiB --shard-size 300KB");
    ASSERT_EQ(r.exit_code, 0) << c.name << ": " << r.err;
    auto ref = reference(ref_merge(a) + " " + c.ref);
    ASSERT_EQ(ref.exit_code, 0) << c.name << ": " << ref.out << ref.err;
    const Json j = Json::parse(ref.out);
    EXPECT_EQ(j["combined"].get<int>(), 39) << c.name;
    if (std::string(c.name) == "dare") {
      const double frac = j["dropped"].get<double>() / j["elements"].get<double>();
      EXPECT_NEAR(frac, 0.3, 0.01) << ref.out;
    }
    // Sharded differently, the same tensors: the reference passes on both.
    auto ref_b = reference(ref_merge(b) + " " + c.ref);
    EXPECT_EQ(ref_b.exit_code, 0) << c.name << " (16 KiB chunks, 2 threads): " << ref_b.out;
  }
  // A different seed is a different mask (the reference notices).
  auto wrong = reference(ref_merge("dare_a") + " --dare 0.3 --seed 8 --ratio 0.8");
  EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
  // Same sharding, different chunk and threads: byte for byte.
  ASSERT_EQ(chatvec("-q " + merge_args("all_c") + " " + cases.back().flags + " --threads 2 --chunk-size 5KB").exit_code, 0);
  expect_same_files("all_a", "all_c");
}

TEST_F(VecOpsCli, TiesAndOperationsOnSeveralVectors) {
  ASSERT_EQ(chatvec("-q extract --base " + path("base") + " --chat " + path("chat") + " --dtype f32 -o " + path("v1")).exit_code, 0);
  ASSERT_EQ(chatvec("-q extract --base " + path("base") + " --chat " + path("chat2") + " -o " + path("v2")).exit_code, 0);
  const std::string apply = "-q apply --target " + path("target") + " --vector " + path("v1") + " --vector " + path("v2");
  const std::string ref = path("ties") + " " + path("target") + " --vector " + path("v1") + " --vector " + path("v2");
  auto r = chatvec(apply + " --ratio 0.7 --ratio 0.2,1 --ties --keep 0.3 --dare 0.1 --seed 5 -o " + path("ties"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto x = reference(ref + " --ratio 0.7 --ratio 0.2,1 --ties --keep 0.3 --dare 0.1 --seed 5");
  ASSERT_EQ(x.exit_code, 0) << x.out << x.err;
  // Without --ties the reference (which sums) disagrees: TIES did something.
  auto sum = reference(ref + " --ratio 0.7 --ratio 0.2,1 --keep 0.3 --dare 0.1 --seed 5");
  EXPECT_EQ(sum.exit_code, 1) << sum.out;
  // Apply with operations, no TIES; and in 16 KiB chunks.
  r = chatvec(apply + " --ratio 0.5 --ratio 0.5 --keep 0.5 --keep-rescale l1 --clip 0.05 --chunk-size 16KiB -o " +
              path("apply_ops"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto y = reference(path("apply_ops") + " " + path("target") + " --vector " + path("v1") + " --vector " + path("v2") +
                     " --ratio 0.5 --ratio 0.5 --keep 0.5 --rescale l1 --clip 0.05");
  EXPECT_EQ(y.exit_code, 0) << y.out << y.err;
}

TEST_F(VecOpsCli, ApplyOfAnF32VectorEqualsMergeWithTheSameOperations) {
  ASSERT_EQ(chatvec("-q extract --base " + path("base") + " --chat " + path("chat") + " --dtype f32 -o " + path("v32")).exit_code, 0);
  const std::string ops = " --ratio 0.2,0.9 --ratio-for 'lm_head=0.1' --dare 0.2 --keep 0.6 --keep-rescale l2 --clip 0.04";
  ASSERT_EQ(chatvec("-q " + merge_args("m_ops") + ops).exit_code, 0);
  ASSERT_EQ(chatvec("-q apply --target " + path("target") + " --vector " + path("v32") + ops + " -o " + path("a_ops")).exit_code, 0);
  auto d = chatvec("diff --json " + path("a_ops") + " " + path("m_ops"));
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(Json::parse(d.out)["identical"].get<int>(), 39) << d.out;
}

TEST_F(VecOpsCli, RecipeRerunReproducesTheOutput) {
  const std::string flags = " --ratio 0.2,1,0.5 --ratio-for 'embed_tokens=0' --dare 0.2 --seed 11 --keep 0.5 --clip 0.05";
  ASSERT_EQ(chatvec("-q " + merge_args("orig") + flags).exit_code, 0);
  const Json rec = read_json_file(path("orig") + "/chatvec.json");
  EXPECT_EQ(rec["kind"], "merge");
  EXPECT_EQ(rec["operations"]["dare"]["seed"], 11);
  EXPECT_FALSE(rec.contains("output"));
  const std::string card = read_file(path("orig") + "/README.md");
  EXPECT_NE(card.find("recipe: chatvec.json"), std::string::npos) << card;
  // From another directory: the recorded paths are absolute.
  auto r = run_command("cd / && " + shell_quote(testing::chatvec_bin()) + " -q merge --recipe " +
                       shell_quote(path("orig") + "/chatvec.json") + " -o " + shell_quote(path("rerun")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_files("orig", "rerun");
  // A flag given overrides the recipe's key; the rest is the recipe's.
  ASSERT_EQ(chatvec("-q merge --recipe " + path("orig") + "/chatvec.json --seed 12 -o " + path("reseed")).exit_code, 0);
  const Json rr = read_json_file(path("reseed") + "/chatvec.json");
  EXPECT_EQ(rr["operations"]["dare"]["seed"], 12);
  EXPECT_EQ(rr["ratio"], rec["ratio"]);
  auto ref = reference(ref_merge("reseed") + " --ratio 0.2,1,0.5 --ratio-for embed_tokens=0 --dare 0.2 --seed 12 --keep 0.5 --clip 0.05");
  EXPECT_EQ(ref.exit_code, 0) << ref.out;
  // A hand-written recipe with relative paths (to the recipe's directory).
  fs::create_directories(path("recipes"));
  write_file(path("recipes") + "/r.json",
             R"({"kind": "merge", "base": "../base", "chat": "../chat", "target": "../target", "ratio": "0.2,1,0.5",
                 "ratio_for": ["embed_tokens=0"], "output": "../handwritten",
                 "operations": {"dare": {"p": 0.2, "seed": 11}, "magnitude": {"keep": 0.5}, "clip": 0.05}})");
  r = chatvec("-q merge --recipe " + path("recipes") + "/r.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_files("orig", "handwritten");
  // apply recipes too.
  ASSERT_EQ(chatvec("-q extract --base " + path("base") + " --chat " + path("chat") + " -o " + path("rv")).exit_code, 0);
  ASSERT_EQ(chatvec("-q apply --target " + path("target") + " --vector " + path("rv") + " -r 0.5,1 --keep 0.3 -o " + path("ap1")).exit_code, 0);
  ASSERT_EQ(chatvec("-q apply --recipe " + path("ap1") + "/chatvec.json -o " + path("ap2")).exit_code, 0);
  expect_same_files("ap1", "ap2");
}

TEST_F(VecOpsCli, DryRunShowsRatiosAndOperationsByGroup) {
  auto r = chatvec(merge_args("dry") + " --ratio 0,1 --ratio-for 'lm_head=0.5' --dare 0.1 -n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("ratios and operations (4 layers):"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.layers.*.mlp.up_proj.weight"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ratio by layer 0 0.3333 0.6667 1; operations: dare p=0.1 seed=0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("lm_head.weight: ratio 0.5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("dry")));
}

TEST_F(VecOpsCli, ErrorsAreOneLineExitTwoAndWriteNothing) {
  fs::create_directories(path("recipes"));
  write_file(path("recipes") + "/unknown.json", R"({"kind": "merge", "ratio": 0.5, "operations": {"drop": 0.1}})");
  write_file(path("recipes") + "/apply.json", R"({"kind": "apply", "target": "x", "vectors": ["y"]})");
  struct ErrorCase {
    const char* what;
    std::string args, message;
    const char* out;
  };
  const std::vector<ErrorCase> cases = {
      {"schedule longer than layers", merge_args("x1") + " --ratio 1,2,3,4,5",
       "--ratio \"1,2,3,4,5\": 5 points but the model has 4 layers", "x1"},
      {"p = 1", merge_args("x2") + " --dare 1", "--dare 1: the drop probability p must be in [0, 1)", "x2"},
      {"p < 0", merge_args("x3") + " --dare -0.1", "must be in [0, 1)", "x3"},
      {"k = 0", merge_args("x4") + " --keep 0", "--keep 0: the fraction kept must be in (0, 1]", "x4"},
      {"k > 1", merge_args("x5") + " --keep 1.5", "(0, 1]", "x5"},
      {"ties on merge", merge_args("x6") + " --ties", "--ties needs at least two vectors", "x6"},
      {"ties with one vector", "apply --target " + path("target") + " --vector " + path("chat") + " --ties -o " + path("x7"),
       "--ties needs at least two vectors", "x7"},
      {"unknown key", "merge --recipe " + path("recipes") + "/unknown.json -o " + path("x8"),
       "unknown key \"operations.drop\"", "x8"},
      {"recipe kind", "merge --recipe " + path("recipes") + "/apply.json -o " + path("x9"), "a recipe for `chatvec apply`",
       "x9"},
      {"bad override", merge_args("x10") + " --ratio-for 'lm_head'", "expected REGEX=VALUE", "x10"},
      {"bad list", merge_args("x11") + " --ratio 0.5,,1", "--ratio must be a finite number", "x11"},
      {"clip < 0", merge_args("x12") + " --clip -1", "--clip -1", "x12"},
  };
  for (const auto& c : cases) {
    auto r = chatvec(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": " << r.err;
    expect_no_output(c.out);
  }
  // An override that matches nothing: a warning, and the merge goes on.
  auto r = chatvec(merge_args("warned") + " --ratio-for 'no_such_tensor=0'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: --ratio-for \"no_such_tensor\" matches no tensor"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace chatvec

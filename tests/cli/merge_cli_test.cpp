// End-to-end runs of the chatvec command on generated Llama-shaped
// checkpoints, checked element by element against PyTorch
// (tests/merge/reference_merge.py) and for what a user relies on: the output
// directory's files, exit statuses, and no output on failure.
#include <fstream>
#include <set>

#include "core/file_util.h"
#include "core/json_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

const char* kPython = "/usr/bin/python3";

class MergeCli : public testing::SharedDirSuite<MergeCli> {
 protected:
  static void SetUpTestSuite() {
    if (!begin_suite("numpy, torch")) return;
    // base, chat (derived), target (derived, reverse storage order), each
    // sharded differently; a mixed-dtype family with tied embeddings and an
    // integer buffer; and broken variants.
    const std::string tpl = "{% for m in messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% endfor %}";
    gen("base", "--shape small --dtype bf16 --seed 1 --shard-bytes 150000");
    gen("chat", "--shape small --derive-from " + path("base") + " --seed 2 --noise 0.01 --chat-template " + shell_quote(tpl));
    gen("target", "--shape small --derive-from " + path("base") + " --seed 3 --noise 0.05 --reverse-order --shard-bytes 400000");
    gen("mbase", "--shape small --dtype mixed --seed 11 --tied --int-buffer");
    gen("mchat", "--shape small --dtype mixed --derive-from " + path("mbase") + " --seed 12 --tied --int-buffer --shard-bytes 100000");
    gen("mtarget", "--shape small --dtype mixed --derive-from " + path("mbase") + " --seed 13 --tied --int-buffer --reverse-order");
    gen("chat_missing", "--shape small --derive-from " + path("base") + " --seed 4 --drop model.layers.2.mlp.up_proj.weight");
    gen("target_vocab", "--shape small --vocab 576 --derive-from " + path("base") + " --seed 5");
    gen("chat_shape", "--shape tiny --seed 6");
  }


  static testing::CommandResult chatvec(const std::string& args) {
    return run_command(shell_quote(testing::chatvec_bin()) + " " + args);
  }
  static testing::CommandResult reference(const std::string& args) {
    return run_command(std::string(kPython) + " " +
                       shell_quote((testing::source_dir() / "tests/merge/reference_merge.py").string()) + " " + args);
  }
  static Json ref_json(const testing::CommandResult& r) { return Json::parse(r.out); }

  // Nothing at `out` and no staging leftovers beside it.
  static void expect_no_output(const std::string& out) {
    EXPECT_FALSE(fs::exists(out)) << out;
    for (const auto& e : fs::directory_iterator(fs::path(out).parent_path()))
      EXPECT_EQ(e.path().filename().string().find(".chatvec-tmp-"), std::string::npos) << e.path();
  }

  static std::string merge_args(const std::string& base, const std::string& chat, const std::string& target,
                                const std::string& out) {
    return "merge --base " + path(base) + " --chat " + path(chat) + " --target " + path(target) + " -o " + path(out);
  }

};

TEST_F(MergeCli, MergeEqualsPyTorchAcrossShardLayouts) {
  for (const char* ratio : {"1.0", "0.5", "-0.25"}) {
    const std::string out = std::string("m_") + ratio;
    auto r = chatvec("-q " + merge_args("base", "chat", "target", out) + " --ratio " + ratio);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto ref = reference(path(out) + " " + path("target") + " --term " + ratio + " " + path("chat") + " " + path("base"));
    ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
    Json j = ref_json(ref);
    EXPECT_EQ(j["combined"].get<int>(), 39) << ref.out;
  }
}

TEST_F(MergeCli, MixedDtypesTiedEmbeddingsAndIntegerBuffers) {
  auto r = chatvec("-q " + merge_args("mbase", "mchat", "mtarget", "mixed") + " -r 0.37");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ref = reference(path("mixed") + " " + path("mtarget") + " --term 0.37 " + path("mchat") + " " + path("mbase"));
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  Json j = ref_json(ref);
  EXPECT_EQ(j["copied"].get<int>(), 1);  // the I64 buffer, byte for byte the target's
  EXPECT_EQ(j["combined"].get<int>(), 38);
  auto insp = chatvec("inspect --json " + path("mixed"));
  Json ij = Json::parse(insp.out);
  std::set<std::string> names;
  for (const auto& t : ij["tensors"]) names.insert(t["name"].get<std::string>());
  EXPECT_FALSE(names.count("lm_head.weight"));
  EXPECT_TRUE(names.count("model.rotary_emb.position_ids"));
  // The output keeps each tensor's own dtype (auto).
  EXPECT_EQ(ij["dtypes"].size(), 4u);  // BF16, F16, F32, I64
}

TEST_F(MergeCli, OutputDtypeAndConfig) {
  for (const char* dt : {"f16", "f32", "bf16"}) {
    const std::string out = std::string("dt_") + dt;
    auto r = chatvec("-q " + merge_args("mbase", "mchat", "mtarget", out) + " --dtype " + dt);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto ref = reference(path(out) + " " + path("mtarget") + " --term 1.0 " + path("mchat") + " " + path("mbase"));
    ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
    Json cfg = read_json_file(path(out) + "/config.json");
    EXPECT_EQ(cfg["torch_dtype"], std::string(dt) == "f16" ? "float16" : std::string(dt) == "f32" ? "float32" : "bfloat16");
  }
}

TEST_F(MergeCli, ShardedOutputLikeTransformers) {
  auto r = chatvec("-q " + merge_args("base", "chat", "target", "sharded") + " --shard-size 100KB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json index = read_json_file(path("sharded") + "/model.safetensors.index.json");
  std::set<std::string> files;
  std::vector<std::string> keys;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    keys.push_back(it.key());
    files.insert(it.value().get<std::string>());
  }
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(keys.size(), 39u);
  ASSERT_GT(files.size(), 3u);
  const std::string last = "model-0000" + std::to_string(files.size()) + "-of-0000" + std::to_string(files.size()) + ".safetensors";
  EXPECT_TRUE(files.count(last)) << last;
  for (const auto& f : files) EXPECT_LE(fs::file_size(path("sharded") + "/" + f), 100'000u + 4096u) << f;
  auto ref = reference(path("sharded") + " " + path("target") + " --term 1.0 " + path("chat") + " " + path("base"));
  EXPECT_EQ(ref.exit_code, 0) << ref.out << ref.err;
}

TEST_F(MergeCli, OutputDirectoryFiles) {
  auto r = chatvec("-q " + merge_args("base", "chat", "target", "files"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string out = path("files");
  // Config and generation config from the target, chat template from the chat model.
  EXPECT_EQ(read_json_file(out + "/config.json"), read_json_file(path("target") + "/config.json"));
  EXPECT_EQ(read_json_file(out + "/generation_config.json")["seed_marker"], 3);
  Json tc = read_json_file(out + "/tokenizer_config.json");
  EXPECT_EQ(tc["marker"], 3);
  EXPECT_EQ(tc["chat_template"], read_json_file(path("chat") + "/tokenizer_config.json")["chat_template"]);
  std::ifstream card(out + "/README.md");
  std::string text((std::istreambuf_iterator<char>(card)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("---\nbase_model:\n", 0), 0u) << text;
  EXPECT_NE(text.find("- chat-vector"), std::string::npos);
  EXPECT_NE(text.find("out = target + 1 * (chat - base)"), std::string::npos) << text;
  EXPECT_NE(text.find(path("chat")), std::string::npos);
  EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));
}

TEST_F(MergeCli, ChatTemplateJinjaAndOverride) {
  // A chat model with chat_template.jinja: the output carries that file.
  fs::create_directories(path("chat_jinja"));
  for (const auto& e : fs::directory_iterator(path("chat"))) fs::copy(e.path(), path("chat_jinja") / e.path().filename());
  std::ofstream(path("chat_jinja") + "/chat_template.jinja") << "{{ messages[0].content }}JINJA";
  auto r = chatvec("-q " + merge_args("base", "chat_jinja", "target", "jinja_out"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream jf(path("jinja_out") + "/chat_template.jinja");
  std::string text((std::istreambuf_iterator<char>(jf)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{{ messages[0].content }}JINJA");
  // --chat-template FILE replaces it.
  std::ofstream(path("custom.jinja")) << "CUSTOM {{ messages }}";
  r = chatvec("-q " + merge_args("base", "chat_jinja", "target", "custom_out") + " --chat-template " + path("custom.jinja"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json_file(path("custom_out") + "/tokenizer_config.json")["chat_template"], "CUSTOM {{ messages }}");
  EXPECT_FALSE(fs::exists(path("custom_out") + "/chat_template.jinja"));
}

TEST_F(MergeCli, GgufInputsMergeLikeTheirDirectories) {
  const fs::path tok = testing::shared_dir() / "models/stories260K/tok512.model";  // 512 tokens, as the "small" shape
  CHATVEC_REQUIRE_PATH(tok);
  for (const char* m : {"base", "chat", "target"}) {
    const std::string d = path(std::string("g_") + m);
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(path(m))) fs::copy(e.path(), d / e.path().filename());
    fs::copy(tok, d + "/tokenizer.model");
    auto r = chatvec("-q export gguf " + d + " -o " + d + ".gguf --type bf16");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // GGUF inputs (imported beside the output, then streamed) give bit for bit
  // what the directories give.
  auto r = chatvec("-q merge --base " + path("g_base.gguf") + " --chat " + path("g_chat.gguf") + " --target " +
                   path("g_target.gguf") + " -o " + path("g_out") + " --dtype bf16 -r 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(chatvec("-q " + merge_args("g_base", "g_chat", "g_target", "g_direct") + " --dtype bf16 -r 0.5").exit_code, 0);
  Json dj = Json::parse(chatvec("diff --json " + path("g_out") + " " + path("g_direct")).out);
  EXPECT_EQ(dj["identical"].get<int>(), 39) << dj.dump();
  expect_no_output(path("g_out.input-1"));
  // GGUF in, GGUF out: the chat model's template travels through.
  r = chatvec("-q merge --base " + path("g_base.gguf") + " --chat " + path("g_chat.gguf") + " --target " +
              path("g_target.gguf") + " -o " + path("g_out.gguf") + " --format gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto insp = chatvec("inspect " + path("g_out.gguf"));
  EXPECT_NE(insp.out.find("<|im_start|>"), std::string::npos) << insp.out.substr(0, 2000);
  // The GGUF carries the resolved recipe: `--recipe OUT.gguf` reruns the job
  // and gives the same file, byte for byte (same file name: general.name).
  fs::create_directories(path("rerun"));
  r = chatvec("-q merge --recipe " + path("g_out.gguf") + " -o " + path("rerun") + "/g_out.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(path("g_out.gguf")), read_file(path("rerun") + "/g_out.gguf"));
  // A GGUF that no merge wrote is refused in one line.
  r = chatvec("-q merge --recipe " + path("g_target.gguf") + " -o " + path("norecipe.gguf"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("g_target.gguf: a GGUF file without a recipe"), std::string::npos) << r.err;
  expect_no_output(path("norecipe.gguf"));
  for (const auto& e : fs::directory_iterator(tmp_->path()))
    EXPECT_EQ(e.path().filename().string().find(".chatvec-tmp-"), std::string::npos) << e.path();
}

TEST_F(MergeCli, ExtractThenApplyEqualsMerge) {
  ASSERT_EQ(chatvec("-q extract --base " + path("base") + " --chat " + path("chat") + " --dtype f32 -o " + path("vec")).exit_code, 0);
  EXPECT_TRUE(fs::exists(path("vec") + "/chatvec.json"));
  EXPECT_FALSE(fs::exists(path("vec") + "/config.json"));  // never mistaken for a model
  EXPECT_TRUE(fs::exists(path("vec") + "/tokenizer_config.json"));
  // vector = chat - base, checked against PyTorch
  auto ref = reference(path("vec") + " " + path("chat") + " --no-source --term 1.0 " + path("chat") + " " + path("base"));
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;

  ASSERT_EQ(chatvec("-q apply --target " + path("target") + " --vector " + path("vec") + " --ratio 0.5 -o " + path("applied")).exit_code, 0);
  ASSERT_EQ(chatvec("-q " + merge_args("base", "chat", "target", "merged05") + " --ratio 0.5").exit_code, 0);
  auto d = chatvec("diff --json " + path("applied") + " " + path("merged05"));
  ASSERT_EQ(d.exit_code, 0) << d.err;
  Json dj = Json::parse(d.out);
  EXPECT_EQ(dj["identical"].get<int>(), 39) << d.out;
  EXPECT_EQ(read_json_file(path("applied") + "/tokenizer_config.json")["chat_template"],
            read_json_file(path("chat") + "/tokenizer_config.json")["chat_template"]);
}

TEST_F(MergeCli, ApplySeveralVectorsWithRatios) {
  ASSERT_EQ(chatvec("-q extract --base " + path("mbase") + " --chat " + path("mchat") + " -o " + path("v1")).exit_code, 0);
  ASSERT_EQ(chatvec("-q extract --base " + path("mbase") + " --chat " + path("mtarget") + " --dtype f32 -o " + path("v2")).exit_code, 0);
  auto r = chatvec("-q apply --target " + path("mtarget") + " --vector " + path("v1") + " --ratio 0.7 --vector " +
                   path("v2") + " --ratio -0.3 -o " + path("multi"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ref = reference(path("multi") + " " + path("mtarget") + " --term 0.7 " + path("v1") + " --term -0.3 " + path("v2"));
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  EXPECT_EQ(ref_json(ref)["combined"].get<int>(), 38);
}

TEST_F(MergeCli, IncludeExclude) {
  auto r = chatvec("-q " + merge_args("base", "chat", "target", "excl") + " --exclude 'mlp\\.' --exclude '^model\\.norm'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto d = chatvec("diff --json " + path("excl") + " " + path("target"));
  Json dj = Json::parse(d.out);
  int same = 0;
  for (const auto& t : dj["tensors"]) {
    const std::string n = t["name"];
    const bool excluded = n.find("mlp.") != std::string::npos || n.rfind("model.norm", 0) == 0;
    EXPECT_EQ(t["max_abs"].get<double>() == 0, excluded) << n;
    same += excluded;
  }
  EXPECT_EQ(same, 13);
  r = chatvec("-q " + merge_args("base", "chat", "target", "incl") + " --include 'self_attn'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  dj = Json::parse(chatvec("diff --json " + path("incl") + " " + path("target")).out);
  for (const auto& t : dj["tensors"])
    EXPECT_EQ(t["max_abs"].get<double>() != 0, t["name"].get<std::string>().find("self_attn") != std::string::npos);
}

TEST_F(MergeCli, DryRunWritesNothing) {
  auto r = chatvec(merge_args("base", "chat", "target", "dry") + " --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("39 combined"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dry run: nothing written"), std::string::npos) << r.err;
  expect_no_output(path("dry"));
}

TEST_F(MergeCli, InputsAreNeverModified) {
  auto snapshot = [&](const std::string& m) {
    std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> s;
    for (const auto& e : fs::directory_iterator(path(m))) s[e.path().string()] = {fs::file_size(e.path()), fs::last_write_time(e.path())};
    return s;
  };
  auto before = std::make_tuple(snapshot("base"), snapshot("chat"), snapshot("target"));
  ASSERT_EQ(chatvec("-q " + merge_args("base", "chat", "target", "untouched")).exit_code, 0);
  EXPECT_EQ(before, std::make_tuple(snapshot("base"), snapshot("chat"), snapshot("target")));
}

struct ErrorCase {
  const char* what;
  std::string args;
  const char* message;
  int status;
};

TEST_F(MergeCli, ErrorsExitNonZeroAndLeaveNoOutput) {
  // A corrupt copy of the base: header length past the end of the file.
  fs::create_directories(path("corrupt"));
  for (const auto& e : fs::directory_iterator(path("base"))) fs::copy(e.path(), path("corrupt") / e.path().filename());
  {
    const std::string shard = path("corrupt") + "/model-00001-of-00004.safetensors";
    ASSERT_TRUE(fs::exists(shard));
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(6);
    f.put('\x7f');
  }
  fs::create_directories(path("existing"));
  const std::vector<ErrorCase> cases = {
      {"missing tensor", merge_args("base", "chat_missing", "target", "e1"), "tensor \"model.layers.2.mlp.up_proj.weight\" is missing from the chat model", 2},
      {"vocabulary", merge_args("base", "chat", "target_vocab", "e2"), "the vocabularies differ (512 embedding rows in the base, 576 in the target) and the tokenizers cannot be compared", 2},
      {"shape", merge_args("base", "chat_shape", "target", "e3"), "has shape", 2},
      {"corrupt file", merge_args("corrupt", "chat", "target", "e4"), "model-00001-of-00004.safetensors: header length", 2},
      {"no such model", merge_args("nothing", "chat", "target", "e5"), "no such file or directory", 2},
      {"bad ratio", merge_args("base", "chat", "target", "e6") + " --ratio nan", "--ratio must be a finite number", 2},
      {"bad regex", merge_args("base", "chat", "target", "e7") + " --include '('", "invalid regular expression", 2},
      {"bad shard size", merge_args("base", "chat", "target", "e8") + " --shard-size 5XB", "invalid size", 2},
      {"unknown flag", merge_args("base", "chat", "target", "e9") + " --frobnicate", "frobnicate", 2},
      {"missing flag", "merge --base " + path("base") + " -o " + path("e10"), "required", 2},
      {"not a vector", "apply --target " + path("target") + " --vector " + path("chat") + " -o " + path("e11"), "not a chat vector", 2},
      {"ratio count", "apply --target " + path("target") + " --vector " + path("chat") + " --ratio 1 --ratio 2 -o " + path("e12"), "one --ratio per --vector", 2},
  };
  for (const auto& c : cases) {
    auto r = chatvec(c.args);
    EXPECT_EQ(r.exit_code, c.status) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.what << ": " << r.err;
    // One line.
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": " << r.err;
  }
  for (const char* o : {"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11", "e12"}) expect_no_output(path(o));
  // An existing output is refused without --force and kept intact; --force replaces it.
  auto r = chatvec(merge_args("base", "chat", "target", "existing"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already exists (use --force to replace it)"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(path("existing")));
  ASSERT_EQ(chatvec("-q --quiet " + merge_args("base", "chat", "target", "existing") + " --force").exit_code, 0);
  EXPECT_TRUE(fs::exists(path("existing") + "/model.safetensors"));
}

TEST_F(MergeCli, InspectAndDiff) {
  auto r = chatvec("inspect --json " + path("base"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["tensor_count"].get<int>(), 39);
  EXPECT_EQ(j["shards"].size(), 4u);  // 150 kB shards
  EXPECT_EQ(j["config"]["hidden_size"].get<int>(), 64);
  uint64_t params = 0;
  for (const auto& t : j["tensors"]) {
    uint64_t n = 1;
    for (auto d : t["shape"]) n *= d.get<uint64_t>();
    params += n;
  }
  EXPECT_EQ(j["parameter_count"].get<uint64_t>(), params);
  auto d = chatvec("diff --json " + path("base") + " " + path("chat_missing"));
  ASSERT_EQ(d.exit_code, 0) << d.err;
  Json dj = Json::parse(d.out);
  EXPECT_EQ(dj["only_in_a"], Json::array({"model.layers.2.mlp.up_proj.weight"}));
  for (const auto& t : dj["tensors"]) {
    EXPECT_GT(t["max_abs"].get<double>(), 0);
    EXPECT_LT(t["rel_norm"].get<double>(), 1.0);
  }
  auto txt = chatvec("inspect " + path("base"));
  EXPECT_NE(txt.out.find("39 tensors"), std::string::npos) << txt.out;
}

}  // namespace
}  // namespace chatvec

// The engine's commands end to end: generate (text equal to llama2.c's
// run.c), perplexity (equal to the float64 reference), chat (template, KV
// reuse across turns), and their errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/file_util.h"
#include "core/json_util.h"
#include "engine_test_support.h"
#include "tiny_model.h"

namespace chatvec::testing {
namespace {

std::string cv() { return shell_quote(chatvec_bin()); }

// run.c's stdout (see engine_test.cpp for how it was produced), for
// `-t 0.0 -n 100` (96 and 94 generated tokens).
const char* kRunC1 =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the "
    "park.\" Lily was sad and didn't know w\n";
const char* kRunC2 =
    "Lily met a dog named Max. Max loved to play with his toys. One day, Max's mom told her that it was time to go to "
    "the park. Max was very happy and didn't want to play with it.\nLily's mom said, \"Lily, you can't find it. We "
    "can't find it\n";

TEST(EngineCli, GenerateGreedyTextEqualsRunC) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  const std::string dir = converted_stories();
  CommandResult r = run_command(cv() + " generate " + shell_quote(dir) +
                                " --prompt 'Once upon a time' -n 96 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kRunC1);
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
  r = run_command(cv() + " -q generate " + shell_quote(dir) + " --prompt 'Lily met a dog' -n 94 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kRunC2);
  EXPECT_EQ(r.err, "");  // --quiet
}

TEST(EngineCli, GenerateSampledIsSeeded) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  const std::string cmd = cv() + " -q generate " + shell_quote(converted_stories()) +
                          " --prompt 'Once upon a time' -n 60 --temperature 1.0 --top-p 0.9 --seed ";
  CommandResult a = run_command(cmd + "7"), b = run_command(cmd + "7"), c = run_command(cmd + "8");
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_EQ(a.out.rfind("Once upon a time", 0), 0u) << a.out;
}

TEST(EngineCli, PerplexityLinesMatchesReference) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  for (const char* tsv : {"bible-en-kjv.tsv", "bible-es-rv1909.tsv"}) {
    CHATVEC_REQUIRE_PATH(shared_dir() / "data" / "bible" / tsv);
    TempDir tmp;
    {
      std::ifstream in(shared_dir() / "data" / "bible" / tsv);
      std::ofstream out(tmp / "verses.txt");
      std::string line;
      for (int i = 0; i < 1000 && std::getline(in, line); ++i)
        if (i % 50 == 0) out << line.substr(line.find('\t') + 1) << "\n";  // 20 verses across Genesis-Exodus
    }
    const std::string dir = converted_stories();
    CommandResult r = run_command(cv() + " -q perplexity " + shell_quote(dir) + " --lines --file " +
                                  shell_quote((tmp / "verses.txt").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Json got = Json::parse(r.out);
    Json ref = reference_nll_text(dir, (tmp / "verses.txt").string(), (stories_dir() / "tok512.model").string());
    std::printf("[ %s ] chatvec perplexity %.4f over %lld tokens (reference %.4f)\n", tsv,
                got["perplexity"].get<double>(), (long long)got["tokens"].get<int64_t>(),
                ref["perplexity"].get<double>());
    EXPECT_EQ(got["tokens"], ref["count"]);
    EXPECT_EQ(got["sequences"], 20);
    EXPECT_NEAR(got["nll"].get<double>(), ref["nll"].get<double>(), 1e-5 * ref["nll"].get<double>());
  }
}

// stories260K has no chat template: give it a simple one.
std::string stories_with_template(const TempDir& tmp) {
  const std::string dir = (tmp / "chat").string();
  fs::copy(converted_stories(), dir);
  Json tc = read_json_file(dir + "/tokenizer_config.json");
  tc["chat_template"] =
      "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
      "{% elif m['role'] == 'assistant' %}A: {{ m['content'] }}{{ eos_token }}{% else %}{{ m['content'] }}\n"
      "{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}";
  fs::remove(dir + "/tokenizer_config.json");
  write_file(dir + "/tokenizer_config.json", dump_json_pretty(tc));
  return dir;
}

TEST(EngineCli, ChatMessagesReusesCacheAcrossTurns) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  TempDir tmp;
  const std::string dir = stories_with_template(tmp);
  write_file((tmp / "two.json").string(),
             R"([{"role": "user", "content": "Once upon a time"}, {"role": "user", "content": "Lily met a dog"}])");
  const std::string base = cv() + " -q chat " + shell_quote(dir) + " --temperature 0 -n 30 --messages ";
  CommandResult r = run_command(base + shell_quote((tmp / "two.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json out = Json::parse(r.out);
  ASSERT_EQ(out["replies"].size(), 2u);
  EXPECT_FALSE(out["replies"][0].get<std::string>().empty());
  // The second reply, computed on a fresh cache from the whole conversation,
  // must be the same as the one computed by extending the cache.
  Json conv = out["messages"];
  conv.erase(conv.size() - 1);
  write_file((tmp / "fresh.json").string(), conv.dump());
  CommandResult f = run_command(base + shell_quote((tmp / "fresh.json").string()));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  Json fresh = Json::parse(f.out);
  ASSERT_EQ(fresh["replies"].size(), 1u);
  EXPECT_EQ(fresh["replies"][0], out["replies"][1]);
}

TEST(EngineCli, InteractiveChatReadsStdin) {
  CHATVEC_REQUIRE_PATH(stories_dir() / "stories260K.bin");
  TempDir tmp;
  const std::string dir = stories_with_template(tmp);
  write_file((tmp / "turns.txt").string(), "Once upon a time\nLily met a dog\n");
  // run_command sends /dev/null to stdin: redirect inside a subshell.
  CommandResult r = run_command("(" + cv() + " chat " + shell_quote(dir) +
                                " --system 'A story.' --temperature 0 -n 20 < " +
                                shell_quote((tmp / "turns.txt").string()) + ")");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  // One speed report per turn; the second turn feeds only the new tokens.
  size_t reports = 0;
  for (size_t at = r.err.find("generated:"); at != std::string::npos; at = r.err.find("generated:", at + 1)) ++reports;
  EXPECT_EQ(reports, 2u) << r.err;
}

TEST(EngineCli, ErrorsExitTwoWithOneLine) {
  TempDir tmp;
  const std::string bad = (tmp / "bad").string();
  fs::create_directory(bad);
  write_tiny_model(bad, {tiny_qwen2_config(), DType::F32, 1});
  Json cfg = read_json_file(bad + "/config.json");
  cfg["rope_scaling"] = Json::parse(R"({"rope_type": "yarn", "factor": 4.0})");
  fs::remove(bad + "/config.json");
  write_file(bad + "/config.json", dump_json_pretty(cfg));
  for (const std::string& args :
       {" generate " + shell_quote(bad) + " --prompt-ids 1 -n 3", " generate " + shell_quote(bad + "-missing") +
                                                                      " --prompt-ids 1",
        " perplexity " + shell_quote(bad) + " --file /nonexistent"}) {
    CommandResult r = run_command(cv() + args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  CommandResult r = run_command(cv() + " generate " + shell_quote(bad) + " --prompt-ids 1");
  EXPECT_NE(r.err.find("rope_scaling.rope_type"), std::string::npos) << r.err;
  // Ids mode works without a tokenizer; out-of-range ids are errors.
  const std::string good = (tmp / "good").string();
  fs::create_directory(good);
  write_tiny_model(good, {tiny_qwen2_config(), DType::BF16, 1});
  r = run_command(cv() + " -q generate " + shell_quote(good) + " --prompt-ids 1,5,9 -n 5 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_command(cv() + " -q generate " + shell_quote(good) + " --prompt-ids 1,999 -n 5");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("999"), std::string::npos) << r.err;
  r = run_command(cv() + " -q generate " + shell_quote(good) + " --prompt-ids 1 --top-p 0");
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace
}  // namespace chatvec::testing

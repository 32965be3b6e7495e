// chatvec tune: the ranking rule (pure), and end to end on stories260K-derived
// models at reduced scale (base = stories260K converted, chat = a few steps of
// English chat SFT with <|end|>, target = a few steps of Spanish continual
// pre-training; data from experiments/build_data.py): outputs, metrics equal
// to `chatvec eval` of the same merged model, bad input, resume.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "../reliability/process_util.h"
#include "test_support.h"
#include "tune/tune.h"

using namespace chatvec;
using namespace chatvec::tune;
namespace t = chatvec::testing;
namespace fs = std::filesystem;

namespace {

Json m(double f1, double share, double bpb) {
  return {{"f1_strict", f1}, {"lang_share_strict", share}, {"bits_per_byte", bpb}};
}

}  // namespace

TEST(TuneRank, BestQualifyingTiesToSmallerRatio) {
  RankRule rule;
  std::vector<RankInput> c = {{"a", 1.0, m(0.5, 0.95, 2.0)},
                              {"b", 0.5, m(0.5, 0.92, 2.05)},
                              {"c", 0.25, m(0.9, 0.5, 2.0)},     // best F1 but English
                              {"d", 0.75, m(0.8, 0.99, 2.2)},    // 10% worse bits/byte
                              {"e", std::nullopt, m(0.5, 0.99, 2.0)}};
  const Ranking r = rank_candidates(c, rule, 2.0);
  EXPECT_EQ(r.best, 1u) << r.why;  // a, b, e tie on F1: the smaller ratio wins
  EXPECT_TRUE(r.qualified);
  EXPECT_EQ(r.qualifies, (std::vector<bool>{true, true, false, false, true}));
  EXPECT_NE(r.verdicts[2].find("lang_share_strict 0.500 < 0.9"), std::string::npos) << r.verdicts[2];
  EXPECT_NE(r.verdicts[3].find("bits/byte 2.2000 > 2.1000"), std::string::npos) << r.verdicts[3];
  EXPECT_NE(r.why.find("tied with a, e"), std::string::npos) << r.why;
  ASSERT_TRUE(r.bpb_limit);
  EXPECT_DOUBLE_EQ(*r.bpb_limit, 2.1);
  // Without a reference the bits/byte bound is not applied: d qualifies.
  EXPECT_EQ(rank_candidates(c, rule, std::nullopt).best, 3u);
  // Another metric.
  rule.metric = "lang_share_strict";
  EXPECT_EQ(rank_candidates(c, rule, 2.0).best, 4u);
}

TEST(TuneRank, FallbacksWhenNoneQualifies) {
  RankRule rule;
  // Within the bound but not in the language: the highest share wins.
  std::vector<RankInput> c = {{"a", 0.0, m(0.9, 0.3, 2.0)}, {"b", 0.5, m(0.1, 0.6, 2.05)}, {"c", 1.0, m(0.9, 0.95, 3.0)}};
  Ranking r = rank_candidates(c, rule, 2.0);
  EXPECT_EQ(r.best, 1u);
  EXPECT_FALSE(r.qualified);
  EXPECT_NE(r.why.find("no candidate qualifies"), std::string::npos) << r.why;
  // None within the bound: the lowest bits/byte.
  c = {{"a", 0.0, m(0.9, 0.95, 2.5)}, {"b", 0.5, m(0.1, 0.99, 2.3)}};
  r = rank_candidates(c, rule, 2.0);
  EXPECT_EQ(r.best, 1u);
  EXPECT_NE(r.why.find("lowest bits/byte"), std::string::npos) << r.why;
}

TEST(TuneGrid, RatioList) {
  EXPECT_EQ(parse_ratio_list("0,0.25, 1.25"), (std::vector<double>{0, 0.25, 1.25}));
  EXPECT_EQ(parse_ratio_list("-0.5"), (std::vector<double>{-0.5}));
  for (const char* bad : {"", " ", ",", "0,,1", "0,x", "0,nan", "0,inf", "1,1"})
    EXPECT_THROW(parse_ratio_list(bad), InputError) << bad;
  MergeJob j;
  j.base = "b";
  const auto g = ratio_grid(j, {0, 0.5});
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].name, "ratio-0.5");
  EXPECT_EQ(g[1].job.ratio.constant(), 0.5);
  EXPECT_EQ(g[1].job.base, "b");
}

// Models and data made once for the suite.
class TuneEndToEnd : public t::SharedDirSuite<TuneEndToEnd> {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new t::TempDir();
    ok_ = false;
    const fs::path shared = t::shared_dir();
    if (!fs::exists(shared / "models/stories260K/stories260K.bin") ||
        !fs::exists(shared / "data/bible/bible-es-rv1909.tsv")) {
      why_ = "skipped: ../shared (stories260K, the Bible TSVs) is absent";
      return;
    }
    if (t::run_command("/usr/bin/python3 -c 'import yaml'").exit_code != 0) {
      why_ = "python3-yaml not installed";
      return;
    }
    const std::string cv = t::shell_quote(t::chatvec_bin()), d = path("data");
    const std::string sm = (shared / "models/stories260K").string();
    const std::vector<std::string> steps = {
        "/usr/bin/python3 " + t::shell_quote((t::source_dir() / "experiments/build_data.py").string()) + " " + d +
            " --shared " + t::shell_quote(shared.string()) + " --n-instr 60 --n-eval 2 --n-eval-dialogue 1 --n-heldout 12",
        cv + " -q convert llama2c " + sm + "/stories260K.bin --tokenizer " + sm + "/tok512.model -o " + path("base"),
        cv + " -q train " + path("base") + " --data " + d + "/chat_en.jsonl -o " + path("chat") +
            " --steps 4 --batch 4 --warmup 2 --seq-len 96 --chat-template " + d +
            "/chat_template.jinja --add-special '<|end|>' --eos-token '<|end|>'",
        cv + " -q train " + path("base") + " --data " + d + "/es_cp.txt -o " + path("cp") +
            " --steps 4 --batch 4 --warmup 2 --seq-len 64 --max-lines 2000",
    };
    for (const auto& s : steps) {
      const auto r = t::run_command(s);
      if (r.exit_code != 0) {
        why_ = "setup failed: " + s + ": " + r.err;
        return;
      }
    }
    write_file(d + "/tasks.jsonl", read_file(d + "/tasks_es.jsonl") + read_file(d + "/tasks_en.jsonl"));
    ok_ = true;
  }

  static std::string data_flags(std::string prompts = "") {
    const std::string d = path("data");
    if (prompts.empty()) prompts = d + "/tasks.jsonl";
    return " --prompts " + prompts + " --lang-data es=" + d + "/es_lid.txt --lang-data en=" + d +
           "/en_lid.txt --heldout es=" + d + "/es_heldout.txt --heldout en=" + d + "/en_heldout.txt --max-new 12";
  }
  static std::string tune_cmd(const std::string& out, const std::string& extra, const std::string& prompts = "") {
    return "OMP_NUM_THREADS=1 " + t::shell_quote(t::chatvec_bin()) + " tune --base " + path("base") + " --chat " +
           path("chat") + " --target " + path("cp") + data_flags(prompts) + " -o " + out + " " + extra;
  }
  static TuneOptions options(const std::string& out, const std::vector<double>& ratios) {
    TuneOptions o;
    MergeJob j;
    j.base = path("base");
    j.chat = path("chat");
    j.target = path("cp");
    o.candidates = ratio_grid(j, ratios);
    o.target = j.target;
    const std::string d = path("data");
    o.eval.tasks = d + "/tasks.jsonl";
    o.eval.lang_data = {{"es", d + "/es_lid.txt"}, {"en", d + "/en_lid.txt"}};
    o.eval.heldout = {{"es", d + "/es_heldout.txt"}};
    o.eval.max_new = 8;
    o.lang = "es";
    o.out = out;
    o.threads = 1;
    return o;
  }
};

namespace {

// Comparable part of an eval report: everything but the model's path and time.
Json comparable(Json r) {
  r.erase("model");
  r.erase("seconds");
  r.erase("tune_seconds");
  r.erase("tasks_file");
  return r;
}

class CountingReporter : public TuneReporter {
 public:
  void line(const std::string&) override {}
  void warning(const std::string&) override {}
  void candidate_done(size_t, size_t, const std::string&, const Json&, bool reused, double) override {
    (reused ? reused_ : evaluated_) += 1;
    if (!reused && stop_after_ && evaluated_ == stop_after_) throw std::runtime_error("simulated interruption");
  }
  size_t evaluated_ = 0, reused_ = 0, stop_after_ = 0;
};

}  // namespace

TEST_F(TuneEndToEnd, OutputsAndMetricsEqualChatvecEval) {
  const std::string out = path("run1");
  auto r = t::run_command(tune_cmd(out, "--ratios 0,0.5,1 --write-best --lang es"));
  // (the test's models are a few steps from stories260K: no ranking outcome is asserted)
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(out + ".partial"));
  for (const char* f : {"results.json", "table.md", "metrics.svg", "best_recipe.json", "best/model.safetensors",
                        "eval/00-ratio-0.json", "eval/01-ratio-0.5.json", "eval/02-ratio-1.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  EXPECT_FALSE(fs::exists(out + "/model")) << "the candidate being evaluated is deleted";
  EXPECT_NE(r.out.find("| candidate | ratio |"), std::string::npos) << "the table is printed";
  EXPECT_NE(r.err.find("[3/3] ratio-1:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ETA"), std::string::npos) << r.err;

  const Json res = read_json_file(out + "/results.json");
  ASSERT_EQ(res["candidates"].size(), 3u);
  EXPECT_EQ(res["lang"], "es");
  const std::string chosen = res["choice"]["name"];
  EXPECT_FALSE(res["choice"]["why"].get<std::string>().empty());
  EXPECT_TRUE(res["reference"]["bits_per_byte"].is_number());
  for (const Json& c : res["candidates"])
    for (const char* k : {"f1_strict", "exact_strict", "eos_strict", "lang_share_strict", "valid", "mean_tokens",
                          "bits_per_byte", "f1", "eos", "lang_share"})
      EXPECT_TRUE(c["metrics"].contains(k)) << c["name"] << " " << k;
  // Ratio 0 is the target's weights (plus the transplanted <|end|> row): the
  // same held-out bits/byte as the target itself.
  EXPECT_NEAR(res["candidates"][0]["metrics"]["bits_per_byte"].get<double>(),
              res["reference"]["bits_per_byte"].get<double>(), 0.02);

  // The SVG parses as XML (Python's parser) and has a line per metric.
  r = t::run_command("/usr/bin/python3 -c \"import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); "
                     "print(len(r.findall('.//{http://www.w3.org/2000/svg}polyline')))\" " + out + "/metrics.svg");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::stoi(r.out), 11);

  // The winner's metrics are what `chatvec eval` reports for OUT/best.
  const std::string ev = "OMP_NUM_THREADS=1 " + t::shell_quote(t::chatvec_bin()) + " -q eval ";
  const std::string eval_flags = data_flags();
  const std::string flags = eval_flags.substr(0, eval_flags.find(" --prompts")) + " --tasks " +
                            eval_flags.substr(eval_flags.find(" --prompts") + 11);
  r = t::run_command(ev + out + "/best" + flags + " --json " + path("best_eval.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t win = res["choice"]["index"].get<size_t>();
  const Json tuned = read_json_file(out + "/" + res["candidates"][win]["eval_report"].get<std::string>());
  EXPECT_EQ(comparable(read_json_file(path("best_eval.json"))), comparable(tuned)) << chosen;
  // ... and for ratio 0.5 merged by `chatvec merge`.
  r = t::run_command(t::shell_quote(t::chatvec_bin()) + " -q merge --base " + path("base") + " --chat " + path("chat") +
                     " --target " + path("cp") + " --ratio 0.5 -o " + path("m05"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = t::run_command(ev + path("m05") + flags + " --json " + path("m05_eval.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json m05 = read_json_file(path("m05_eval.json"));
  EXPECT_EQ(comparable(m05), comparable(read_json_file(out + "/eval/01-ratio-0.5.json")));
  EXPECT_EQ(metrics_of(m05, "es"), res["candidates"][1]["metrics"]);
  // The recipe gives the winner again.
  r = t::run_command(t::shell_quote(t::chatvec_bin()) + " -q merge --recipe " + out + "/best_recipe.json -o " +
                     path("from_recipe") + " && cmp " + path("from_recipe") + "/model.safetensors " + out +
                     "/best/model.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A second run refuses to overwrite.
  r = t::run_command(tune_cmd(out, "--ratios 0"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("exists (--force"), std::string::npos) << r.err;
}

TEST_F(TuneEndToEnd, BadInputIsOneLineExit2NothingWritten) {
  const std::string d = path("data");
  {
    std::ofstream f(path("bad.jsonl"));
    f << read_file(d + "/tasks_es.jsonl") << "{\"type\": \"repeat\", oops\n";
  }
  struct Case {
    std::string extra, expect, prompts;
  };
  const std::vector<Case> cases = {
      {"--ratios 0,1", "bad.jsonl line 10: invalid JSON", path("bad.jsonl")},
      {"--ratios 0,1 --heldout fr=" + d + "/es_heldout.txt", "--heldout fr="},
      {"--ratios ''", "--ratios: an empty grid"},
      {"--ratios 0,,1", "an empty entry"},
      {"--ratios 0,1 --rank-metric speed", "--rank-metric speed"},
      {"--ratios 0,1 --lang fr", "--lang fr: no --lang-data fr"},
  };
  for (const Case& c : cases) {
    const std::string out = path("bad_out");
    const auto r = t::run_command(tune_cmd(out, c.extra, c.prompts));
    EXPECT_EQ(r.exit_code, 2) << c.extra << "\n" << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.extra << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.extra << "\n" << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.extra;
    EXPECT_FALSE(fs::exists(out + ".partial")) << c.extra;
  }
}

TEST_F(TuneEndToEnd, InterruptedTuneResumesWithoutRedoing) {
  const std::string out = path("resume");
  TuneOptions o = options(out, {0, 0.5, 1});
  {
    CountingReporter rep;
    rep.stop_after_ = 1;
    EXPECT_THROW(run_tune(o, rep), std::runtime_error);
  }
  ASSERT_TRUE(fs::exists(out + ".partial/eval/00-ratio-0.json"));
  EXPECT_FALSE(fs::exists(out + ".partial/eval/01-ratio-0.5.json"));
  EXPECT_FALSE(fs::exists(out));
  const std::string first = read_file(out + ".partial/eval/00-ratio-0.json");
  {
    CountingReporter rep;
    try {
      run_tune(o, rep);
      ADD_FAILURE() << "an unfinished tune continued without --resume";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
    }
  }
  {
    // Different settings: refused, naming what differs.
    TuneOptions changed = options(out, {0, 0.5, 1});
    changed.resume = true;
    changed.eval.max_new = 9;
    CountingReporter rep;
    try {
      run_tune(changed, rep);
      ADD_FAILURE() << "a resume with other settings was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("\"max_new\" (was 8, now 9)"), std::string::npos) << e.what();
    }
    changed = options(out, {0, 0.25, 1});
    changed.resume = true;
    EXPECT_THROW(run_tune(changed, rep), InputError);
    EXPECT_EQ(rep.evaluated_, 0u);
  }
  o.resume = true;
  CountingReporter rep;
  const TuneResult r = run_tune(o, rep);
  EXPECT_EQ(rep.reused_, 1u);
  EXPECT_EQ(rep.evaluated_, 2u);
  EXPECT_EQ(r.reused, 1u);
  EXPECT_EQ(r.evaluated, 2u);
  EXPECT_FALSE(fs::exists(out + ".partial"));
  EXPECT_EQ(read_file(out + "/eval/00-ratio-0.json"), first) << "a finished candidate was redone";
  EXPECT_EQ(r.results["candidates"].size(), 3u);

  // The same result as an uninterrupted tune (greedy decoding is deterministic).
  TuneOptions fresh = options(path("fresh"), {0, 0.5, 1});
  CountingReporter rep2;
  const TuneResult f = run_tune(fresh, rep2);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(f.results["candidates"][i]["metrics"], r.results["candidates"][i]["metrics"]) << i;
  EXPECT_EQ(f.choice, r.choice);
}

TEST_F(TuneEndToEnd, AlternativesFromRecipes) {
  {
    std::ofstream f(path("alts.json"));
    f << R"([{"name": "schedule", "recipe": {"ratio": [0.2, 1.0]}},
             {"name": "no-mlp", "recipe": {"ratio": 1.0, "exclude": ["mlp"]}}])";
  }
  auto r = t::run_command(tune_cmd(path("alts"), "--ratios 0 --lang es --alternatives " + path("alts.json")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json res = read_json_file(path("alts") + "/results.json");
  ASSERT_EQ(res["candidates"].size(), 3u);
  EXPECT_EQ(res["candidates"][1]["name"], "schedule");
  EXPECT_TRUE(res["candidates"][1]["ratio"].is_null());
  EXPECT_EQ(res["candidates"][2]["ratio"], 1.0);
  EXPECT_EQ(res["candidates"][2]["job"]["exclude"], Json::array({"mlp"}));
  // A bad alternative: one line naming the file and entry.
  {
    std::ofstream f(path("bad_alts.json"));
    f << R"([{"name": "x", "recipe": {"ratio": "a"}}])";
  }
  r = t::run_command(tune_cmd(path("alts_bad"), "--alternatives " + path("bad_alts.json")));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("bad_alts.json entry 1"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("alts_bad.partial")));
}

// A GGUF target: the candidates take its tokenizer.gguf sidecar and are
// evaluated as from the directory it was exported from (the GGUF tokenizer
// keeps runs of spaces that tok512.model collapses, so held-out bits/byte
// may differ in the last digits; every answer-based metric is equal).  A
// GGUF base or chat model: one line naming the flag and the file, exit 2,
// nothing written.
TEST_F(TuneEndToEnd, GgufTargetTunesAsItsDirectoryGgufBaseIsRefused) {
  const std::string cv = t::shell_quote(t::chatvec_bin()), gguf = path("cp.gguf");
  auto r = t::run_command(cv + " -q export gguf " + path("cp") + " -o " + gguf + " --type f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto with = [&](const std::string& out, const std::string& flag, const std::string& from) {
    std::string cmd = tune_cmd(path(out), "--ratios 0,1 --lang es");
    const std::string was = " " + flag + " " + path(from) + " ";
    EXPECT_NE(cmd.find(was), std::string::npos) << cmd;
    cmd.replace(cmd.find(was), was.size(), " " + flag + " " + gguf + " ");
    return cmd;
  };
  r = t::run_command(with("tg", "--target", "cp"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = t::run_command(tune_cmd(path("tdir"), "--ratios 0,1 --lang es"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json a = read_json_file(path("tg") + "/results.json"), b = read_json_file(path("tdir") + "/results.json");
  ASSERT_EQ(a["candidates"].size(), 2u);
  ASSERT_EQ(b["candidates"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    Json ma = a["candidates"][i]["metrics"], mb = b["candidates"][i]["metrics"];
    for (const char* k : {"bits_per_byte", "perplexity"}) {
      if (ma.contains(k) && ma[k].is_number()) {
        EXPECT_NEAR(ma[k].get<double>(), mb[k].get<double>(), 1e-3 * mb[k].get<double>()) << k;
      }
      ma.erase(k);
      mb.erase(k);
    }
    EXPECT_EQ(ma, mb) << i;
  }
  for (const std::string flag : {"--base", "--chat"}) {
    r = t::run_command(with("tb", flag, flag == "--base" ? "base" : "chat"));
    EXPECT_EQ(r.exit_code, 2) << flag << "\n" << r.err;
    EXPECT_NE(r.err.find(flag + " " + gguf + " is a GGUF file"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(path("tb")));
    EXPECT_FALSE(fs::exists(path("tb.partial")));
  }
}

namespace {

std::vector<std::string> sh(const std::string& cmd) {
  const std::string prefix = "OMP_NUM_THREADS=1 ";
  return {"/bin/sh", "-c", "export OMP_NUM_THREADS=1; exec " + cmd.substr(prefix.size())};
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// A real tune process: a second tune of the same -o while it runs is one
// line, exit 2, and leaves it alone (DIR.partial is locked); SIGKILL, then
// --resume keeps the finished candidate; Ctrl-C (SIGINT) inside the
// evaluation stops promptly with the candidates kept; the final results
// equal an uninterrupted run's.
TEST_F(TuneEndToEnd, KilledTuneResumesAndSecondTuneIsRefused) {
  const std::string out = path("killed"), partial = out + ".partial";
  const std::string cmd = tune_cmd(out, "--ratios 0,0.25,0.5,0.75,1 --lang es");
  fs::create_directories(path("logs-a"));
  fs::create_directories(path("logs-c"));
  t::Child a = t::spawn(sh(cmd), path("logs-a"));
  ASSERT_TRUE(t::wait_until([&] { return fs::exists(partial + "/eval/00-ratio-0.json"); }, std::chrono::seconds(60)))
      << read_file(a.err_path);
  const std::string first = read_file(partial + "/eval/00-ratio-0.json");
  {
    const auto b = t::run_command(cmd + " --resume");
    EXPECT_EQ(b.exit_code, 2) << b.err;
    EXPECT_NE(b.err.find(partial + " is in use by another chatvec tune"), std::string::npos) << b.err;
    EXPECT_EQ(std::count(b.err.begin(), b.err.end(), '\n'), 1) << b.err;
  }
  ::kill(a.pid, SIGKILL);
  const t::Finished fa = t::wait_child(a);
  ASSERT_EQ(fa.signal, SIGKILL) << "the tune ended before it was killed: " << fa.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(read_file(partial + "/eval/00-ratio-0.json"), first);

  // Resumed, then Ctrl-C while the next candidate is evaluated.
  t::Child c = t::spawn(sh(cmd + " --resume"), path("logs-c"));
  // (partial/model may be the killed run's half-done candidate: wait for
  // this process's own progress line, then give it a moment to be inside
  // the candidate's merge or evaluation.)
  ASSERT_TRUE(t::wait_until([&] { return read_file(c.err_path).find(": merging and evaluating") != std::string::npos; },
                            std::chrono::seconds(60)))
      << read_file(c.err_path);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(c.pid, SIGINT);
  const t::Finished fc = t::wait_child(c);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  // (four candidates were left, each far longer than 50 ms)
  ASSERT_EQ(fc.exit_code, 130) << fc.err;
  EXPECT_NE(fc.err.find("interrupted: "), std::string::npos) << fc.err;
  EXPECT_NE(fc.err.find("candidates finished, kept in " + partial), std::string::npos) << fc.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(partial + "/model")) << "a half-done candidate left behind";
  const auto d = t::run_command(cmd + " --resume");
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_EQ(read_file(out + "/eval/00-ratio-0.json"), first) << "a finished candidate was redone";

  const std::string fresh = path("killed_fresh");
  const auto f = t::run_command(tune_cmd(fresh, "--ratios 0,0.25,0.5,0.75,1 --lang es"));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(files_in(out), files_in(fresh));
  const Json rr = read_json_file(out + "/results.json"), rf = read_json_file(fresh + "/results.json");
  ASSERT_EQ(rr["candidates"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(rr["candidates"][i]["metrics"], rf["candidates"][i]["metrics"]) << i;
  EXPECT_EQ(read_file(out + "/best_recipe.json"), read_file(fresh + "/best_recipe.json"));
}

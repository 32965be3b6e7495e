// chatvec eval's scoring (no model needed) and the reduced reproduction
// experiment end to end (experiments/run_experiment.py --scale ci): it must
// run and compute every metric; no scientific outcome is asserted.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "eval/eval.h"
#include "test_support.h"

using namespace chatvec;
using namespace chatvec::eval;
namespace t = chatvec::testing;

TEST(EvalScoring, Words) {
  EXPECT_EQ(words_of("¿Qué ÉS esto? Él dijo: «sí»."), (std::vector<std::string>{"qué", "és", "esto", "él", "dijo", "sí"}));
  EXPECT_EQ(words_of("And God said, Let there be light: and"), (std::vector<std::string>{"and", "god", "said", "let", "there", "be", "light", "and"}));
  EXPECT_TRUE(words_of(" ... ").empty());
}

TEST(EvalScoring, BagF1) {
  EXPECT_DOUBLE_EQ(bag_f1({"a", "b"}, {"a", "b"}), 1.0);
  EXPECT_DOUBLE_EQ(bag_f1({"a"}, {"a", "b"}), 2.0 * 1.0 * 0.5 / 1.5);
  EXPECT_DOUBLE_EQ(bag_f1({}, {"a"}), 0.0);
  EXPECT_DOUBLE_EQ(bag_f1({"a", "a"}, {"a"}), 2.0 * 0.5 * 1.0 / 1.5);
}

TEST(EvalScoring, Answers) {
  LanguageId lid;
  lid.train("en", {"and the lord said unto moses", "the children of israel went out of the land"});
  lid.train("es", {"y dijo el señor á moisés", "los hijos de israel salieron de la tierra"});
  EXPECT_EQ(lid.classify_word("the"), "en");
  EXPECT_EQ(lid.classify_word("los"), "es");
  TaskScore s = score_answer("repeat", "Los hijos de Israel.", "Los hijos de Israel", "es", lid, true);
  EXPECT_TRUE(s.checkable);
  EXPECT_EQ(s.exact, 1.0);
  EXPECT_EQ(s.f1, 1.0);
  EXPECT_EQ(s.eos, 1.0);
  EXPECT_GT(s.lang, 0.7);
  s = score_answer("first_word", "Y entonces", "Y", "es", lid, false);
  EXPECT_EQ(s.exact, 1.0);
  EXPECT_EQ(s.eos, 0.0);
  s = score_answer("last_word", "tierra", "tierra", "es", lid, true);
  EXPECT_EQ(s.exact, 1.0);
  s = score_answer("continue", "de la tierra y mas", "de la tierra.", "es", lid, true);
  EXPECT_EQ(s.exact, 1.0);
  EXPECT_LT(s.f1, 1.0);
  s = score_answer("dialogue", "", "hola", "es", lid, true);
  EXPECT_FALSE(s.checkable);
  EXPECT_EQ(s.lang, 0.0);
  EXPECT_THROW(score_answer("translate", "", "", "es", lid, true), std::exception);
  // The strict metrics: an empty answer or one with U+FFFD is a failure, in
  // no language, and "stopping" with it does not count.
  s = score_answer("repeat", "", "tierra", "es", lid, true);
  EXPECT_FALSE(s.valid);
  EXPECT_EQ(s.eos, 1.0);
  EXPECT_EQ(s.eos_strict, 0.0);
  s = score_answer("repeat", "tierra \xEF\xBF\xBD", "tierra", "es", lid, true);
  EXPECT_FALSE(s.valid);
  EXPECT_GT(s.lang, 0.0) << "the first run's definition counted it";
  EXPECT_GT(s.f1, 0.0);
  EXPECT_EQ(s.lang_strict, 0.0);
  EXPECT_EQ(s.f1_strict, 0.0);
  EXPECT_EQ(s.eos_strict, 0.0);
  s = score_answer("repeat", " tierra ", "tierra", "es", lid, true);
  EXPECT_TRUE(s.valid);
  EXPECT_EQ(s.f1_strict, 1.0);
  EXPECT_EQ(s.eos_strict, 1.0);
  EXPECT_EQ(s.lang_strict, s.lang);
}

TEST(EvalData, BadInputIsOneClearError) {
  t::TempDir tmp;
  const std::string lid = (tmp / "es.txt").string(), tasks = (tmp / "t.jsonl").string();
  write_file(lid, "y dijo el señor\n");
  auto load = [&](const std::string& content, bool heldout_without_lid = false) {
    std::filesystem::remove(tasks);
    write_file(tasks, content);
    EvalOptions o;
    o.tasks = tasks;
    o.lang_data = {{"es", lid}};
    if (heldout_without_lid) o.heldout = {{"en", lid}};
    try {
      load_eval_data(o);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  const std::string good = R"({"lang": "es", "type": "repeat", "messages": [{"role": "user", "content": "x"}], "expected": "x"})";
  EXPECT_EQ(load(good + "\n"), "(accepted)");
  EXPECT_NE(load(good + "\n{not json\n").find("t.jsonl line 2: invalid JSON"), std::string::npos);
  EXPECT_NE(load(R"({"type": "repeat"})" "\n").find("line 1: \"messages\" must be"), std::string::npos);
  EXPECT_NE(load(R"({"type": "translate", "messages": [{"role": "user", "content": "x"}]})" "\n").find("unknown task type"),
            std::string::npos);
  EXPECT_NE(load("\n").find("no tasks"), std::string::npos);
  EXPECT_NE(load(good + "\n", true).find("--heldout en="), std::string::npos);
}

// The whole pipeline at reduced scale: data, base conversion, chat SFT
// (faithful [INST]/</s> template at two strengths, and the first run's
// <|end|> template), CP (original and extended vocabulary), CP->FT, every
// merge arm, every evaluation, and the diagnosis with the float64 reference.
TEST(ReproductionPipeline, ReducedScaleRunsEndToEnd) {
  CHATVEC_REQUIRE_PATH(t::shared_dir() / "models/stories260K/stories260K.bin");
  CHATVEC_REQUIRE_PATH(t::shared_dir() / "data/bible/bible-es-rv1909.tsv");
  for (const char* mod : {"yaml", "torch", "sentencepiece"})
    if (t::run_command(std::string("/usr/bin/python3 -c 'import ") + mod + "'").exit_code != 0) {
      if (t::in_ci()) FAIL() << "python3-" << mod << " required in CI";
      GTEST_SKIP() << "python3-" << mod << " not installed";
    }
  t::TempDir tmp;
  const auto r = t::run_command("/usr/bin/python3 " + t::shell_quote((t::source_dir() / "experiments/run_experiment.py").string()) +
                                " --scale ci --table7 --out " + t::shell_quote((tmp / "work").string()) + " --shared " +
                                t::shell_quote(t::shared_dir().string()) + " --chatvec " + t::shell_quote(t::chatvec_bin()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const Json res = read_json_file((tmp / "work/results.json").string());
  const char* rows[] = {"chat (English SFT)", "CP", "CP + CV", "CP + 0.5 CV", "CP→FT", "CP→FT + CV",
                        "chat (English SFT) [lr 1e-4]", "CP + CV [lr 1e-4]", "CP + 1.25 CV", "CP + CV [embeddings skipped]",
                        "CP + CV [attention only]", "CP + CV [MLP only]",
                        "CP + CV [schedule 0→r by layer]", "CP + 0.5 CV [DARE 0.25]", "chat (English SFT) [<|end|>]",
                        "CP + CV [<|end|>]", "CP→FT + CV [<|end|>]", "CPx", "CPx + CV [shared]", "CPx + CV [align]",
                        "CPx + CV [skip]", "CPx→FT", "CPx→FT + CV"};
  for (const char* row : rows) {
    ASSERT_TRUE(res["results"].contains(row)) << row;
    const Json& m = res["results"][row]["0"];
    ASSERT_FALSE(m.contains("error")) << row << ": " << m.dump();
    for (const char* k : {"es_f1", "es_exact", "es_eos", "es_share", "en_f1", "en_share", "es_bpb", "en_bpb", "es_f1_s",
                          "es_eos_s", "es_share_s", "es_valid", "es_tokens", "bpb_ref"}) {
      ASSERT_TRUE(m.contains(k)) << row << " " << k;
      const double v = m[k].get<double>();
      EXPECT_TRUE(std::isfinite(v)) << row << " " << k;
      EXPECT_GE(v, 0.0) << row << " " << k;
    }
    // The strict metrics only ever lower the first run's.
    EXPECT_LE(m["es_f1_s"].get<double>(), m["es_f1"].get<double>() + 1e-12) << row;
    EXPECT_LE(m["es_eos_s"].get<double>(), m["es_eos"].get<double>() + 1e-12) << row;
  }
  // The end-of-turn diagnosis: the token exists in these models (</s> = 2 in
  // every faithful one, <|end|> = 512 in the first run's chat models), its
  // mass is a probability, masking it cannot make the text less likely.
  for (const char* row : {"CP + CV", "chat (English SFT)", "CP + CV [<|end|>]", "CP→FT + CV [<|end|>]"}) {
    const Json& m = res["results"][row]["0"];
    ASSERT_TRUE(m.contains("eot_mass")) << row;
    EXPECT_GT(m["eot_mass"].get<double>(), 0.0) << row;
    EXPECT_LT(m["eot_mass"].get<double>(), 1.0) << row;
    EXPECT_LE(m["bpb_masked"].get<double>(), m["bpb_ref"].get<double>() + 1e-9) << row;
    EXPECT_GT(m["eot_row_norm"].get<double>(), 0.0) << row;
    ASSERT_TRUE(m.contains("masked_f1")) << row;
    EXPECT_EQ(m["diag"]["eot"][0].get<int>(), std::string(row).find("<|end|>") != std::string::npos ? 512 : 2) << row;
  }
  // The float64 reference (tests/engine/reference_llama.py) and chatvec's
  // engine agree on the diagnosis verses' bits/byte, for every model.
  EXPECT_LT(res["checks"]["reference_vs_engine_bpb"]["0"]["max_relative_difference"].get<double>(), 1e-5);
  // A stronger chat SFT moves the weights further.
  EXPECT_GT(res["results"]["chat (English SFT)"]["0"]["cv_rel"].get<double>(),
            res["results"]["chat (English SFT) [lr 1e-4]"]["0"]["cv_rel"].get<double>());
  // Embeddings skipped: the merge keeps CP's embedding, so the end-of-turn
  // row is CP's (no vector added to it).
  EXPECT_DOUBLE_EQ(res["results"]["CP + CV [embeddings skipped]"]["0"]["eot_row_norm"].get<double>(),
                   res["results"]["CP"]["0"]["eot_row_norm"].get<double>());
  // --embeddings full cannot apply to a grown vocabulary: recorded, not fatal.
  EXPECT_TRUE(res["results"]["CPx + CV [full]"]["0"].contains("error"));
  // The chat vector extracted once and applied to CP and CP->FT equals the
  // merges, for both templates (with <|end|>: the transplanted row,
  // tokenizer and EOS files included).
  for (const char* check : {"extract_apply_equals_merge", "extract_apply_equals_merge_end"})
    for (const char* t : {"cp", "cp_ft"}) {
      const Json& c = res["checks"][check]["0"][t];
      EXPECT_TRUE(c["equal"].get<bool>()) << check << " " << t << ": " << c.dump();
      EXPECT_GT(c["tensors"].get<int>(), 10) << t;
    }
  for (const char* f : {"report.md", "spanish_tasks.svg", "ratio.svg", "size.svg"})
    EXPECT_TRUE(std::filesystem::exists(tmp / "work" / f)) << f;
}

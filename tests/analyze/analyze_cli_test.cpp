// `chatvec analyze` end to end on generated Llama-shaped checkpoints (several
// shards; bf16, f16, f32; a vocabulary-extended target; tensors larger than
// the chunk), every figure checked against an independent numpy computation
// (tests/analyze/reference_analyze.py), plus what a user relies on: the same
// figures whatever --threads and --chunk, the table and the plot, one-line
// errors with exit status 2 and nothing written.
#include <fstream>
#include <regex>

#include "core/file_util.h"
#include "core/json_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

class AnalyzeCli : public testing::SharedDirSuite<AnalyzeCli> {
 protected:
  static void SetUpTestSuite() {
    if (!begin_suite("numpy")) return;
    // The models (about 2 s of Python a process) are generated once per build
    // directory and linked into each test's directory; no test changes them.
    const fs::path src = testing::source_dir();
    generate_cached(
        "analyze",
        {src / "tests/analyze/analyze_cli_test.cpp", src / "scripts/make_synthetic_model.py",
         src / "tests/analyze/make_sparse_chat.py", src / "tests/analyze/make_binned_pair.py"},
        [] {
          // hidden 128, intermediate 344: the MLP matrices (44032 elements) and
          // the vocabulary tensors (65536+) span several chunks of --chunk 16384.
          const std::string shape = "--shape small --hidden 128 --intermediate 344 ";
          gen("base", shape + "--dtype bf16 --seed 1 --tokenizer --shard-bytes 150000");
          // The chat model adds 32 tokens; the target appends 64 (the first 32 the chat model's).
          gen("chat", shape + "--vocab 544 --tokenizer --derive-from " + path("base") +
                          " --seed 2 --noise 0.01 --shard-bytes 300000");
          gen("target", shape + "--vocab 576 --tokenizer --derive-from " + path("base") +
                            " --seed 3 --noise 0.05 --reverse-order");
          // Chat deltas below bf16's resolution: most are exactly zero, so the
          // radix selection refines down to single values.
          gen("chat_tiny", shape + "--tokenizer --derive-from " + path("base") + " --seed 4 --noise 0.00001");
          for (const char* dt : {"f16", "f32"}) {
            const std::string d = dt;
            gen("base_" + d, shape + "--dtype " + d + " --seed 11 --shard-bytes 200000");
            gen("chat_" + d, shape + "--derive-from " + path("base_" + d) + " --seed 12 --noise 0.01");
            gen("target_" + d,
                shape + "--derive-from " + path("base_" + d) + " --seed 13 --noise 0.03 --shard-bytes 100000");
          }
          // 1.5 million elements in each vocabulary tensor, nine deltas in ten zero.
          gen("base_big", "--shape small --vocab 12000 --hidden 128 --intermediate 344 --layers 1 --seed 7");
          gen("chat_big", "--shape small --vocab 12000 --hidden 128 --intermediate 344 --layers 1 --derive-from " +
                              path("base_big") + " --seed 8 --noise 0.01");
          if (ok_) {
            auto s = run_command("/usr/bin/python3 " +
                                 shell_quote((testing::source_dir() / "tests/analyze/make_sparse_chat.py").string()) +
                                 " " + path("base_big") + " " + path("chat_sparse"));
            if (s.exit_code != 0) {
              ok_ = false;
              why_ = "make_sparse_chat.py failed: " + s.err;
            }
            auto p = run_command("/usr/bin/python3 " +
                                 shell_quote((testing::source_dir() / "tests/analyze/make_binned_pair.py").string()) +
                                 " " + path("base_big") + " " + path("base_binned") + " " + path("chat_binned"));
            if (p.exit_code != 0) {
              ok_ = false;
              why_ = "make_binned_pair.py failed: " + p.err;
            }
          }
          gen("chat_shape", "--shape small --hidden 64 --intermediate 344 --tokenizer --seed 6");
          // Layers with MLP matrices of 1.08 million elements (f32, several
          // shards): a layer's thresholds estimated from its members' samples.
          const std::string wide = "--shape small --vocab 512 --hidden 128 --intermediate 8448 --layers 2 --dtype f32 ";
          gen("base_wide", wide + "--seed 21 --shard-bytes 3000000");
          gen("chat_wide", wide + "--derive-from " + path("base_wide") + " --seed 22 --noise 0.01");
          // bf16 tensors of 1,048,628 elements (over 2^20, so sampled; not a
          // multiple of 8, so the last block has a tail outside the lanes).
          const std::string odd = "--shape small --vocab 15421 --hidden 68 --heads 4 --kv-heads 2 --head-dim 17 "
                                  "--intermediate 15421 --layers 1 --dtype bf16 ";
          gen("base_odd", odd + "--seed 31");
          gen("chat_odd", odd + "--derive-from " + path("base_odd") + " --seed 32 --noise 0.01");
          gen("target_odd", odd + "--derive-from " + path("base_odd") + " --seed 33 --noise 0.02");
        });
  }

  static testing::CommandResult chatvec(const std::string& args) {
    return run_command(shell_quote(testing::chatvec_bin()) + " " + args);
  }
  static std::string models(const std::string& base, const std::string& chat, const std::string& target = "") {
    return "--base " + path(base) + " --chat " + path(chat) + (target.empty() ? "" : " --target " + path(target));
  }
  // Analyse, then check against numpy; returns the reference's summary.
  static Json check(const std::string& base, const std::string& chat, const std::string& target,
                    const std::string& extra, const std::string& json_name, const std::string& ref_extra = "") {
    auto r = chatvec("-q analyze " + models(base, chat, target) + " --json " + path(json_name) + " " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto ref = run_command("/usr/bin/python3 " +
                           shell_quote((testing::source_dir() / "tests/analyze/reference_analyze.py").string()) + " " +
                           path(json_name) + " " + path(base) + " " + path(chat) +
                           (target.empty() ? "" : " " + path(target)) + " " + ref_extra);
    EXPECT_EQ(ref.exit_code, 0) << ref.out << ref.err;
    return ref.out.empty() ? Json() : Json::parse(ref.out);
  }
  static Json without_run_details(Json j) {
    j.erase("chunk_elements");
    for (auto& t : j["tensors"]) t.erase("passes");
    return j;
  }
};

TEST_F(AnalyzeCli, Bf16VocabularyExtendedTargetEqualsNumpy) {
  for (const char* chunk : {"16384", "16777216"}) {
    Json j = check("base", "chat", "target", std::string("--chunk ") + chunk, std::string("bf16_") + chunk + ".json");
    EXPECT_EQ(j["tensors"].get<int>(), 39);
    for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
      const Json& rows = j["vocab_rows"][name];
      EXPECT_EQ(rows["combined"].get<int>(), 512) << j.dump();
      EXPECT_EQ(rows["chat_only"].get<int>(), 32);
      EXPECT_EQ(rows["target_only"].get<int>(), 32);
    }
    // Tensors under 2^20 elements: the sums and a histogram, then one pass
    // gathering the candidates of each top fraction (and the mass above).
    EXPECT_EQ(j["max_passes"].get<int>(), 2);
  }
}

TEST_F(AnalyzeCli, WithoutTargetTheRowsAreExtractsPairs) {
  Json j = check("base", "chat", "", "--chunk 16384", "no_target.json");
  EXPECT_EQ(j["tensors"].get<int>(), 39);
  EXPECT_EQ(j["vocab_rows"]["lm_head.weight"]["chat_only"].get<int>(), 32);
  Json out = read_json_file(path("no_target.json"));
  EXPECT_TRUE(out["target"].is_null());
  EXPECT_FALSE(out["total"].contains("cosine"));
}

TEST_F(AnalyzeCli, F16AndF32WithAndWithoutTarget) {
  for (const char* dt : {"f16", "f32"}) {
    const std::string d = dt;
    Json j = check("base_" + d, "chat_" + d, "target_" + d, "--chunk 16384", d + "_t.json");
    EXPECT_EQ(j["tensors"].get<int>(), 39);
    EXPECT_TRUE(j["vocab_rows"].empty());  // equal vocabularies: element-wise
    Json out = read_json_file(path(d + "_t.json"));
    for (const auto& t : out["tensors"]) EXPECT_EQ(t["dtype"], d == "f16" ? "F16" : "F32");
    check("base_" + d, "chat_" + d, "", "", d + ".json");
  }
}

TEST_F(AnalyzeCli, ExactThresholdsWithManyTies) {
  // Deltas of a few bf16 steps: thousands of elements share each |δc|, and
  // the mass counts the tied elements at the threshold.
  Json j = check("base", "chat_tiny", "target", "--chunk 16384", "tiny.json");
  EXPECT_EQ(j["tensors"].get<int>(), 39);
}

TEST_F(AnalyzeCli, ZeroDeltasTieAtZeroInOnePass) {
  // Nine deltas in ten are exactly zero: the 25 % threshold is 0, shared by
  // more than a million elements.  The estimate's window (or the histogram
  // bin holding only zeros) fixes it, and the mass counts the ties, in the
  // first pass.
  for (const char* extra : {"", "--no-estimate"}) {
    Json j = check("base_big", "chat_sparse", "", extra, "sparse.json");
    EXPECT_EQ(j["max_passes"].get<int>(), 1) << extra << " " << j.dump();
    Json out = read_json_file(path("sparse.json"));
    const Json& emb = out["tensors"][0];
    ASSERT_EQ(emb["name"], "model.embed_tokens.weight");
    EXPECT_EQ(emb["chat_nonzero"].get<uint64_t>(), 153600u);
    EXPECT_EQ(emb["top"][2]["threshold"].get<double>(), 0.0);
    EXPECT_EQ(emb["top"][2]["l2_share"].get<double>(), 1.0);
  }
}

TEST_F(AnalyzeCli, SharedTopBitsRefineTheRadixOrFitTheWindow) {
  // 1.5 million deltas of 0.5 and 0.5078125 (the same top 16 bits) in each
  // vocabulary tensor.  Without the estimate, the first level's bin is
  // mixed and too large to gather: a histogram of the next 16 bits (pass 2)
  // separates the two values, and one more pass sums the mass.  With it,
  // the window holds the two values and pass 1 settles everything.
  Json radix = check("base_binned", "chat_binned", "", "--no-estimate", "binned_radix.json");
  EXPECT_EQ(radix["max_passes"].get<int>(), 3) << radix.dump();
  Json window = check("base_binned", "chat_binned", "", "", "binned_window.json");
  EXPECT_EQ(window["max_passes"].get<int>(), 1) << window.dump();
  Json out = read_json_file(path("binned_window.json"));
  for (const auto& t : out["tensors"])
    if (t["name"] == "model.embed_tokens.weight") {
      EXPECT_EQ(t["top"][0]["threshold"].get<double>(), 0.5078125);  // 17 % of the elements
      EXPECT_EQ(t["top"][1]["threshold"].get<double>(), 0.5078125);
      EXPECT_EQ(t["top"][2]["threshold"].get<double>(), 0.5);
    }
}

TEST_F(AnalyzeCli, SelectionLikeMerge) {
  Json j = check("base", "chat", "target", "--include mlp --exclude 'layers\\.3\\.'", "sel.json",
                 "--include mlp --exclude 'layers\\.3\\.'");
  EXPECT_EQ(j["tensors"].get<int>(), 9);  // 3 MLP matrices x layers 0-2
  Json out = read_json_file(path("sel.json"));
  EXPECT_EQ(out["skipped"].size(), 30u);
}

TEST_F(AnalyzeCli, SameOutputWhateverThreadsAndChunk) {
  std::string first;
  for (const char* threads : {"1", "2", "3"}) {
    auto r = chatvec("-q analyze " + models("base", "chat", "target") + " --chunk 16384 --threads " + threads +
                     " --json -");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (first.empty()) first = r.out;
    else EXPECT_EQ(r.out, first) << "--threads " << threads;
  }
  auto big = chatvec("-q analyze " + models("base", "chat", "target") + " --threads 2 --json -");
  ASSERT_EQ(big.exit_code, 0) << big.err;
  EXPECT_EQ(without_run_details(Json::parse(big.out)).dump(), without_run_details(Json::parse(first)).dump());
}

TEST_F(AnalyzeCli, EstimatedWindowsSameWhateverThreadsAndChunk) {
  // Vocabulary tensors of 1.5 million elements: thresholds estimated from
  // a sample, settled in pass 1, equal to numpy's; the same bytes for any
  // thread count, the same figures for any chunk size (and without the
  // estimate, the same counts and thresholds).
  Json j = check("base_big", "chat_big", "", "", "big.json");
  EXPECT_EQ(j["max_passes"].get<int>(), 2);  // the small layer tensors; the vocabulary ones take 1
  Json ref = read_json_file(path("big.json"));
  for (const auto& t : ref["tensors"])
    if (t["elements"].get<uint64_t>() >= (uint64_t(1) << 20)) {
      EXPECT_EQ(t["passes"].get<int>(), 1) << t["name"];
    }
  std::string first;
  for (const char* args : {"--threads 1", "--threads 2", "--threads 3 --chunk 1000000", "--threads 2 --chunk 16384"}) {
    auto r = chatvec("-q analyze " + models("base_big", "chat_big") + " " + args + " --json -");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string figures = without_run_details(Json::parse(r.out)).dump();
    if (first.empty()) first = figures;
    else EXPECT_EQ(figures, first) << args;
    if (std::string(args) == "--threads 2") {
      EXPECT_EQ(r.out, chatvec("-q analyze " + models("base_big", "chat_big") + " --threads 1 --json -").out);
    }
  }
  auto radix = chatvec("-q analyze " + models("base_big", "chat_big") + " --no-estimate --json -");
  ASSERT_EQ(radix.exit_code, 0) << radix.err;
  Json a = Json::parse(radix.out), b = Json::parse(first);
  for (size_t i = 0; i < a["tensors"].size(); ++i)
    for (size_t q = 0; q < 3; ++q) {
      EXPECT_EQ(a["tensors"][i]["top"][q]["k"], b["tensors"][i]["top"][q]["k"]);
      EXPECT_EQ(a["tensors"][i]["top"][q]["threshold"], b["tensors"][i]["top"][q]["threshold"]);
    }
}

// The top fractions of a layer, over all of its elements together: equal to
// numpy's (the reference checks every layer's k, threshold and shares),
// from the windows in pass 1 or by bisection passes (--no-estimate), the
// same for any thread count and chunk size.
TEST_F(AnalyzeCli, LayerTopFractionsEqualNumpyWhicheverPath) {
  Json est = check("base", "chat", "target", "--chunk 16384", "layers_est.json");
  EXPECT_EQ(est["layers"].get<int>(), 4);
  for (const auto& [l, p] : est["layer_passes"].items()) EXPECT_EQ(p.get<int>(), 0) << "layer " << l;
  Json bis = check("base", "chat", "target", "--chunk 16384 --no-estimate", "layers_bis.json");
  EXPECT_EQ(bis["layers"].get<int>(), 4);
  for (const auto& [l, p] : bis["layer_passes"].items()) EXPECT_GE(p.get<int>(), 1) << "layer " << l;
  const Json a = read_json_file(path("layers_est.json")), b = read_json_file(path("layers_bis.json"));
  ASSERT_EQ(a["layers"].size(), b["layers"].size());
  for (size_t i = 0; i < a["layers"].size(); ++i)
    for (size_t q = 0; q < 3; ++q) {
      const Json &x = a["layers"][i]["top"][q], &y = b["layers"][i]["top"][q];
      EXPECT_EQ(x["k"], y["k"]);
      EXPECT_EQ(x["threshold"], y["threshold"]);
      EXPECT_NEAR(x["l2_share"].get<double>(), y["l2_share"].get<double>(), 1e-12);
    }
  // Members over 2^20 elements: sampled, the windows from weighted samples.
  Json wide = check("base_wide", "chat_wide", "", "", "wide.json");
  EXPECT_EQ(wide["layers"].get<int>(), 2);
  for (const auto& [l, p] : wide["layer_passes"].items()) EXPECT_EQ(p.get<int>(), 0) << "layer " << l;
  std::string first;
  for (const char* args : {"--threads 1", "--threads 3 --chunk 100000", "--threads 2 --chunk 16384"}) {
    auto r = chatvec("-q analyze " + models("base_wide", "chat_wide") + " " + args + " --json -");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string layers = Json::parse(r.out)["layers"].dump();
    if (first.empty()) first = layers;
    else EXPECT_EQ(layers, first) << args;
  }
  Json wide_bis = check("base_wide", "chat_wide", "", "--no-estimate --chunk 65536 --threads 2", "wide_bis.json");
  for (const auto& [l, p] : wide_bis["layer_passes"].items()) EXPECT_GE(p.get<int>(), 1) << "layer " << l;
}

// Pass 1 of a sampled tensor runs one fused loop (AVX-512 machines) or the
// general kernels (CHATVEC_ANALYZE_UNFUSED=1, and every other machine): the
// same JSON, byte for byte, for bf16 with and without a target, with a tail
// outside the lanes, and for f32; and it equals numpy.
TEST_F(AnalyzeCli, FusedAndGeneralPassOneGiveTheSameBits) {
  Json odd = check("base_odd", "chat_odd", "target_odd", "", "odd.json");
  EXPECT_EQ(odd["tensors"].get<int>(), 12);
  int sampled = 0;
  const Json out = read_json_file(path("odd.json"));
  for (const auto& t : out["tensors"])
    if (t["elements"].get<uint64_t>() > (uint64_t(1) << 20)) {
      ++sampled;
      EXPECT_EQ(t["passes"].get<int>(), 1) << t["name"];  // the windows decided in pass 1
    }
  EXPECT_EQ(sampled, 5);  // embeddings, LM head, three MLP matrices
  for (const std::string& m :
       {models("base_odd", "chat_odd", "target_odd"), models("base_odd", "chat_odd"), models("base_wide", "chat_wide") + " --threads 1"}) {
    auto fused = chatvec("-q analyze " + m + " --json -");
    auto general = run_command("CHATVEC_ANALYZE_UNFUSED=1 " + shell_quote(testing::chatvec_bin()) + " -q analyze " + m +
                               " --json -");
    ASSERT_EQ(fused.exit_code, 0) << fused.err;
    ASSERT_EQ(general.exit_code, 0) << general.err;
    EXPECT_FALSE(fused.out.empty());
    EXPECT_EQ(fused.out, general.out) << m;
  }
}

// When the windows miss (forced by CHATVEC_ANALYZE_MISS=1: every window is
// [0, 0]), the level-0 histogram that pass 1 no longer counts with windows
// is counted by one more pass (the tensor's, the layer members'), and the
// fallback selection still equals numpy.
TEST_F(AnalyzeCli, WindowMissCountsTheHistogramThenFallsBack) {
  setenv("CHATVEC_ANALYZE_MISS", "1", 1);
  Json odd = check("base_odd", "chat_odd", "target_odd", "", "odd_miss.json");
  Json wide = check("base_wide", "chat_wide", "", "--chunk 65536 --threads 2", "wide_miss.json");
  unsetenv("CHATVEC_ANALYZE_MISS");
  for (const Json* j : {&odd, &wide}) {
    EXPECT_EQ((*j)["error_count"].get<int>(), 0);
    for (const auto& [l, p] : (*j)["layer_passes"].items()) EXPECT_GE(p.get<int>(), 1) << "layer " << l;
  }
  const Json out = read_json_file(path("odd_miss.json"));
  for (const auto& t : out["tensors"]) {
    if (t["elements"].get<uint64_t>() > (uint64_t(1) << 20)) {
      EXPECT_GE(t["passes"].get<int>(), 3) << t["name"];  // pass 1, the histogram, the selection
    }
  }
}

TEST_F(AnalyzeCli, TableAndPlot) {
  auto r = chatvec("-q analyze " + models("base", "chat", "target") + " --top 3 --svg " + path("plot.svg"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("top 3 tensors by share"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lm_head.weight: 512 rows compared; 32 only in the chat model"), std::string::npos) << r.out;
  for (int l = 0; l < 4; ++l)
    EXPECT_TRUE(std::regex_search(r.out, std::regex("\\n +" + std::to_string(l) + " +[0-9.]+ +[0-9.]+ +-?[0-9.]+ +[0-9.]+%")))
        << "layer " << l << "\n" << r.out;
  const std::string svg = read_file(path("plot.svg"));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  // 13 series (6 norms, 4 agreement, 3 top fractions) of 4 layers each.
  EXPECT_NE(r.out.find("top1  top10  top25"), r.out.rfind("top1  top10  top25")) << r.out;  // tensors and layers
  EXPECT_NE(svg.find("top 10 % of the layer's elements"), std::string::npos);
  size_t polylines = 0, circles = 0;
  for (size_t p = 0; (p = svg.find("<polyline", p)) != std::string::npos; ++p) ++polylines;
  for (size_t p = 0; (p = svg.find("<circle", p)) != std::string::npos; ++p) ++circles;
  EXPECT_EQ(polylines, 13u);
  EXPECT_EQ(circles, 52u);
}

TEST_F(AnalyzeCli, TheReferenceNoticesAWrongFigure) {
  // The check can fail: a figure off by one part in a million is caught.
  auto r = chatvec("-q analyze " + models("base", "chat", "target") + " --json " + path("wrong.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = read_json_file(path("wrong.json"));
  j["tensors"][5]["chat_sq"] = j["tensors"][5]["chat_sq"].get<double>() * (1 + 1e-6);
  std::ofstream(path("wrong.json"), std::ios::trunc) << j.dump();
  auto ref = run_command("/usr/bin/python3 " +
                         shell_quote((testing::source_dir() / "tests/analyze/reference_analyze.py").string()) + " " +
                         path("wrong.json") + " " + path("base") + " " + path("chat") + " " + path("target"));
  EXPECT_EQ(ref.exit_code, 1) << ref.out;
}

TEST_F(AnalyzeCli, BadInputIsOneLineAndExitTwo) {
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {models("base", "chat") + " --target " + path("nonexistent"), "nonexistent"},
      {"--base " + path("base") + " --chat " + path("chat_shape"), "has shape"},
      {models("base", "chat") + " --include '('", "--include"},
      {models("base", "chat") + " --include nothing_matches", "no tensor selected"},
  };
  for (const auto& c : cases) {
    const std::string out = path("bad.json");
    auto r = chatvec("analyze " + c.args + " --json " + out + " --svg " + path("bad.svg"));
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(path("bad.svg")));
  }
}

}  // namespace
}  // namespace chatvec

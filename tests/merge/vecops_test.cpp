// The library side of ratio schedules, vector operations and recipes: the
// schedule's rules, the recipe's round trip and its refusals, the DARE
// random function's published values, and the statistics passes' and the
// element kernel's independence from threads and split points.  The
// element-by-element checks against numpy are in tests/cli/vecops_cli_test.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "core/error.h"
#include "fsum_reference.h"
#include "core/file_util.h"
#include "formats/checkpoint.h"
#include "formats/safetensors/safetensors_writer.h"
#include "merge/pipeline.h"
#include "merge/recipe.h"
#include "merge/schedule.h"
#include "merge/vector_ops.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

TEST(RatioSchedule, PointsSpreadOverTheLayersAndOverridesComeFirst) {
  RatioSchedule s;
  s.points = parse_ratio_points("0.2, 1.0,0.5", "--ratio");
  s.overrides = {parse_ratio_override("embed_tokens|lm_head=0", "--ratio-for"), parse_ratio_override("a=b=2", "x")};
  EXPECT_EQ(s.overrides[1].pattern, "a=b");  // split at the last '='
  ResolvedSchedule r(s, 5, "--ratio");
  // 5 layers, 3 points: layer l at t = l / 2.
  EXPECT_DOUBLE_EQ(r.ratio_for("model.layers.0.mlp.up_proj.weight"), 0.2);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.layers.1.mlp.up_proj.weight"), 0.6);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.layers.2.mlp.up_proj.weight"), 1.0);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.layers.3.mlp.up_proj.weight"), 0.75);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.layers.4.mlp.up_proj.weight"), 0.5);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.embed_tokens.weight"), 0.0);
  EXPECT_DOUBLE_EQ(r.ratio_for("model.norm.weight"), 0.5);  // outside the layers: the last point
  EXPECT_EQ(r.unmatched(), std::vector<std::string>{"a=b"});
  EXPECT_EQ(layer_of("model.layers.12.self_attn.q_proj.weight"), 12);
  EXPECT_EQ(layer_of("model.norm.weight"), -1);
  EXPECT_EQ(layer_of("model.mylayers.3.x"), -1);
  // Embeddings without an override: the first point.
  ResolvedSchedule plain(RatioSchedule{}, 2, "--ratio");
  RatioSchedule two;
  two.points = {0.3, 0.9};
  ResolvedSchedule t(two, 2, "--ratio");
  EXPECT_DOUBLE_EQ(t.ratio_for("model.embed_tokens.weight"), 0.3);
  EXPECT_DOUBLE_EQ(t.ratio_for("lm_head.weight"), 0.9);
  // More points than layers; bad numbers.
  RatioSchedule three;
  three.points = {1, 2, 3};
  EXPECT_THROW(ResolvedSchedule(three, 2, "--ratio"), InputError);
  EXPECT_THROW(parse_ratio_points("1,x", "--ratio"), InputError);
  EXPECT_THROW(parse_ratio_points("inf", "--ratio"), InputError);
  EXPECT_THROW(parse_ratio_override("=1", "--ratio-for"), InputError);
}

TEST(DareRandomFunction, SplitMix64AndFnv1aAsPublished) {
  // SplitMix64 from state 0: the first output is mix(0 + gamma).
  EXPECT_EQ(splitmix64_mix(0x9E3779B97F4A7C15ull), 0xE220A8397B1DCDAFull);
  // FNV-1a 64 of "a" (the published test vector) and of "".
  EXPECT_EQ(dare_name_key("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(dare_name_key(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(dare_drop_threshold(0.5), 1ull << 52);
  EXPECT_EQ(dare_drop_threshold(0), 0u);
}

TEST(Recipe, RoundTripUnknownKeysAndRelativePaths) {
  MergeJob job;
  job.kind = JobKind::Merge;
  job.base = "/m/base";
  job.chat = "/m/chat";
  job.target = "/m/target";
  job.ratio.points = {0.1, 0.7, 0.25};
  job.ratio.overrides = {{"lm_head", 0.0}};
  job.ops.dare = 0.3;
  job.ops.seed = 18446744073709551615ull;
  job.ops.keep = 0.5;
  job.ops.rescale = PruneRescale::L2;
  job.ops.clip = 0.25;
  job.dtype = DType::BF16;
  job.include = {"layers"};
  job.embeddings = EmbeddingPolicy::Align;
  job.shard_size = 123456;
  const Json j = recipe_to_json(job);
  const MergeJob back = recipe_from_json(j, "/elsewhere");
  EXPECT_EQ(recipe_to_json(back), j);
  EXPECT_EQ(back.ratio, job.ratio);
  EXPECT_EQ(back.ops, job.ops);
  EXPECT_EQ(back.base, "/m/base");

  Json rel = j;
  rel["base"] = "models/local/base";
  EXPECT_EQ(recipe_from_json(rel, "/r").base, "/r/models/local/base");
  // (Hugging Face ids of cached models stay ids: tests/cli/inputs_cli_test.cpp.)

  auto error_of = [](const Json& r) {
    try {
      recipe_from_json(r, "");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Json bad = j;
  bad["ratoi"] = 1;
  EXPECT_NE(error_of(bad).find("unknown key \"ratoi\""), std::string::npos) << error_of(bad);
  bad = j;
  bad["operations"]["magnitude"]["kep"] = 1;
  EXPECT_NE(error_of(bad).find("unknown key \"operations.magnitude.kep\""), std::string::npos) << error_of(bad);
  bad = j;
  bad["ratio"] = "1,a";
  EXPECT_NE(error_of(bad).find("finite number"), std::string::npos);
  bad = j;
  bad["vectors"] = Json::array();
  EXPECT_NE(error_of(bad).find("\"vectors\": is not a key of a merge recipe"), std::string::npos) << error_of(bad);
  bad = j;
  bad["kind"] = "chat-vector";
  EXPECT_NE(error_of(bad).find("not a recipe"), std::string::npos);

  MergeJob ap;
  ap.kind = JobKind::Apply;
  ap.target = "/t";
  ap.vectors = {{"/v1", 0.5}, {"/v2", RatioSchedule(2.0)}};
  ap.vectors[1].ratio.points = {0.1, 0.2};
  ap.ops.ties = true;
  ap.token_rows_from = 2;
  const Json aj = recipe_to_json(ap);
  const MergeJob aback = recipe_from_json(aj, "");
  EXPECT_EQ(aback.vectors, ap.vectors);
  EXPECT_TRUE(aback.ops.ties);
  EXPECT_EQ(aback.token_rows_from, 2);
}

// A model of one tensor, written by the library's own writer (the values do
// not matter here, only that two ways of computing give the same bits).
// (wide: the values spread over 150 binades, subnormals included, so the
// exact sums' lanes, their outliers and subnormals all take part.)
void write_one(const fs::path& dir, const std::string& name, DType dt, uint64_t rows, uint64_t cols, uint32_t seed,
               bool specials = false, bool wide = false) {
  fs::create_directories(dir);
  std::vector<float> v(rows * cols);
  uint64_t s = seed;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = float(int64_t(s >> 40) - (1ll << 23)) * 1e-8f;
  }
  if (wide)
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::ldexp(v[i], 20 - int((i * 37 + seed) % 150));
  // Ties in |delta|: every 7th value repeated.
  for (size_t i = 7; i < v.size(); i += 7) v[i] = v[i - 7];
  if (specials) {  // NaN, infinities, zeros, a subnormal, near the tail too
    const float inf = std::numeric_limits<float>::infinity();
    const float vals[] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf, 0.0f, -0.0f, 1e-40f};
    for (size_t k = 0; k < 6; ++k) {
      v[(seed * 131 + k * 977) % v.size()] = vals[k];
      v[v.size() - 1 - (seed + k * 3) % 13] = vals[(k + seed) % 6];
    }
  }
  std::vector<uint8_t> bytes(v.size() * dtype_bits(dt) / 8);
  convert_from_f32(v.data(), v.size(), dt, bytes.data());
  SafetensorsWriter w(dir.string(), {{name, dt, {rows, cols}}}, 1u << 30, {{"format", "pt"}});
  w.append(bytes.data(), bytes.size());
  w.finish();
}

class NullReporter : public JobReporter {
 public:
  void line(const std::string&) override {}
  void warning(const std::string&) override {}
};

TEST(VectorOps, StatisticsAndElementsDoNotDependOnThreadsOrSplits) {
  testing::TempDir tmp;
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  write_one(tmp.path() / "base", name, DType::BF16, 300, 77, 1);
  write_one(tmp.path() / "chat", name, DType::F16, 300, 77, 2);
  write_one(tmp.path() / "target", name, DType::F32, 300, 77, 3);
  MergeJob job;
  job.base = (tmp.path() / "base").string();
  job.chat = (tmp.path() / "chat").string();
  job.target = (tmp.path() / "target").string();
  job.output = (tmp.path() / "out").string();
  job.ops.dare = 0.25;
  job.ops.keep = 0.3;
  job.ops.rescale = PruneRescale::L1;
  job.ops.clip = 0.5;
  NullReporter rep;
  PreparedJob p = prepare_job(job, rep);
  ASSERT_EQ(p.plan.tasks.size(), 1u);
  const TensorTask& task = p.plan.tasks[0];
  const uint64_t n = task.numel();
  const OpsState a = prepare_vector_ops(task, n, 1);
  for (auto [chunk, threads] : {std::pair<uint64_t, int>{1, 3}, {4096, 2}, {5000, 4}, {n, 3}}) {
    const OpsState b = prepare_vector_ops(task, chunk, threads);
    ASSERT_EQ(b.terms.size(), 1u);
    EXPECT_EQ(a.terms[0].keep_bits, b.terms[0].keep_bits) << chunk << " " << threads;
    EXPECT_EQ(std::memcmp(&a.terms[0].l1_all, &b.terms[0].l1_all, sizeof(double)), 0);
    EXPECT_EQ(std::memcmp(&a.terms[0].l2sq_kept, &b.terms[0].l2sq_kept, sizeof(double)), 0);
    EXPECT_EQ(a.terms[0].factor, b.terms[0].factor);
  }
  // The exact threshold: at least ceil(0.3 n) elements kept; ties all kept.
  EXPECT_EQ(a.terms[0].kept_threshold_rank, uint64_t(std::ceil(0.3 * double(n))));
  EXPECT_NE(a.terms[0].factor, 1.0f);
  std::vector<float> whole(n), pieces(n);
  combine_ops_range(task, a, whole.data(), 0, 0, n);
  for (uint64_t b = 0; b < n;) {
    const uint64_t e = std::min(n, b + 1 + (b * 7919) % 3001);
    combine_ops_range(task, a, pieces.data() + b, b, b, e);
    b = e;
  }
  EXPECT_EQ(std::memcmp(whole.data(), pieces.data(), n * sizeof(float)), 0);
}

// The fused bf16 output loop against the general path (the same float
// operations in the same order): every combination of its operations and
// ratios, a length that is no multiple of the vector width, NaN, infinities,
// zeros and subnormals in the inputs, split anywhere.
TEST(VectorOps, FusedBf16LoopIsBitForBitTheGeneralPath) {
  testing::TempDir tmp;
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  struct Case {
    double ratio, dare, keep;
    PruneRescale rescale;
    double clip;
  };
  const Case cases[] = {{0.5, 0.5, 1, PruneRescale::None, 0},    {1, 0.3, 1, PruneRescale::None, 0},
                        {-0.7, 0, 0.3, PruneRescale::None, 0},   {0.5, 0, 0.25, PruneRescale::L2, 0},
                        {1, 0.25, 0.3, PruneRescale::L1, 0.5},   {0.5, 0, 1, PruneRescale::None, 1e-3},
                        {2, 0.9, 0.01, PruneRescale::L2, 0}};
  NullReporter rep;
  // Clean inputs (no NaN: the factor stays finite) and the special ones.
  for (bool specials : {false, true}) {
    const fs::path dir = tmp.path() / (specials ? "s" : "c");
    write_one(dir / "base", name, DType::BF16, 97, 61, 1, specials);
    write_one(dir / "chat", name, DType::BF16, 97, 61, 2, specials);
    write_one(dir / "target", name, DType::BF16, 97, 61, 3, specials);
    for (const Case& c : cases) {
      MergeJob job;
      job.base = (dir / "base").string();
      job.chat = (dir / "chat").string();
      job.target = (dir / "target").string();
      job.output = (dir / "out").string();
      job.ratio = RatioSchedule(c.ratio);
      job.ops.dare = c.dare;
      job.ops.seed = 7;
      job.ops.keep = c.keep;
      job.ops.rescale = c.rescale;
      job.ops.clip = c.clip;
      PreparedJob p = prepare_job(job, rep);
      ASSERT_EQ(p.plan.tasks.size(), 1u);
      const TensorTask& task = p.plan.tasks[0];
      ASSERT_EQ(task.dtype, DType::BF16);
      const uint64_t n = task.numel();
      const OpsState st = prepare_vector_ops(task, 4096, 1);
      std::vector<uint16_t> fused(n), general(n);
      const uint64_t calls = vector_ops_fused_calls();
      for (uint64_t b = 0; b < n;) {
        const uint64_t e = std::min(n, b + 1 + (b * 7919) % 1500);
        combine_ops_range(task, st, fused.data() + b, b, b, e);
        b = e;
      }
      EXPECT_GT(vector_ops_fused_calls(), calls);
      set_vector_ops_fast_paths(false);
      const OpsState slow = prepare_vector_ops(task, 4096, 1);  // statistics from read_f32 and a subtraction
      EXPECT_EQ(slow.terms[0].keep_bits, st.terms[0].keep_bits);
      EXPECT_EQ(std::memcmp(&slow.terms[0].l1_all, &st.terms[0].l1_all, sizeof(double)), 0);
      EXPECT_EQ(std::memcmp(&slow.terms[0].l2sq_kept, &st.terms[0].l2sq_kept, sizeof(double)), 0);
      EXPECT_EQ(std::memcmp(&slow.terms[0].factor, &st.terms[0].factor, sizeof(float)), 0);
      combine_ops_range(task, st, general.data(), 0, 0, n);
      set_vector_ops_fast_paths(true);
      size_t differ = 0;
      for (uint64_t i = 0; i < n; ++i) differ += fused[i] != general[i];
      EXPECT_EQ(differ, 0u) << "ratio " << c.ratio << " dare " << c.dare << " keep " << c.keep << " specials "
                            << specials;
    }
  }
}

// The fused statistics loop (one or two whole blocks at a time, straight
// from the bf16 pair or from the DARE'd block) against the general path's
// statistics: every pass kind (window, kept, sums, the target's squares), bf16
// and non-bf16 targets, with and without NaN/inf/zeros, for chunks of one
// block (blocks one by one) and of the whole tensor (in pairs), 1-3 threads.
TEST(VectorOps, FusedStatisticsEqualTheGeneralPathInAnyGrouping) {
  testing::TempDir tmp;
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  NullReporter rep;
  for (int data : {0, 1, 2})  // clean, specials, wide
    for (DType tdt : {DType::BF16, DType::F16}) {
      if (data == 2 && tdt == DType::F16) continue;
      const bool specials = data == 1, wide = data == 2;
      const fs::path dir = tmp.path() / (std::to_string(data) + std::string(dtype_name(tdt)));
      write_one(dir / "base", name, DType::BF16, 151, 233, 11, specials, wide);  // 8.6 blocks
      write_one(dir / "chat", name, DType::BF16, 151, 233, 12, specials, wide);
      write_one(dir / "target", name, tdt, 151, 233, 13, specials);
      for (double dare : {0.0, 0.4})
        for (double keep : {1.0, 0.2, 0.97})
          for (PruneRescale rescale : {PruneRescale::None, PruneRescale::L1, PruneRescale::L2})
            for (double clip : {0.0, 0.3}) {
              if (keep == 1.0 && (rescale != PruneRescale::None || clip == 0)) continue;
              if (keep == 0.97 && !wide) continue;  // (wide: a threshold among the subnormals)
              MergeJob job;
              job.base = (dir / "base").string();
              job.chat = (dir / "chat").string();
              job.target = (dir / "target").string();
              job.output = (dir / "out").string();
              job.ops.dare = dare;
              job.ops.seed = 3;
              job.ops.keep = keep;
              job.ops.rescale = rescale;
              job.ops.clip = clip;
              PreparedJob p = prepare_job(job, rep);
              ASSERT_EQ(p.plan.tasks.size(), 1u);
              const TensorTask& task = p.plan.tasks[0];
              const uint64_t n = task.numel();
              set_vector_ops_fast_paths(false);
              const OpsState slow = prepare_vector_ops(task, n, 1);
              set_vector_ops_fast_paths(true);
              const std::string what = std::string(dtype_name(tdt)) + std::string(" dare ") + std::to_string(dare) + " keep " +
                                       std::to_string(keep) + " clip " + std::to_string(clip) + " specials " +
                                       std::to_string(data);
              for (auto [chunk, threads] : {std::pair<uint64_t, int>{4096, 1}, {n, 1}, {n, 2}, {3 * 4096, 3}}) {
                const OpsState fast = prepare_vector_ops(task, chunk, threads);
                const TermOpsState &a = slow.terms[0], &b = fast.terms[0];
                EXPECT_EQ(a.keep_bits, b.keep_bits) << what;
                EXPECT_EQ(a.window_hit, b.window_hit) << what;
                for (auto [x, y] : {std::pair{&a.l1_all, &b.l1_all}, {&a.l2sq_all, &b.l2sq_all},
                                    {&a.l1_kept, &b.l1_kept}, {&a.l2sq_kept, &b.l2sq_kept},
                                    {&a.target_l2sq, &b.target_l2sq}})
                  EXPECT_EQ(std::memcmp(x, y, sizeof(double)), 0) << what << " chunk " << chunk << " " << *x << " "
                                                                   << *y;
                EXPECT_EQ(std::memcmp(&a.factor, &b.factor, sizeof(float)), 0) << what;
              }
            }
    }
}

// The pruning threshold from the sampled window's one pass (hit) and from
// the fallback histogram passes (a forced miss): the same threshold and
// sums, whatever the chunk and the threads; and the threshold is the exact
// rank-th largest |delta|, counted here by brute force.
TEST(VectorOps, ThresholdWindowHitAndMissAgree) {
  testing::TempDir tmp;
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  write_one(tmp.path() / "base", name, DType::BF16, 400, 129, 4);
  write_one(tmp.path() / "chat", name, DType::BF16, 400, 129, 5);
  write_one(tmp.path() / "target", name, DType::BF16, 400, 129, 6);
  NullReporter rep;
  for (double keep : {0.3, 0.01, 0.999})
   for (PruneRescale rescale : {PruneRescale::L1, PruneRescale::L2}) {
    MergeJob job;
    job.base = (tmp.path() / "base").string();
    job.chat = (tmp.path() / "chat").string();
    job.target = (tmp.path() / "target").string();
    job.output = (tmp.path() / "out").string();
    job.ops.dare = 0.2;
    job.ops.keep = keep;
    job.ops.rescale = rescale;
    job.ops.clip = 0.5;
    PreparedJob p = prepare_job(job, rep);
    const TensorTask& task = p.plan.tasks[0];
    const uint64_t n = task.numel();
    const OpsState hit = prepare_vector_ops(task, 4096, 1);
    EXPECT_TRUE(hit.terms[0].window_hit) << keep;
    // Brute force: |delta| after DARE (the documented function), sorted.
    std::vector<float> d(n), scratch(n);
    task.terms[0].chat->read_f32(0, n, d.data());
    task.terms[0].base->read_f32(0, n, scratch.data());
    std::vector<uint32_t> bits(n);
    std::vector<float> delta(n);
    for (uint64_t i = 0; i < n; ++i) {
      float v = d[i] - scratch[i];
      const uint64_t z = dare_bits(hit.terms[0].dare_state, i);
      v = (z >> 11) < hit.terms[0].dare_threshold ? 0.0f : v * hit.terms[0].dare_scale;
      delta[i] = v;
      uint32_t b;
      std::memcpy(&b, &v, 4);
      bits[i] = b & 0x7fffffffu;
    }
    std::vector<uint32_t> sorted = bits;
    std::sort(sorted.begin(), sorted.end());
    const uint64_t rank = uint64_t(std::ceil(keep * double(n)));
    EXPECT_EQ(hit.terms[0].keep_bits, sorted[n - rank]) << keep;
    // The kept sums: the correctly rounded sums over the kept elements.
    std::vector<double> k1, k2;
    for (uint64_t i = 0; i < n; ++i)
      if (bits[i] >= sorted[n - rank]) {
        k1.push_back(std::fabs(double(delta[i])));
        k2.push_back(double(delta[i]) * double(delta[i]));
      }
    const double r1 = fsum_reference(k1), r2 = fsum_reference(k2);
    if (rescale == PruneRescale::L1) {
      EXPECT_EQ(std::memcmp(&hit.terms[0].l1_kept, &r1, 8), 0) << keep;
    }
    EXPECT_EQ(std::memcmp(&hit.terms[0].l2sq_kept, &r2, 8), 0) << keep;  // (clip needs it)
    set_vector_ops_force_window_miss(true);
    for (auto [chunk, threads] : {std::pair<uint64_t, int>{4096, 1}, {5000, 3}, {n, 2}}) {
      const OpsState miss = prepare_vector_ops(task, chunk, threads);
      EXPECT_FALSE(miss.terms[0].window_hit);
      EXPECT_EQ(miss.terms[0].keep_bits, hit.terms[0].keep_bits) << keep << " " << chunk;
      EXPECT_EQ(std::memcmp(&miss.terms[0].l2sq_kept, &hit.terms[0].l2sq_kept, sizeof(double)), 0);
      EXPECT_EQ(std::memcmp(&miss.terms[0].l1_kept, &hit.terms[0].l1_kept, sizeof(double)), 0);
      EXPECT_EQ(std::memcmp(&miss.terms[0].l2sq_all, &hit.terms[0].l2sq_all, sizeof(double)), 0);
      EXPECT_EQ(std::memcmp(&miss.terms[0].target_l2sq, &hit.terms[0].target_l2sq, sizeof(double)), 0);
      EXPECT_EQ(miss.terms[0].factor, hit.terms[0].factor);
    }
    set_vector_ops_force_window_miss(false);
    for (auto [chunk, threads] : {std::pair<uint64_t, int>{4096, 3}, {12345, 2}}) {
      const OpsState again = prepare_vector_ops(task, chunk, threads);
      EXPECT_TRUE(again.terms[0].window_hit);
      EXPECT_EQ(again.terms[0].keep_bits, hit.terms[0].keep_bits);
      EXPECT_EQ(again.terms[0].factor, hit.terms[0].factor);
    }
  }
}

// A vocabulary tensor built row by row (a target with more rows, the base's
// rows in another order): the statistics are those of the combined rows'
// deltas, DARE indexed by the base row's elements (brute force below), the
// same whatever the chunk, the threads, and whether the sampled window hits;
// each combined row is target + the operated delta.
TEST(VectorOps, RowsTaskStatisticsAreThoseOfTheCombinedRows) {
  testing::TempDir tmp;
  const std::string name = "model.embed_tokens.weight";
  const uint64_t rows_base = 400, rows_target = 450, w = 129;
  write_one(tmp.path() / "base", name, DType::BF16, rows_base, w, 7);
  write_one(tmp.path() / "chat", name, DType::BF16, rows_base, w, 8);
  write_one(tmp.path() / "target", name, DType::BF16, rows_target, w, 9);
  const Checkpoint base = Checkpoint::open((tmp.path() / "base").string());
  const Checkpoint chat = Checkpoint::open((tmp.path() / "chat").string());
  const Checkpoint target = Checkpoint::open((tmp.path() / "target").string());
  auto map = std::make_shared<RowMap>();
  for (uint64_t i = 0; i < rows_target; ++i) {
    if (i % 9 == 4 || i >= rows_base) {  // the target's own rows
      map->rows.push_back(RowOp{RowOp::KeepTarget, int64_t(i), -1, -1});
      continue;
    }
    const int64_t b = int64_t((i * 7 + 3) % rows_base);
    map->rows.push_back(RowOp{RowOp::Combine, int64_t(i), b, b});
  }
  TensorTask task;
  task.name = name;
  task.kind = TaskKind::Rows;
  task.dtype = DType::BF16;
  task.shape = {rows_target, w};
  task.target = &target.at(name);
  task.row_map = map;
  TensorTerm term{0.75, &chat.at(name), &base.at(name), nullptr};
  task.terms.push_back(term);
  task.ops.dare = 0.2;
  task.ops.seed = 3;
  task.ops.keep = 0.3;
  task.ops.rescale = PruneRescale::L2;
  task.ops.clip = 0.4;
  const OpsState hit = prepare_vector_ops(task, 4096, 1);
  const TermOpsState& st = hit.terms.at(0);
  EXPECT_TRUE(st.window_hit);
  // Brute force over the combined rows in output order: a row's delta after
  // DARE (the documented function of the base row's element index).
  std::vector<float> c(w), b(w), d(w);
  auto dare_row = [&](const RowOp& r) {
    chat.at(name).read_f32(uint64_t(r.chat_row) * w, w, c.data());
    base.at(name).read_f32(uint64_t(r.base_row) * w, w, b.data());
    for (uint64_t j = 0; j < w; ++j) {
      const uint64_t z = dare_bits(st.dare_state, uint64_t(r.base_row) * w + j);
      d[j] = (z >> 11) < st.dare_threshold ? 0.0f : (c[j] - b[j]) * st.dare_scale;
    }
  };
  std::vector<uint32_t> bits;
  for (const RowOp& r : map->rows) {
    if (r.kind != RowOp::Combine) continue;
    dare_row(r);
    for (uint64_t j = 0; j < w; ++j) {
      uint32_t u;
      std::memcpy(&u, &d[j], 4);
      bits.push_back(u & 0x7fffffffu);
    }
  }
  const uint64_t n = bits.size();
  std::vector<uint32_t> sorted = bits;
  std::sort(sorted.begin(), sorted.end());
  const uint64_t rank = uint64_t(std::ceil(0.3 * double(n)));
  EXPECT_EQ(st.kept_threshold_rank, rank);
  EXPECT_EQ(st.keep_bits, sorted[n - rank]);
  EXPECT_NE(st.factor, 1.0f);
  set_vector_ops_force_window_miss(true);
  for (auto [chunk, threads] : {std::pair<uint64_t, int>{4096, 1}, {5000, 3}, {n, 2}}) {
    const OpsState miss = prepare_vector_ops(task, chunk, threads);
    EXPECT_FALSE(miss.terms[0].window_hit);
    EXPECT_EQ(miss.terms[0].keep_bits, st.keep_bits) << chunk;
    EXPECT_EQ(std::memcmp(&miss.terms[0].l2sq_kept, &st.l2sq_kept, sizeof(double)), 0) << chunk;
    EXPECT_EQ(std::memcmp(&miss.terms[0].target_l2sq, &st.target_l2sq, sizeof(double)), 0) << chunk;
    EXPECT_EQ(miss.terms[0].factor, st.factor) << chunk;
  }
  set_vector_ops_force_window_miss(false);
  for (auto [chunk, threads] : {std::pair<uint64_t, int>{12345, 2}, {n, 3}}) {
    const OpsState again = prepare_vector_ops(task, chunk, threads);
    EXPECT_EQ(again.terms[0].keep_bits, st.keep_bits);
    EXPECT_EQ(std::memcmp(&again.terms[0].l1_all, &st.l1_all, sizeof(double)), 0);
    EXPECT_EQ(again.terms[0].factor, st.factor);
  }
  // A combined row: target + 0.75 * factor * (pruned, DARE'd delta), in fp32.
  std::vector<uint16_t> got(w), want(w);
  std::vector<float> t(w), acc(w);
  size_t checked = 0;
  for (const RowOp& r : map->rows) {
    if (r.kind != RowOp::Combine || r.target_row % 37 != 1) continue;
    combine_ops_row(task, hit, r, got.data());
    dare_row(r);
    target.at(name).read_f32(uint64_t(r.target_row) * w, w, t.data());
    for (uint64_t j = 0; j < w; ++j) {
      float v = d[j];
      uint32_t u;
      std::memcpy(&u, &v, 4);
      if ((u & 0x7fffffffu) < st.keep_bits) v = 0.0f;
      v = v * st.factor;
      v = 0.75f * v;
      acc[j] = t[j] + v;
    }
    convert_from_f32(acc.data(), w, DType::BF16, reinterpret_cast<uint8_t*>(want.data()));
    EXPECT_EQ(std::memcmp(got.data(), want.data(), w * 2), 0) << "row " << r.target_row;
    ++checked;
  }
  EXPECT_GT(checked, 5u);
}

}  // namespace
}  // namespace chatvec

// The trainer's backward pass: finite differences in double precision for
// every parameter tensor, and one full optimizer step compared with PyTorch
// (autograd + torch.optim.AdamW + clip_grad_norm_) on a tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "core/json_util.h"
#include "test_support.h"
#include "train/trainer.h"
#include "train/transformer.h"

using namespace chatvec;
using namespace chatvec::train;
using chatvec::testing::TempDir;

namespace {

ModelConfig tiny_config(bool tied, int64_t kv_heads) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = kv_heads;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  return c;
}

template <class R>
void random_init(Transformer<R>& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (const auto& s : m.slots()) {
    const bool norm = s.shape.size() == 1;
    for (size_t i = 0; i < s.size; ++i)
      m.params[s.offset + i] = R(norm ? 1.0 + 0.2 * nd(rng) : 0.3 * nd(rng));
  }
}

struct Batch {
  std::vector<std::vector<int32_t>> tokens, targets;
  std::vector<std::vector<float>> weights;
};

Batch random_batch(int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  const int64_t lens[3] = {9, 5, 12};
  for (int64_t len : lens) {
    std::vector<int32_t> t, y;
    std::vector<float> w;
    for (int64_t i = 0; i < len; ++i) {
      t.push_back(int32_t(rng() % uint64_t(V)));
      y.push_back(int32_t(rng() % uint64_t(V)));
      w.push_back((rng() % 4 == 0) ? 0.0f : 1.0f);  // some positions unscored, as in chat SFT
    }
    w[size_t(len - 1)] = 1.0f;
    b.tokens.push_back(t);
    b.targets.push_back(y);
    b.weights.push_back(w);
  }
  return b;
}

template <class R>
double batch_loss(const Transformer<R>& m, const Batch& b, double scale, std::vector<R>* grad) {
  Workspace<R> ws;
  double loss = 0;
  for (size_t i = 0; i < b.tokens.size(); ++i)
    loss += forward_backward(m, b.tokens[i].data(), b.targets[i].data(), b.weights[i].data(),
                             int64_t(b.tokens[i].size()), scale, ws, grad ? grad->data() : nullptr);
  return loss * scale;
}

void finite_difference_check(bool tied, int64_t kv_heads) {
  Transformer<double> m(tiny_config(tied, kv_heads));
  random_init(m, 7);
  const Batch b = random_batch(m.config().vocab_size, 11);
  double wsum = 0;
  for (const auto& w : b.weights)
    for (float x : w) wsum += x;
  const double scale = 1.0 / wsum;
  std::vector<double> g(m.size(), 0.0);
  batch_loss(m, b, scale, &g);
  std::mt19937_64 rng(3);
  double worst = 0;
  for (const auto& s : m.slots()) {
    double slot_worst = 0;
    const size_t probes = std::min<size_t>(s.size, 24);
    for (size_t k = 0; k < probes; ++k) {
      const size_t i = s.offset + (s.size <= 24 ? k : size_t(rng() % s.size));
      const double h = 1e-5, keep = m.params[i];
      m.params[i] = keep + h;
      const double lp = batch_loss<double>(m, b, scale, nullptr);
      m.params[i] = keep - h;
      const double lm = batch_loss<double>(m, b, scale, nullptr);
      m.params[i] = keep;
      const double num = (lp - lm) / (2 * h);
      const double err = std::fabs(num - g[i]) / std::max(1e-4, std::fabs(num) + std::fabs(g[i]));
      slot_worst = std::max(slot_worst, err);
    }
    EXPECT_LT(slot_worst, 1e-6) << s.name;
    worst = std::max(worst, slot_worst);
  }
  std::printf("finite differences (tied %d, kv heads %lld): max relative error %.3g over %zu tensors\n", tied,
              (long long)kv_heads, worst, m.slots().size());
}

}  // namespace

TEST(TrainGradient, FiniteDifferencesTiedGqa) { finite_difference_check(true, 2); }
TEST(TrainGradient, FiniteDifferencesUntiedMha) { finite_difference_check(false, 4); }

TEST(TrainGradient, FloatMatchesDouble) {
  Transformer<double> md(tiny_config(true, 2));
  random_init(md, 5);
  const Transformer<float> mf = convert_transformer<float>(md);
  const Batch b = random_batch(md.config().vocab_size, 13);
  std::vector<double> gd(md.size(), 0.0);
  std::vector<float> gf(md.size(), 0.0f);
  const double ld = batch_loss(md, b, 0.05, &gd);
  const double lf = batch_loss(mf, b, 0.05, &gf);
  EXPECT_NEAR(ld, lf, 1e-5 * std::fabs(ld));
  double gmax = 0, emax = 0;
  for (size_t i = 0; i < gd.size(); ++i) {
    gmax = std::max(gmax, std::fabs(gd[i]));
    emax = std::max(emax, std::fabs(gd[i] - double(gf[i])));
  }
  EXPECT_LT(emax, 1e-4 * gmax);
}

TEST(TrainGradient, ScheduleAndClipping) {
  EXPECT_NEAR(lr_at(0, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(9, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(10, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(99, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  std::vector<float> g{3.0f, 4.0f};
  EXPECT_NEAR(clip_grad_norm(g.data(), 2, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-5);
}

// One step (forward, backward, clip, AdamW with weight decay) against PyTorch.
TEST(TrainGradient, OneStepMatchesPyTorch) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  if (::chatvec::testing::run_command("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    if (::chatvec::testing::in_ci()) FAIL() << "python3-torch required in CI";
    GTEST_SKIP() << "python3-torch not installed";
  }
  for (bool tied : {true, false}) {
    TempDir tmp;
    Transformer<double> md(tiny_config(tied, 2));
    random_init(md, tied ? 21 : 22);
    Transformer<float> m = convert_transformer<float>(md);
    const Batch b = random_batch(m.config().vocab_size, 17);
    // Inputs for the reference.
    {
      std::ofstream pf(tmp / "params.bin", std::ios::binary);
      pf.write(reinterpret_cast<const char*>(m.params.data()), std::streamsize(m.size() * sizeof(float)));
    }
    Json slots = Json::array();
    for (const auto& s : m.slots()) slots.push_back({{"name", s.name}, {"shape", s.shape}, {"offset", s.offset}, {"decay", s.decay}});
    const ModelConfig& c = m.config();
    const double lr = 3e-3, wd = 0.1, clip = 0.5;
    Json meta = {{"slots", slots},      {"vocab", c.vocab_size},       {"hidden", c.hidden_size},
                 {"inter", c.intermediate_size}, {"layers", c.num_layers}, {"heads", c.num_heads},
                 {"kv_heads", c.num_kv_heads},   {"head_dim", c.head_dim}, {"eps", c.rms_norm_eps},
                 {"theta", c.rope_theta},  {"tied", tied}, {"tokens", b.tokens}, {"targets", b.targets},
                 {"weights", b.weights},   {"lr", lr},     {"weight_decay", wd}, {"clip", clip},
                 {"betas", {0.9, 0.95}}};
    std::ofstream(tmp / "meta.json") << meta.dump();
    // Our step.
    double wsum = 0;
    for (const auto& w : b.weights)
      for (float x : w) wsum += x;
    std::vector<float> g(m.size(), 0.0f);
    const double loss = batch_loss(m, b, 1.0 / wsum, &g);
    const std::vector<float> grad_before_clip = g;
    clip_grad_norm(g.data(), g.size(), clip);
    std::vector<uint8_t> mask(m.size(), 0);
    for (const auto& s : m.slots())
      if (s.decay) std::fill(mask.begin() + int64_t(s.offset), mask.begin() + int64_t(s.offset + s.size), 1);
    AdamW opt(m.size(), mask);
    opt.step(m.params.data(), g.data(), lr, {lr, 0.9, 0.95, 1e-8, wd});

    const auto r = ::chatvec::testing::run_command(
        "/usr/bin/python3 " + (::chatvec::testing::source_dir() / "tests/train/reference_step.py").string() + " " +
        tmp.path().string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json ref = read_json_file((tmp / "ref.json").string());
    EXPECT_NEAR(loss, ref["loss"].get<double>(), 1e-5 * std::fabs(loss));
    std::vector<float> rg(m.size()), rp(m.size());
    {
      std::ifstream f(tmp / "ref_grad.bin", std::ios::binary);
      f.read(reinterpret_cast<char*>(rg.data()), std::streamsize(rg.size() * sizeof(float)));
      std::ifstream p(tmp / "ref_params.bin", std::ios::binary);
      p.read(reinterpret_cast<char*>(rp.data()), std::streamsize(rp.size() * sizeof(float)));
    }
    double gmax = 0, gerr = 0, perr = 0;
    for (size_t i = 0; i < rg.size(); ++i) {
      gmax = std::max(gmax, std::fabs(double(rg[i])));
      gerr = std::max(gerr, std::fabs(double(rg[i]) - double(grad_before_clip[i])));
      perr = std::max(perr, std::fabs(double(rp[i]) - double(m.params[i])));
    }
    std::printf("vs PyTorch (tied %d): loss %.7f vs %.7f, max |grad diff| %.3g (max |grad| %.3g), max |param diff| "
                "after one AdamW step %.3g (lr %g)\n",
                tied, loss, ref["loss"].get<double>(), gerr, gmax, perr, lr);
    EXPECT_LT(gerr, 1e-5 * gmax);
    EXPECT_LT(perr, 1e-3 * lr);
  }
}

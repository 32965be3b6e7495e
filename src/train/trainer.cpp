#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/core.h>
#include <fstream>
#include <numeric>
#include <omp.h>
#include <random>

#include "chat_template/chat_template.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/json_util.h"
#include "core/staging.h"
#include "tokenizer/tokenizer.h"
#include "formats/model_dir.h"
#include "train/model_io.h"

namespace chatvec::train {

namespace fs = std::filesystem;

AdamW::AdamW(size_t n, std::vector<uint8_t> decay_mask) : m_(n, 0.0f), v_(n, 0.0f), decay_(std::move(decay_mask)) {}

void AdamW::step(float* p, const float* g, double lr, const AdamWOptions& o) {
  ++t_;
  const double bc1 = 1.0 - std::pow(o.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(o.beta2, double(t_));
  const float step_size = float(lr / bc1);
  const float sqrt_bc2 = float(std::sqrt(bc2));
  const float b1 = float(o.beta1), b2 = float(o.beta2), eps = float(o.eps);
  const float decay = float(1.0 - lr * o.weight_decay);
  const size_t n = m_.size();
  for (size_t i = 0; i < n; ++i) {
    if (decay_[i] && o.weight_decay != 0.0) p[i] *= decay;
    m_[i] = m_[i] * b1 + g[i] * (1.0f - b1);
    v_[i] = v_[i] * b2 + g[i] * g[i] * (1.0f - b2);
    const float denom = std::sqrt(v_[i]) / sqrt_bc2 + eps;
    p[i] -= step_size * (m_[i] / denom);
  }
}

double clip_grad_norm(float* g, size_t n, double max_norm) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += double(g[i]) * double(g[i]);
  const double norm = std::sqrt(ss);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (size_t i = 0; i < n; ++i) g[i] = float(double(g[i]) * coef);
  }
  return norm;
}

double lr_at(int64_t step, int64_t steps, int64_t warmup, double lr, double min_ratio) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const double span = double(std::max<int64_t>(1, steps - 1 - warmup));
  const double progress = std::min(1.0, double(step - warmup) / span);
  const double lo = lr * min_ratio;
  return lo + 0.5 * (lr - lo) * (1.0 + std::cos(M_PI * progress));
}

namespace {

size_t common_prefix(const std::vector<int>& a, const std::vector<int>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// A conversation rendered through the chat template: the whole text encoded
// as `chatvec chat` does (the template writes BOS itself), with loss weight 1
// on the tokens of each assistant turn (from where the generation prompt
// ends to where the turn's rendering ends, end-of-turn token included).
Example chat_example(const Tokenizer& tok, const ChatTemplate& tpl, const Json& messages, int64_t max_len) {
  const std::vector<int> full = tok.encode(render_chat(tpl, messages, false), false);
  std::vector<float> w(full.size(), 0.0f);
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].value("role", "") != "assistant") continue;
    Json before = Json::array(), upto = Json::array();
    for (size_t j = 0; j < i; ++j) before.push_back(messages[j]);
    upto = before;
    upto.push_back(messages[i]);
    const size_t start = common_prefix(tok.encode(render_chat(tpl, before, true), false), full);
    const size_t end = common_prefix(tok.encode(render_chat(tpl, upto, false), false), full);
    for (size_t k = std::max<size_t>(start, 1); k < end; ++k) w[k] = 1.0f;
  }
  Example e;
  const size_t n = std::min(full.size(), size_t(max_len + 1));
  for (size_t t = 0; t + 1 < n; ++t) {
    e.tokens.push_back(full[t]);
    e.targets.push_back(full[t + 1]);
    e.weights.push_back(w[t + 1]);
  }
  return e;
}

std::vector<uint8_t> decay_mask(const Transformer<float>& m) {
  std::vector<uint8_t> mask(m.size(), 0);
  for (const auto& s : m.slots())
    if (s.decay) std::fill(mask.begin() + int64_t(s.offset), mask.begin() + int64_t(s.offset + s.size), 1);
  return mask;
}

void save_to(const Transformer<float>& m, const std::string& files_dir, const std::string& out, bool force) {
  StagedOutput staged(out, StagedOutput::Kind::Directory, force);
  copy_side_files(files_dir, staged.path());
  write_weights(m, staged.path());
  staged.commit();
}

// Installs the chat template, special tokens and EOS in the prepared
// directory `dir`, growing the embedding (rows: mean of existing rows).
void prepare_chat(Transformer<float>& m, const std::string& dir, const TrainOptions& o,
                  const std::function<void(const std::string&)>& say) {
  const std::string tc_path = dir + "/tokenizer_config.json";
  Json tc = path_exists(tc_path) ? read_json_file(tc_path) : Json::object();
  if (!o.add_special.empty()) {
    const int64_t V0 = m.config().vocab_size, D = m.config().hidden_size;
    // SentencePiece never matches CONTROL pieces in text, so with a
    // tokenizer.model the token is added as a user-defined piece (matched in
    // text, as the rendered chat template needs); tokenizer.json: special.
    const bool sp_model = Vocabulary::load(dir).format() == TokenizerFormat::SentencePieceModel;
    std::vector<int> ids = append_tokens_in_place(dir, o.add_special, !sp_model);
    const int64_t V1 = std::max<int64_t>(V0, *std::max_element(ids.begin(), ids.end()) + 1);
    std::vector<float> mean(size_t(D), 0.0f);
    for (int64_t v = 0; v < V0; ++v)
      for (int64_t d = 0; d < D; ++d) mean[size_t(d)] += m.embed()[v * D + d] / float(V0);
    m.resize_vocab(V1);
    for (int id : ids)
      if (id >= V0) {
        std::copy(mean.begin(), mean.end(), m.embed() + int64_t(id) * D);
        if (m.lm_head_offset() != m.embed_offset())
          std::copy(mean.begin(), mean.end(), m.params.data() + m.lm_head_offset() + size_t(id) * size_t(D));
      }
    if (say) say(fmt::format("added {} special token(s); vocabulary {} -> {}", ids.size(), V0, V1));
    tc = path_exists(tc_path) ? read_json_file(tc_path) : Json::object();
  }
  if (!o.chat_template.empty()) tc["chat_template"] = read_file(o.chat_template);
  if (!o.eos_token.empty()) {
    const Vocabulary voc = Vocabulary::load(dir);
    const int id = voc.id(o.eos_token);
    if (id < 0) throw InputError("--eos-token \"" + o.eos_token + "\" is not in the vocabulary (add it with --add-special)");
    tc["eos_token"] = o.eos_token;
    const std::string gc_path = dir + "/generation_config.json";
    Json gc = path_exists(gc_path) ? read_json_file(gc_path) : Json::object();
    std::vector<int> eos{id};
    Json cfg = read_json_file(dir + "/config.json");
    if (cfg.contains("eos_token_id") && cfg["eos_token_id"].is_number_integer() && cfg["eos_token_id"].get<int>() != id)
      eos.push_back(cfg["eos_token_id"].get<int>());
    gc["eos_token_id"] = eos;
    if (cfg.contains("bos_token_id")) gc["bos_token_id"] = cfg["bos_token_id"];
    rewrite_json_file(gc_path, gc);
  }
  if (!o.chat_template.empty() || !o.eos_token.empty()) rewrite_json_file(tc_path, tc);
}

void extend_vocabulary(Transformer<float>& m, const std::string& dir, const std::vector<std::string>& lines, int count,
                       const std::function<void(const std::string&)>& say) {
  const std::vector<LearnedToken> learned = learn_vocabulary_extension(dir, lines, count);
  std::vector<std::string> contents;
  for (const auto& t : learned) contents.push_back(t.content);
  const int64_t V0 = m.config().vocab_size, D = m.config().hidden_size;
  const std::vector<int> ids = append_tokens_in_place(dir, contents, false);
  int64_t V1 = V0;
  for (int id : ids) V1 = std::max<int64_t>(V1, id + 1);
  std::vector<float> old(m.embed(), m.embed() + V0 * D);
  std::vector<float> old_head;
  if (m.lm_head_offset() != m.embed_offset())
    old_head.assign(m.params.begin() + int64_t(m.lm_head_offset()), m.params.begin() + int64_t(m.lm_head_offset() + size_t(V0 * D)));
  m.resize_vocab(V1);
  for (size_t k = 0; k < learned.size(); ++k) {
    const int id = ids[k];
    if (id < V0) continue;
    // The mean of the rows of the pieces the new token replaces.
    for (int64_t d = 0; d < D; ++d) {
      double s = 0, sh = 0;
      for (int p : learned[k].pieces) {
        s += old[size_t(p * D + d)];
        if (!old_head.empty()) sh += old_head[size_t(p * D + d)];
      }
      m.embed()[id * D + d] = float(s / double(learned[k].pieces.size()));
      if (!old_head.empty())
        m.params[m.lm_head_offset() + size_t(id * D + d)] = float(sh / double(learned[k].pieces.size()));
    }
  }
  if (say) {
    std::string sample;
    for (size_t k = 0; k < std::min<size_t>(12, learned.size()); ++k) sample += " " + learned[k].content;
    say(fmt::format("extended the vocabulary by {} tokens ({} -> {}):{} ...", learned.size(), V0, V1, sample));
  }
}

}  // namespace

TrainReport run_training(const TrainOptions& o, const std::function<void(const std::string&)>& say) {
  if (o.steps <= 0 || o.batch <= 0 || o.seq_len <= 1) throw InputError("train: --steps, --batch must be > 0, --seq-len > 1");
  if (o.threads > 0) omp_set_num_threads(o.threads);
  std::string mode = o.mode;
  if (mode == "auto") mode = o.data.size() >= 6 && o.data.substr(o.data.size() - 6) == ".jsonl" ? "chat" : "text";
  if (mode != "text" && mode != "chat") throw InputError("train: --mode must be auto, text or chat");

  TrainReport rep;
  Transformer<float> m = load_transformer(o.model_dir);
  rep.vocab_before = m.config().vocab_size;
  StagedOutput staged(o.out, StagedOutput::Kind::Directory, o.force);
  const std::string dir = staged.path();
  copy_side_files(o.model_dir, dir);

  const std::vector<std::string> lines = read_nonempty_lines(o.data, o.max_lines);
  if (lines.empty()) throw InputError(o.data + ": no data");
  prepare_chat(m, dir, o, say);
  if (o.extend_vocab > 0) extend_vocabulary(m, dir, lines, o.extend_vocab, say);
  rep.vocab_after = m.config().vocab_size;
  const Tokenizer tok = Tokenizer::load(dir);
  if (int64_t(tok.vocab().size()) > m.config().vocab_size)
    throw InputError(fmt::format("{}: tokenizer has {} tokens but the model {} rows", o.model_dir, tok.vocab().size(),
                                 m.config().vocab_size));

  // ---- data ------------------------------------------------------------------
  std::vector<int32_t> stream;         // text mode: all lines, each with BOS
  std::vector<Example> examples;       // chat mode
  if (mode == "text") {
    for (const auto& line : lines) {
      const std::vector<int> ids = tok.encode(line, true);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    if (int64_t(stream.size()) < o.seq_len + 1)
      throw InputError(fmt::format("{}: {} tokens, fewer than --seq-len + 1", o.data, stream.size()));
    rep.examples = int64_t(lines.size());
    if (say) say(fmt::format("text: {} lines, {} tokens", lines.size(), stream.size()));
  } else {
    const ChatTemplate tpl = ChatTemplate::from_model_dir(dir);
    for (size_t i = 0; i < lines.size(); ++i) {
      Json j = parse_json_strict(lines[i], fmt::format("{} line {}", o.data, i + 1));
      if (j.is_object()) j = j.value("messages", Json());
      if (!j.is_array()) throw InputError(fmt::format("{} line {}: expected {{\"messages\": [...]}}", o.data, i + 1));
      Example e = chat_example(tok, tpl, j, o.seq_len);
      if (std::any_of(e.weights.begin(), e.weights.end(), [](float w) { return w > 0; })) examples.push_back(std::move(e));
    }
    if (examples.empty()) throw InputError(o.data + ": no conversation with an assistant turn");
    rep.examples = int64_t(examples.size());
    if (say) {
      // Show the first example: ids, with the scored (assistant) ones in [brackets].
      std::string shown;
      const Example& e = examples.front();
      for (size_t t = 0; t < e.tokens.size(); ++t) shown += fmt::format(" {}", e.tokens[t]);
      shown += " |";
      for (size_t t = 0; t < e.targets.size(); ++t)
        if (e.weights[t] > 0) shown += fmt::format(" [{}]", e.targets[t]);
      say(fmt::format("chat: {} conversations; first: tokens{}", examples.size(), shown));
    }
  }

  // ---- training ----------------------------------------------------------------
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + 12345);
  std::vector<size_t> order;
  size_t order_pos = 0;
  auto next_example = [&]() -> size_t {
    if (order_pos >= order.size()) {
      order.resize(examples.size());
      std::iota(order.begin(), order.end(), size_t(0));
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng() % i)]);
      order_pos = 0;
    }
    return order[order_pos++];
  };
  const size_t P = m.size();
  const int64_t B = o.batch;
  std::vector<float> grads(P * size_t(B));
  std::vector<float> total(P);
  AdamW opt(P, decay_mask(m));
  const AdamWOptions aopt{o.lr, o.beta1, o.beta2, 1e-8, o.weight_decay};
  const int nthreads = omp_get_max_threads();
  std::vector<Workspace<float>> ws(static_cast<size_t>(nthreads));
  std::ofstream log(dir + "/train_log.jsonl");
  const auto t0 = std::chrono::steady_clock::now();
  auto tl = t0;
  int64_t tokens_since = 0;
  double loss_acc = 0, w_acc = 0;
  for (int64_t step = 0; step < o.steps; ++step) {
    check_interrupted();
    std::vector<Example> batch(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      if (mode == "text") {
        const size_t start = size_t(rng() % uint64_t(stream.size() - size_t(o.seq_len)));
        Example& e = batch[size_t(b)];
        e.tokens.assign(stream.begin() + int64_t(start), stream.begin() + int64_t(start) + o.seq_len);
        e.targets.assign(stream.begin() + int64_t(start) + 1, stream.begin() + int64_t(start) + o.seq_len + 1);
        e.weights.assign(size_t(o.seq_len), 1.0f);
      } else {
        batch[size_t(b)] = examples[next_example()];
      }
    }
    double wsum = 0;
    int64_t ntok = 0;
    for (const auto& e : batch) {
      for (float w : e.weights) wsum += w;
      ntok += int64_t(e.tokens.size());
    }
    const double scale = wsum > 0 ? 1.0 / wsum : 0.0;
    std::vector<double> losses(size_t(B), 0.0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) {
      float* g = grads.data() + size_t(b) * P;
      std::fill(g, g + P, 0.0f);
      const Example& e = batch[size_t(b)];
      losses[size_t(b)] = forward_backward(m, e.tokens.data(), e.targets.data(), e.weights.data(),
                                           int64_t(e.tokens.size()), scale, ws[size_t(omp_get_thread_num())], g);
    }
    // Sum per-sequence gradients in a fixed order (same result for any
    // number of threads).
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < P; ++i) {
      float s = 0;
      for (int64_t b = 0; b < B; ++b) s += grads[size_t(b) * P + i];
      total[i] = s;
    }
    const double loss = std::accumulate(losses.begin(), losses.end(), 0.0) * scale;
    const double norm = clip_grad_norm(total.data(), P, o.clip);
    const double lr = lr_at(step, o.steps, o.warmup, o.lr, o.min_lr_ratio);
    opt.step(m.params.data(), total.data(), lr, aopt);
    if (!std::isfinite(loss)) throw Error(fmt::format("train: loss is not finite at step {}", step + 1), 1);
    if (step == 0) rep.first_loss = loss;
    rep.last_loss = loss;
    rep.tokens += ntok;
    rep.scored_tokens += int64_t(wsum);
    tokens_since += ntok;
    loss_acc += loss * wsum;
    w_acc += wsum;
    const auto now = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(now - t0).count();
    log << (Json{{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens", rep.tokens},
                          {"seconds", secs}}).dump()
        << "\n";
    if (say && ((step + 1) % std::max<int64_t>(1, o.log_every) == 0 || step + 1 == o.steps)) {
      const double dt = std::chrono::duration<double>(now - tl).count();
      say(fmt::format("step {:>5}/{}  loss {:.4f}  lr {:.2e}  grad-norm {:.3f}  {:.0f} tokens/s", step + 1, o.steps,
                      w_acc > 0 ? loss_acc / w_acc : 0.0, lr, norm, dt > 0 ? double(tokens_since) / dt : 0.0));
      tl = now;
      tokens_since = 0;
      loss_acc = w_acc = 0;
    }
    if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < o.steps) {
      log.flush();
      save_to(m, dir, fmt::format("{}-step{}", o.out, step + 1), true);
    }
  }
  rep.steps = o.steps;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log.close();
  write_weights(m, dir);
  staged.commit();
  return rep;
}

}  // namespace chatvec::train

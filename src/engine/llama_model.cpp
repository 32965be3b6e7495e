#include "engine/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/core.h>
#include <stdexcept>

#include "core/error.h"
#include "formats/architecture.h"
#include "formats/safetensors/safetensors_reader.h"

namespace chatvec {

namespace {
// The stored types the mat-vec kernels read.
void check_engine_dtype(const CheckpointTensor& t) {
  const DType d = t.dtype();
  if (d != DType::F32 && d != DType::BF16 && d != DType::F16)
    throw InputError(fmt::format("{}: tensor \"{}\" has type {}; the engine runs F32, BF16 and F16 weights", t.path(),
                                 t.name(), dtype_name(d)));
}
}  // namespace

std::unique_ptr<LlamaModel> LlamaModel::open(const std::string& dir, const EngineOptions& opts) {
  Checkpoint ckpt = Checkpoint::open(dir);
  if (!ckpt.has_config()) throw InputError(dir + ": no config.json");
  ModelConfig config = parse_model_config(ckpt.config(), ckpt.dir() + "/config.json");
  std::unique_ptr<LlamaModel> m(new LlamaModel(std::move(ckpt), std::move(config)));
  const ModelConfig& c = m->config_;
  if (opts.context_length < 0) throw InputError("context length must be positive");
  m->ctx_ = opts.context_length > 0 ? opts.context_length : std::min<int64_t>(c.max_position_embeddings, 4096);

  const int64_t H = c.hidden_size, I = c.intermediate_size;
  m->embed_ = m->matrix(hf_weight_name(WeightRole::TokenEmbedding), c.vocab_size, H);
  m->weight_dtype_ = m->embed_.dtype;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto name = [l](WeightRole r) { return hf_weight_name(r, l); };
    Layer L;
    L.attn_norm = m->vector(name(WeightRole::AttnNorm), H);
    L.wq = m->matrix(name(WeightRole::Q), c.q_dim(), H);
    L.wk = m->matrix(name(WeightRole::K), c.kv_dim(), H);
    L.wv = m->matrix(name(WeightRole::V), c.kv_dim(), H);
    L.wo = m->matrix(name(WeightRole::O), H, c.q_dim());
    if (c.qkv_bias) {
      L.bq = m->vector(name(WeightRole::QBias), c.q_dim());
      L.bk = m->vector(name(WeightRole::KBias), c.kv_dim());
      L.bv = m->vector(name(WeightRole::VBias), c.kv_dim());
    }
    if (c.o_bias) L.bo = m->vector(name(WeightRole::OBias), H);
    L.ffn_norm = m->vector(name(WeightRole::FfnNorm), H);
    L.gate = m->matrix(name(WeightRole::Gate), I, H);
    L.up = m->matrix(name(WeightRole::Up), I, H);
    L.down = m->matrix(name(WeightRole::Down), H, I);
    m->layers_.push_back(std::move(L));
  }
  m->final_norm_ = m->vector(hf_weight_name(WeightRole::FinalNorm), H);
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    const std::string head = hf_weight_name(WeightRole::LmHead);
    if (!m->ckpt_.find(head))
      throw InputError(m->ckpt_.path() + ": no tensor \"" + head + "\" and config.json has tie_word_embeddings false");
    m->lm_head_ = m->matrix(head, c.vocab_size, H);
  }

  // Rotary tables: angles in double, stored as fp32 cos/sin.
  const std::vector<double> inv = rope_inv_freq(c);
  const int64_t half = c.head_dim / 2;
  m->cos_.resize(size_t(m->ctx_ * half));
  m->sin_.resize(size_t(m->ctx_ * half));
  for (int64_t p = 0; p < m->ctx_; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(p) * inv[i];
      m->cos_[p * half + i] = float(std::cos(a));
      m->sin_[p * half + i] = float(std::sin(a));
    }

  const size_t cache = size_t(c.num_layers) * size_t(m->ctx_) * size_t(c.kv_dim());
  m->key_cache_.reset(new float[cache]);
  m->value_cache_.reset(new float[cache]);
  const size_t B = kMaxBatch;
  m->x_.resize(B * H);
  m->xb_.resize(B * std::max(H, c.q_dim()));
  m->q_.resize(B * c.q_dim());
  m->k_.resize(B * c.kv_dim());
  m->v_.resize(B * c.kv_dim());
  m->att_out_.resize(B * c.q_dim());
  m->scores_.resize(B * size_t(c.num_heads) * size_t(m->ctx_));
  m->hb_.resize(B * I);
  m->hb2_.resize(B * I);
  m->logits_.resize(c.vocab_size);  // grows to [B, vocab] on first all_logits call
  return m;
}

LlamaModel::LlamaModel(Checkpoint ckpt, ModelConfig config) : ckpt_(std::move(ckpt)), config_(std::move(config)) {}

WeightView LlamaModel::matrix(const std::string& name, int64_t rows, int64_t cols) {
  const CheckpointTensor* t = ckpt_.find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", ckpt_.path(), name));
  if (t->shape() != std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, config.json implies [{}, {}]", t->path(), name,
                                 shape_string(t->shape()), rows, cols));
  check_engine_dtype(*t);
  const uint64_t esize = t->element_size();
  const uint8_t* data = t->data();
  if (reinterpret_cast<uintptr_t>(data) % esize != 0) {
    // Misaligned in the file (legal in safetensors): keep an aligned copy,
    // since the mat-vec kernels read whole vectors of elements.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[t->nbytes()]);
    std::memcpy(copy.get(), data, t->nbytes());
    data = copy.get();
    owned_.push_back(std::move(copy));
  }
  return WeightView{t->dtype(), data, rows, cols};
}

std::vector<float> LlamaModel::vector(const std::string& name, int64_t n) {
  const CheckpointTensor* t = ckpt_.find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", ckpt_.path(), name));
  if (t->shape() != std::vector<uint64_t>{uint64_t(n)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, config.json implies [{}]", t->path(), name,
                                 shape_string(t->shape()), n));
  check_engine_dtype(*t);
  std::vector<float> out(n);
  convert_to_f32(t->dtype(), t->data(), size_t(n), out.data());
  return out;
}

void LlamaModel::attention(int64_t l, int64_t pos, int64_t n) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, kv_dim = c.kv_dim(), qd = c.q_dim(), group = c.num_heads / c.num_kv_heads;
  const float* kc = key_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const float* vc = value_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t pairs = n * c.num_heads;
  const bool parallel = (pos + n) * pairs * hd >= (int64_t(1) << 16);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bh = 0; bh < pairs; ++bh) {
    const int64_t b = bh / c.num_heads, h = bh % c.num_heads, p = pos + b;
    const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, p - c.sliding_window + 1) : 0;
    const float* q = q_.data() + b * qd + h * hd;
    const int64_t kvh = h / group;
    float* s = scores_.data() + bh * ctx_;
    const int64_t len = p + 1 - first;
    for (int64_t t = 0; t < len; ++t) {
      const float* k = kc + (first + t) * kv_dim + kvh * hd;
      float dot = 0;
      for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
      s[t] = dot * scale;
    }
    softmax_inplace(s, len);
    float* o = att_out_.data() + b * qd + h * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t t = 0; t < len; ++t) {
      const float* v = vc + (first + t) * kv_dim + kvh * hd;
      const float a = s[t];
      for (int64_t i = 0; i < hd; ++i) o[i] += a * v[i];
    }
  }
}

const float* LlamaModel::forward_batch(const int64_t* tokens, int64_t n, int64_t pos, bool all_logits) {
  const ModelConfig& c = config_;
  if (n <= 0) throw std::invalid_argument("forward_batch: no tokens");
  if (all_logits && n > kMaxBatch) throw std::invalid_argument("forward_batch: all_logits needs n <= kMaxBatch");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw InputError(fmt::format("token id {} is outside the vocabulary (size {})", tokens[i], c.vocab_size));
  if (pos < 0 || pos + n > ctx_)
    throw InputError(fmt::format("position {} is beyond the context length {}", std::max(pos, pos + n - 1), ctx_));
  for (int64_t done = 0; done < n; done += kMaxBatch) {
    const int64_t m = std::min(kMaxBatch, n - done);
    run_batch(tokens + done, m, pos + done, done + m == n, all_logits);
  }
  return logits_.data();
}

void LlamaModel::run_batch(const int64_t* tokens, int64_t n, int64_t pos, bool want_logits, bool all_logits) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, hd = c.head_dim, half = hd / 2, kv_dim = c.kv_dim(), qd = c.q_dim();
  const int64_t I = c.intermediate_size, xbs = std::max(H, qd);
  for (int64_t b = 0; b < n; ++b) weight_row_to_f32(embed_, tokens[b], x_.data() + b * H);
  auto rope = [&](float* v, int64_t heads, int64_t p) {
    const float* cs = cos_.data() + p * half;
    const float* sn = sin_.data() + p * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* a = v + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = a[i], x2 = a[i + half];
        a[i] = x1 * cs[i] - x2 * sn[i];
        a[i + half] = x2 * cs[i] + x1 * sn[i];
      }
    }
  };
  auto bias = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& L = layers_[l];
    for (int64_t b = 0; b < n; ++b)
      rmsnorm(xb_.data() + b * xbs, x_.data() + b * H, L.attn_norm.data(), H, c.rms_norm_eps);
    const MatmulTask qkv[3] = {{&L.wq, q_.data(), qd, bias(L.bq)},
                               {&L.wk, k_.data(), kv_dim, bias(L.bk)},
                               {&L.wv, v_.data(), kv_dim, bias(L.bv)}};
    matmul_many(qkv, 3, xb_.data(), n, xbs);
    for (int64_t b = 0; b < n; ++b) {
      rope(q_.data() + b * qd, c.num_heads, pos + b);
      rope(k_.data() + b * kv_dim, c.num_kv_heads, pos + b);
      const size_t at = (size_t(l) * size_t(ctx_) + size_t(pos + b)) * size_t(kv_dim);
      std::memcpy(key_cache_.get() + at, k_.data() + b * kv_dim, size_t(kv_dim) * 4);
      std::memcpy(value_cache_.get() + at, v_.data() + b * kv_dim, size_t(kv_dim) * 4);
    }
    attention(l, pos, n);
    matmul(L.wo, att_out_.data(), n, qd, xb_.data(), xbs, bias(L.bo));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < H; ++i) x_[b * H + i] += xb_[b * xbs + i];

    for (int64_t b = 0; b < n; ++b)
      rmsnorm(xb_.data() + b * xbs, x_.data() + b * H, L.ffn_norm.data(), H, c.rms_norm_eps);
    const MatmulTask gate_up[2] = {{&L.gate, hb_.data(), I}, {&L.up, hb2_.data(), I}};
    matmul_many(gate_up, 2, xb_.data(), n, xbs);
    for (int64_t i = 0; i < n * I; ++i) {
      const float g = hb_[i];
      hb_[i] = g / (1.0f + std::exp(-g)) * hb2_[i];
    }
    matmul(L.down, hb_.data(), n, I, xb_.data(), xbs);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < H; ++i) x_[b * H + i] += xb_[b * xbs + i];
  }
  if (!want_logits) return;
  const int64_t first = all_logits ? 0 : n - 1, count = n - first;
  for (int64_t b = first; b < n; ++b)
    rmsnorm(x_.data() + b * H, x_.data() + b * H, final_norm_.data(), H, c.rms_norm_eps);
  if (logits_.size() < size_t(count * c.vocab_size)) logits_.resize(size_t(count * c.vocab_size));
  matmul(lm_head_, x_.data() + first * H, count, H, logits_.data(), c.vocab_size);
}

}  // namespace chatvec

#include "engine/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/core.h>
#include <stdexcept>

#include "core/error.h"
#include "engine/thread_pool.h"
#include "formats/architecture.h"
#include "formats/safetensors/safetensors_reader.h"

namespace chatvec {

namespace {
// The stored types the kernels read.
void check_engine_dtype(const CheckpointTensor& t) {
  const DType d = t.dtype();
  if (d != DType::F32 && d != DType::BF16 && d != DType::F16)
    throw InputError(fmt::format("{}: tensor \"{}\" has type {}; the engine runs F32, BF16 and F16 weights", t.path(),
                                 t.name(), dtype_name(d)));
}

class CheckpointSource : public WeightSource {
 public:
  explicit CheckpointSource(Checkpoint c) : ckpt_(std::move(c)) {
    // Huge pages and every page mapped before any weight is read (see
    // MappedFile::populate_huge): decoding streams all weights per token.
    std::vector<const MappedFile*> maps;
    for (const std::string& n : ckpt_.names()) {
      const MappedFile* m = &ckpt_.find(n)->map();
      if (std::find(maps.begin(), maps.end(), m) == maps.end()) maps.push_back(m);
    }
    for (const MappedFile* m : maps) m->populate_huge();
  }
  const std::string& path() const override { return ckpt_.path(); }
  std::optional<EngineTensor> find(const std::string& name) override {
    const CheckpointTensor* t = ckpt_.find(name);
    if (!t) return std::nullopt;
    check_engine_dtype(*t);
    return EngineTensor{name, t->path(), t->dtype(), false, t->shape(), t->data()};
  }
  const Checkpoint& checkpoint() const { return ckpt_; }

 private:
  Checkpoint ckpt_;
};
}  // namespace

std::unique_ptr<LlamaModel> LlamaModel::open(const std::string& dir, const EngineOptions& opts) {
  Checkpoint ckpt = Checkpoint::open(dir);
  if (!ckpt.has_config()) throw InputError(dir + ": no config.json");
  ModelConfig config = parse_model_config(ckpt.config(), ckpt.dir() + "/config.json");
  auto src = std::make_unique<CheckpointSource>(std::move(ckpt));
  const Checkpoint* c = &src->checkpoint();
  auto m = open(std::move(config), std::move(src), opts);
  m->ckpt_ = c;
  return m;
}

std::unique_ptr<LlamaModel> LlamaModel::open(ModelConfig config, std::unique_ptr<WeightSource> weights,
                                             const EngineOptions& opts) {
  std::unique_ptr<LlamaModel> m(new LlamaModel(std::move(weights), std::move(config)));
  const ModelConfig& c = m->config_;
  if (opts.context_length < 0) throw InputError("context length must be positive");
  m->ctx_ = opts.context_length > 0 ? opts.context_length : std::min<int64_t>(c.max_position_embeddings, 4096);

  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const NormLayout layout = norm_layout_of(c.architecture);
  m->embed_ = m->matrix(hf_weight_name(WeightRole::TokenEmbedding), c.vocab_size, H);
  m->weight_dtype_ = m->embed_.q8_0 ? DType::U8 : m->embed_.dtype;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto name = [l, layout](WeightRole r) { return hf_weight_name(r, l, layout); };
    Layer L;
    L.attn_norm = m->norm_weight(name(WeightRole::AttnNorm), H);
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
    L.ffn_norm = m->norm_weight(name(WeightRole::FfnNorm), H);
    L.gate = m->matrix(name(WeightRole::Gate), I, H);
    L.up = m->matrix(name(WeightRole::Up), I, H);
    L.down = m->matrix(name(WeightRole::Down), H, I);
    if (c.qk_norm) {
      L.q_norm = m->norm_weight(name(WeightRole::QNorm), c.head_dim);
      L.k_norm = m->norm_weight(name(WeightRole::KNorm), c.head_dim);
    }
    if (c.sandwich_norms) {
      L.post_attn_norm = m->norm_weight(name(WeightRole::AttnPostNorm), H);
      L.post_ffn_norm = m->norm_weight(name(WeightRole::FfnPostNorm), H);
    }
    L.window = c.is_sliding(l) ? c.sliding_window : 0;
    m->layers_.push_back(std::move(L));
  }
  m->final_norm_ = m->norm_weight(hf_weight_name(WeightRole::FinalNorm), H);
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    const std::string head = hf_weight_name(WeightRole::LmHead);
    if (!m->source_->find(head))
      throw InputError(m->source_->path() + ": no tensor \"" + head + "\" and config.json has tie_word_embeddings false");
    m->lm_head_ = m->matrix(head, c.vocab_size, H);
  }

  // Rotary tables: angles in double, stored as fp32 cos/sin; Gemma 3's
  // sliding layers have their own.
  const int64_t half = c.head_dim / 2;
  auto tables = [&](const RopeConfig& rope, std::vector<float>& cs, std::vector<float>& sn) {
    const std::vector<double> inv = rope_inv_freq(rope, c.head_dim);
    cs.resize(size_t(m->ctx_ * half));
    sn.resize(size_t(m->ctx_ * half));
    for (int64_t p = 0; p < m->ctx_; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(p) * inv[i];
        cs[p * half + i] = float(std::cos(a));
        sn[p * half + i] = float(std::sin(a));
      }
  };
  tables(c.global_rope(), m->cos_, m->sin_);
  if (c.has_local_rope) tables(c.local_rope, m->local_cos_, m->local_sin_);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const bool local = c.has_local_rope && c.is_sliding(l);
    m->layers_[l].cos = local ? m->local_cos_.data() : m->cos_.data();
    m->layers_[l].sin = local ? m->local_sin_.data() : m->sin_.data();
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

LlamaModel::LlamaModel(std::unique_ptr<WeightSource> source, ModelConfig config)
    : source_(std::move(source)), config_(std::move(config)) {}

WeightView LlamaModel::matrix(const std::string& name, int64_t rows, int64_t cols) {
  const std::optional<EngineTensor> t = source_->find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", source_->path(), name));
  if (t->shape != std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, the config implies [{}, {}]", t->file,
                                 t->name, shape_string(t->shape), rows, cols));
  if (t->q8_0 && cols % 32 != 0)
    throw InputError(fmt::format("{}: q8_0 tensor \"{}\" has {} columns, not whole blocks of 32", t->file,
                                 t->name, cols));
  WeightView w{t->dtype, t->data, rows, cols, t->q8_0};
  const uint64_t esize = t->q8_0 ? 1 : dtype_bits(t->dtype) / 8;
  if (reinterpret_cast<uintptr_t>(t->data) % esize != 0) {
    // Misaligned in the file (legal in safetensors): keep an aligned copy,
    // since the portable kernels read whole elements.
    const size_t nbytes = weight_row_bytes(w) * size_t(rows);
    std::unique_ptr<uint8_t[]> copy(new uint8_t[nbytes]);
    std::memcpy(copy.get(), t->data, nbytes);
    w.data = copy.get();
    owned_.push_back(std::move(copy));
  }
  return w;
}

std::vector<float> LlamaModel::vector(const std::string& name, int64_t n) {
  const std::optional<EngineTensor> t = source_->find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", source_->path(), name));
  if (t->shape != std::vector<uint64_t>{uint64_t(n)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, the config implies [{}]", t->file, t->name,
                                 shape_string(t->shape), n));
  std::vector<float> out(n);
  if (t->q8_0) {
    if (n % 32 != 0)
      throw InputError(fmt::format("{}: q8_0 tensor \"{}\" of {} elements, not whole blocks of 32", t->file,
                                   t->name, n));
    dequantize_q8_0_row(t->data, n, out.data());
  } else {
    convert_to_f32(t->dtype, t->data, size_t(n), out.data());
  }
  return out;
}

std::vector<float> LlamaModel::norm_weight(const std::string& name, int64_t n) {
  std::vector<float> w = vector(name, n);
  if (config_.norm_weight_offset)
    for (float& x : w) x = 1.0f + x;  // Gemma's RMSNorm: x_normed * (1 + w), the sum in fp32 as in transformers
  return w;
}

void LlamaModel::norm_rows(float* rows, int64_t n, int64_t stride, const std::vector<float>& weight) {
  for (int64_t b = 0; b < n; ++b)
    rmsnorm(rows + b * stride, rows + b * stride, weight.data(), config_.hidden_size, config_.rms_norm_eps);
}

void LlamaModel::qk_norm(const Layer& L, int64_t n) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim;
  for (int64_t b = 0; b < n; ++b) {
    float* q = q_.data() + b * c.q_dim();
    for (int64_t h = 0; h < c.num_heads; ++h) rmsnorm(q + h * hd, q + h * hd, L.q_norm.data(), hd, c.rms_norm_eps);
    float* k = k_.data() + b * c.kv_dim();
    for (int64_t h = 0; h < c.num_kv_heads; ++h) rmsnorm(k + h * hd, k + h * hd, L.k_norm.data(), hd, c.rms_norm_eps);
  }
}

void LlamaModel::attention(int64_t l, int64_t pos, int64_t n) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, kv_dim = c.kv_dim(), qd = c.q_dim(), group = c.num_heads / c.num_kv_heads;
  const float* kc = key_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const float* vc = value_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const float scale = float(c.attention_scale());
  const float softcap = float(c.attn_logit_softcap);
  const int64_t window = layers_[l].window;
  const int64_t pairs = n * c.num_heads;
  auto heads = [&](int64_t bh0, int64_t bh1) {
  for (int64_t bh = bh0; bh < bh1; ++bh) {
    const int64_t b = bh / c.num_heads, h = bh % c.num_heads, p = pos + b;
    const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
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
    if (softcap > 0) softcap_inplace(s, len, softcap);
    softmax_inplace(s, len);
    float* o = att_out_.data() + b * qd + h * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t t = 0; t < len; ++t) {
      const float* v = vc + (first + t) * kv_dim + kvh * hd;
      const float a = s[t];
      for (int64_t i = 0; i < hd; ++i) o[i] += a * v[i];
    }
  }
  };
  if ((pos + n) * pairs * hd >= (int64_t(1) << 16)) ThreadPool::shared().parallel_for(pairs, 1, heads);
  else heads(0, pairs);
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
  if (c.embedding_multiplier != 1.0) {  // Gemma
    const float mult = float(c.embedding_multiplier);
    for (int64_t i = 0; i < n * H; ++i) x_[i] *= mult;
  }
  const Layer* cur = nullptr;
  auto rope = [&](float* v, int64_t heads, int64_t p) {
    const float* cs = cur->cos + p * half;
    const float* sn = cur->sin + p * half;
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
    cur = &L;
    for (int64_t b = 0; b < n; ++b)
      rmsnorm(xb_.data() + b * xbs, x_.data() + b * H, L.attn_norm.data(), H, c.rms_norm_eps);
    const MatmulTask qkv[3] = {{&L.wq, q_.data(), qd, bias(L.bq)},
                               {&L.wk, k_.data(), kv_dim, bias(L.bk)},
                               {&L.wv, v_.data(), kv_dim, bias(L.bv)}};
    matmul_many(qkv, 3, xb_.data(), n, xbs);
    if (!L.q_norm.empty()) qk_norm(L, n);  // Qwen3, Gemma 3
    for (int64_t b = 0; b < n; ++b) {
      rope(q_.data() + b * qd, c.num_heads, pos + b);
      rope(k_.data() + b * kv_dim, c.num_kv_heads, pos + b);
      const size_t at = (size_t(l) * size_t(ctx_) + size_t(pos + b)) * size_t(kv_dim);
      std::memcpy(key_cache_.get() + at, k_.data() + b * kv_dim, size_t(kv_dim) * 4);
      std::memcpy(value_cache_.get() + at, v_.data() + b * kv_dim, size_t(kv_dim) * 4);
    }
    attention(l, pos, n);
    matmul(L.wo, att_out_.data(), n, qd, xb_.data(), xbs, bias(L.bo));
    if (!L.post_attn_norm.empty()) norm_rows(xb_.data(), n, xbs, L.post_attn_norm);  // Gemma
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < H; ++i) x_[b * H + i] += xb_[b * xbs + i];

    for (int64_t b = 0; b < n; ++b)
      rmsnorm(xb_.data() + b * xbs, x_.data() + b * H, L.ffn_norm.data(), H, c.rms_norm_eps);
    const MatmulTask gate_up[2] = {{&L.gate, hb_.data(), I}, {&L.up, hb2_.data(), I}};
    matmul_many(gate_up, 2, xb_.data(), n, xbs);
    if (c.activation == Activation::GeluTanh) gelu_tanh_mul(hb_.data(), hb2_.data(), n * I);  // Gemma
    else silu_mul(hb_.data(), hb2_.data(), n * I);
    matmul(L.down, hb_.data(), n, I, xb_.data(), xbs);
    if (!L.post_ffn_norm.empty()) norm_rows(xb_.data(), n, xbs, L.post_ffn_norm);  // Gemma
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < H; ++i) x_[b * H + i] += xb_[b * xbs + i];
  }
  if (!want_logits) return;
  const int64_t first = all_logits ? 0 : n - 1, count = n - first;
  for (int64_t b = first; b < n; ++b)
    rmsnorm(x_.data() + b * H, x_.data() + b * H, final_norm_.data(), H, c.rms_norm_eps);
  if (logits_.size() < size_t(count * c.vocab_size)) logits_.resize(size_t(count * c.vocab_size));
  matmul(lm_head_, x_.data() + first * H, count, H, logits_.data(), c.vocab_size);
  if (c.final_logit_softcap > 0) softcap_inplace(logits_.data(), count * c.vocab_size, float(c.final_logit_softcap));
}

}  // namespace chatvec

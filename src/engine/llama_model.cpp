#include "engine/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/core.h>

#include "core/error.h"
#include "formats/safetensors/safetensors_reader.h"

namespace chatvec {

std::unique_ptr<LlamaModel> LlamaModel::open(const std::string& dir, const EngineOptions& opts) {
  Checkpoint ckpt = Checkpoint::open(dir);
  if (!ckpt.has_config()) throw InputError(dir + ": no config.json");
  ModelConfig config = parse_model_config(ckpt.config(), ckpt.dir() + "/config.json");
  std::unique_ptr<LlamaModel> m(new LlamaModel(std::move(ckpt), std::move(config)));
  const ModelConfig& c = m->config_;
  if (opts.context_length < 0) throw InputError("context length must be positive");
  m->ctx_ = opts.context_length > 0 ? opts.context_length : std::min<int64_t>(c.max_position_embeddings, 4096);

  const int64_t H = c.hidden_size, I = c.intermediate_size;
  m->embed_ = m->matrix("model.embed_tokens.weight", c.vocab_size, H);
  m->weight_dtype_ = m->embed_.dtype;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer L;
    L.attn_norm = m->vector(p + "input_layernorm.weight", H);
    L.wq = m->matrix(p + "self_attn.q_proj.weight", c.q_dim(), H);
    L.wk = m->matrix(p + "self_attn.k_proj.weight", c.kv_dim(), H);
    L.wv = m->matrix(p + "self_attn.v_proj.weight", c.kv_dim(), H);
    L.wo = m->matrix(p + "self_attn.o_proj.weight", H, c.q_dim());
    if (c.qkv_bias) {
      L.bq = m->vector(p + "self_attn.q_proj.bias", c.q_dim());
      L.bk = m->vector(p + "self_attn.k_proj.bias", c.kv_dim());
      L.bv = m->vector(p + "self_attn.v_proj.bias", c.kv_dim());
    }
    if (c.o_bias) L.bo = m->vector(p + "self_attn.o_proj.bias", H);
    L.ffn_norm = m->vector(p + "post_attention_layernorm.weight", H);
    L.gate = m->matrix(p + "mlp.gate_proj.weight", I, H);
    L.up = m->matrix(p + "mlp.up_proj.weight", I, H);
    L.down = m->matrix(p + "mlp.down_proj.weight", H, I);
    m->layers_.push_back(std::move(L));
  }
  m->final_norm_ = m->vector("model.norm.weight", H);
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    if (!m->ckpt_.find("lm_head.weight"))
      throw InputError(m->ckpt_.path() +
                       ": no tensor \"lm_head.weight\" and config.json has tie_word_embeddings false");
    m->lm_head_ = m->matrix("lm_head.weight", c.vocab_size, H);
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
  m->x_.resize(H);
  m->xb_.resize(std::max(H, c.q_dim()));
  m->q_.resize(c.q_dim());
  m->k_.resize(c.kv_dim());
  m->v_.resize(c.kv_dim());
  m->att_out_.resize(c.q_dim());
  m->scores_.resize(size_t(c.num_heads) * size_t(m->ctx_));
  m->hb_.resize(I);
  m->hb2_.resize(I);
  m->logits_.resize(c.vocab_size);
  return m;
}

LlamaModel::LlamaModel(Checkpoint ckpt, ModelConfig config) : ckpt_(std::move(ckpt)), config_(std::move(config)) {}

WeightView LlamaModel::matrix(const std::string& name, int64_t rows, int64_t cols) {
  const CheckpointTensor* t = ckpt_.find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", ckpt_.path(), name));
  const TensorInfo& info = *t->info;
  if (info.shape != std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, config.json implies [{}, {}]", t->file->path(),
                                 name, shape_string(info.shape), rows, cols));
  if (info.dtype != DType::F32 && info.dtype != DType::BF16 && info.dtype != DType::F16)
    throw InputError(fmt::format("{}: tensor \"{}\" has type {}; the engine runs F32, BF16 and F16 weights",
                                 t->file->path(), name, dtype_name(info.dtype)));
  const size_t esize = info.dtype == DType::F32 ? 4 : 2;
  const uint8_t* data = t->data();
  if (reinterpret_cast<uintptr_t>(data) % esize != 0) {
    // Misaligned in the file (legal in safetensors): keep an aligned copy.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[info.nbytes()]);
    std::memcpy(copy.get(), data, info.nbytes());
    data = copy.get();
    owned_.push_back(std::move(copy));
  }
  return WeightView{info.dtype, data, rows, cols};
}

std::vector<float> LlamaModel::vector(const std::string& name, int64_t n) {
  const CheckpointTensor* t = ckpt_.find(name);
  if (!t) throw InputError(fmt::format("{}: missing tensor \"{}\"", ckpt_.path(), name));
  const TensorInfo& info = *t->info;
  if (info.shape != std::vector<uint64_t>{uint64_t(n)})
    throw InputError(fmt::format("{}: tensor \"{}\" has shape {}, config.json implies [{}]", t->file->path(), name,
                                 shape_string(info.shape), n));
  if (info.dtype != DType::F32 && info.dtype != DType::BF16 && info.dtype != DType::F16)
    throw InputError(fmt::format("{}: tensor \"{}\" has type {}; the engine runs F32, BF16 and F16 weights",
                                 t->file->path(), name, dtype_name(info.dtype)));
  std::vector<float> out(n);
  weights_to_f32(info.dtype, t->data(), n, out.data());
  return out;
}

void LlamaModel::attention(int64_t l, int64_t pos) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, kv_dim = c.kv_dim(), group = c.num_heads / c.num_kv_heads;
  const float* kc = key_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const float* vc = value_cache_.get() + size_t(l) * size_t(ctx_) * size_t(kv_dim);
  const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const bool parallel = (pos + 1) * c.num_heads * hd >= (int64_t(1) << 16);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t h = 0; h < c.num_heads; ++h) {
    const float* q = q_.data() + h * hd;
    const int64_t kvh = h / group;
    float* s = scores_.data() + h * ctx_;
    const int64_t n = pos + 1 - first;
    for (int64_t t = 0; t < n; ++t) {
      const float* k = kc + (first + t) * kv_dim + kvh * hd;
      float dot = 0;
      for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
      s[t] = dot * scale;
    }
    softmax_inplace(s, n);
    float* o = att_out_.data() + h * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const float* v = vc + (first + t) * kv_dim + kvh * hd;
      const float a = s[t];
      for (int64_t i = 0; i < hd; ++i) o[i] += a * v[i];
    }
  }
}

const float* LlamaModel::forward(int64_t token, int64_t pos) {
  const ModelConfig& c = config_;
  if (token < 0 || token >= c.vocab_size)
    throw InputError(fmt::format("token id {} is outside the vocabulary (size {})", token, c.vocab_size));
  if (pos < 0 || pos >= ctx_)
    throw InputError(fmt::format("position {} is beyond the context length {}", pos, ctx_));
  const int64_t H = c.hidden_size, hd = c.head_dim, half = hd / 2, kv_dim = c.kv_dim();
  weight_row_to_f32(embed_, token, x_.data());
  const float* cs = cos_.data() + pos * half;
  const float* sn = sin_.data() + pos * half;
  auto rope = [&](float* v, int64_t heads) {
    for (int64_t h = 0; h < heads; ++h) {
      float* a = v + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = a[i], x2 = a[i + half];
        a[i] = x1 * cs[i] - x2 * sn[i];
        a[i + half] = x2 * cs[i] + x1 * sn[i];
      }
    }
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& L = layers_[l];
    rmsnorm(xb_.data(), x_.data(), L.attn_norm.data(), H, c.rms_norm_eps);
    matvec(L.wq, xb_.data(), q_.data(), L.bq.empty() ? nullptr : L.bq.data());
    matvec(L.wk, xb_.data(), k_.data(), L.bk.empty() ? nullptr : L.bk.data());
    matvec(L.wv, xb_.data(), v_.data(), L.bv.empty() ? nullptr : L.bv.data());
    rope(q_.data(), c.num_heads);
    rope(k_.data(), c.num_kv_heads);
    const size_t at = (size_t(l) * size_t(ctx_) + size_t(pos)) * size_t(kv_dim);
    std::memcpy(key_cache_.get() + at, k_.data(), size_t(kv_dim) * 4);
    std::memcpy(value_cache_.get() + at, v_.data(), size_t(kv_dim) * 4);
    attention(l, pos);
    matvec(L.wo, att_out_.data(), xb_.data(), L.bo.empty() ? nullptr : L.bo.data());
    for (int64_t i = 0; i < H; ++i) x_[i] += xb_[i];

    rmsnorm(xb_.data(), x_.data(), L.ffn_norm.data(), H, c.rms_norm_eps);
    matvec(L.gate, xb_.data(), hb_.data());
    matvec(L.up, xb_.data(), hb2_.data());
    for (int64_t i = 0; i < c.intermediate_size; ++i) {
      const float g = hb_[i];
      hb_[i] = g / (1.0f + std::exp(-g)) * hb2_[i];
    }
    matvec(L.down, hb_.data(), xb_.data());
    for (int64_t i = 0; i < H; ++i) x_[i] += xb_[i];
  }
  rmsnorm(x_.data(), x_.data(), final_norm_.data(), H, c.rms_norm_eps);
  matvec(lm_head_, x_.data(), logits_.data());
  return logits_.data();
}

}  // namespace chatvec

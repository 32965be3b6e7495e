// Forward and backward passes of the trainable Llama decoder.
//
// Conventions follow Hugging Face's LlamaForCausalLM (the engine's):
//   h = x + o_proj(attn(rope(q_proj(rms1(x))), rope(k_proj(..)), v_proj(..)))
//   y = h + down(silu(gate(rms2(h))) * up(rms2(h)))
//   logits = lm_head(rms_f(y))
// rotary embedding on pairs (i, i + head_dim/2) with angle pos * inv_freq[i]
// (computed in double, as the engine does), query head h reading key/value
// head h / (heads / kv_heads).
#include "train/transformer.h"

#include <algorithm>
#include <cmath>
#include <fmt/core.h>

#include "core/error.h"
#include "formats/architecture.h"

namespace chatvec::train {

template <class R>
Transformer<R>::Transformer(const ModelConfig& c) : config_(c) {
  if (c.qk_norm || c.sandwich_norms || c.norm_weight_offset || c.activation != Activation::Silu ||
      c.embedding_multiplier != 1.0 || c.attn_logit_softcap > 0 || c.final_logit_softcap > 0 ||
      c.query_pre_attn_scalar > 0)
    throw InputError("train: architecture " + c.architecture +
                     " is not supported (the trainer runs Llama-style layers: LlamaForCausalLM, MistralForCausalLM "
                     "without sliding window)");
  if (c.qkv_bias || c.o_bias) throw InputError("train: models with attention biases are not supported");
  if (c.sliding_window > 0) throw InputError("train: sliding-window attention is not supported");
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    throw InputError("train: num_attention_heads must be a multiple of num_key_value_heads");
  if (c.head_dim % 2 != 0) throw InputError("train: head_dim must be even");
  inv_freq_ = rope_inv_freq(c);
  layout();
}

template <class R>
void Transformer<R>::layout() {
  const ModelConfig& c = config_;
  slots_.clear();
  layers_.clear();
  size_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    slots_.push_back({std::move(name), std::move(shape), off, n, decay});
    off += n;
    return slots_.back().offset;
  };
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  embed_ = add(hf_weight_name(WeightRole::TokenEmbedding), {c.vocab_size, D}, true);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto name = [l](WeightRole r) { return hf_weight_name(r, l); };
    LayerSlots s;
    s.attn_norm = add(name(WeightRole::AttnNorm), {D}, false);
    s.wq = add(name(WeightRole::Q), {c.q_dim(), D}, true);
    s.wk = add(name(WeightRole::K), {c.kv_dim(), D}, true);
    s.wv = add(name(WeightRole::V), {c.kv_dim(), D}, true);
    s.wo = add(name(WeightRole::O), {D, c.q_dim()}, true);
    s.ffn_norm = add(name(WeightRole::FfnNorm), {D}, false);
    s.gate = add(name(WeightRole::Gate), {F, D}, true);
    s.up = add(name(WeightRole::Up), {F, D}, true);
    s.down = add(name(WeightRole::Down), {D, F}, true);
    layers_.push_back(s);
  }
  final_norm_ = add(hf_weight_name(WeightRole::FinalNorm), {D}, false);
  lm_head_ = c.tie_word_embeddings ? embed_ : add(hf_weight_name(WeightRole::LmHead), {c.vocab_size, D}, true);
  params.assign(off, R(0));
}

template <class R>
const ParamSlot* Transformer<R>::find(const std::string& name) const {
  for (const auto& s : slots_)
    if (s.name == name) return &s;
  return nullptr;
}

template <class R>
void Transformer<R>::resize_vocab(int64_t new_vocab) {
  if (new_vocab < config_.vocab_size) throw InputError("train: cannot shrink the vocabulary");
  if (new_vocab == config_.vocab_size) return;
  const std::vector<R> old = params;
  const std::vector<ParamSlot> old_slots = slots_;
  config_.vocab_size = new_vocab;
  layout();
  for (const auto& os : old_slots) {
    const ParamSlot* ns = find(os.name);
    std::copy(old.begin() + os.offset, old.begin() + os.offset + os.size, params.begin() + ns->offset);
  }
}

template <class To, class From>
Transformer<To> convert_transformer(const Transformer<From>& m) {
  Transformer<To> out(m.config());
  for (size_t i = 0; i < m.params.size(); ++i) out.params[i] = To(m.params[i]);
  return out;
}

namespace {

// Dot product with eight partial sums (lets the compiler vectorize without
// reassociation flags; the order is fixed, so results are deterministic).
template <class R>
inline R dot(const R* a, const R* b, int64_t n) {
  R s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  R t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

template <class R>
inline void axpy(R a, const R* x, R* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// y[T, out] = x[T, in] W[out, in]^T
template <class R>
void mm(const R* x, const R* W, R* y, int64_t T, int64_t in, int64_t out) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) y[t * out + o] = dot(x + t * in, W + o * in, in);
}

// dx[T, in] (+)= dy[T, out] W[out, in]; dW[out, in] += dy^T x.
template <class R>
void mm_back(const R* x, const R* W, const R* dy, R* dx, R* dW, int64_t T, int64_t in, int64_t out, bool accumulate_dx) {
  if (dx) {
    if (!accumulate_dx) std::fill(dx, dx + T * in, R(0));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) axpy(dy[t * out + o], W + o * in, dx + t * in, in);
  }
  if (dW)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t t = 0; t < T; ++t) axpy(dy[t * out + o], x + t * in, dW + o * in, in);
}

template <class R>
void rms_fwd(const R* x, const R* w, R* y, R* r, int64_t T, int64_t n, double eps) {
  for (int64_t t = 0; t < T; ++t) {
    const R* xt = x + t * n;
    const R ss = dot(xt, xt, n);
    const R inv = R(1) / std::sqrt(ss / R(n) + R(eps));
    r[t] = inv;
    for (int64_t i = 0; i < n; ++i) y[t * n + i] = xt[i] * inv * w[i];
  }
}

// dx (+)= d rms / dx . dy ; dw += ...
template <class R>
void rms_back(const R* x, const R* w, const R* r, const R* dy, R* dx, R* dw, int64_t T, int64_t n, bool accumulate) {
  for (int64_t t = 0; t < T; ++t) {
    const R* xt = x + t * n;
    const R* dyt = dy + t * n;
    R* dxt = dx + t * n;
    const R inv = r[t];
    R s = 0;
    for (int64_t i = 0; i < n; ++i) {
      dw[i] += dyt[i] * xt[i] * inv;
      s += dyt[i] * w[i] * xt[i];
    }
    const R c = inv * inv * inv * s / R(n);
    for (int64_t i = 0; i < n; ++i) {
      const R v = inv * dyt[i] * w[i] - c * xt[i];
      dxt[i] = accumulate ? dxt[i] + v : v;
    }
  }
}

// Rotate (sign = +1) or apply the transpose (sign = -1, for gradients).
template <class R>
void rope(R* v, int64_t T, int64_t heads, int64_t hd, const R* cs, const R* sn, int sign) {
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      R* a = v + (t * heads + h) * hd;
      const R* c = cs + t * half;
      const R* s = sn + t * half;
      for (int64_t i = 0; i < half; ++i) {
        const R x1 = a[i], x2 = a[i + half];
        const R si = sign > 0 ? s[i] : -s[i];
        a[i] = x1 * c[i] - x2 * si;
        a[i + half] = x2 * c[i] + x1 * si;
      }
    }
}

template <class R>
void grow(std::vector<R>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

template <class R>
double forward_backward(const Transformer<R>& m, const int32_t* tokens, const int32_t* targets, const float* weights,
                        int64_t T, double scale, Workspace<R>& ws, R* grad) {
  const ModelConfig& c = m.config();
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, L = c.num_layers;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t group = nh / nkv, half = hd / 2;
  const R att_scale = R(1) / std::sqrt(R(hd));
  const R* P = m.params.data();
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= V || targets[t] < 0 || targets[t] >= V)
      throw InputError(fmt::format("train: token id out of range (vocabulary {})", V));
  }

  // Rotary tables for positions [0, T).
  if (ws.rope_len < T) {
    ws.cos_.resize(size_t(T * half));
    ws.sin_.resize(size_t(T * half));
    for (int64_t p = 0; p < T; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(p) * m.inv_freq()[size_t(i)];
        // Same rounding as the engine: angle in double, cos/sin rounded to float.
        ws.cos_[size_t(p * half + i)] = R(float(std::cos(a)));
        ws.sin_[size_t(p * half + i)] = R(float(std::sin(a)));
      }
    ws.rope_len = T;
  }
  if (ws.layers.size() < size_t(L)) ws.layers.resize(size_t(L));
  const R* cs = ws.cos_.data();
  const R* sn = ws.sin_.data();

  // ---- forward -------------------------------------------------------------
  grow(ws.xf, size_t(T * D));
  std::vector<R>* x = &ws.xf;  // current residual stream, copied into each layer's xin
  for (int64_t t = 0; t < T; ++t) std::copy(P + m.embed_offset() + tokens[t] * D, P + m.embed_offset() + (tokens[t] + 1) * D, x->data() + t * D);

  for (int64_t l = 0; l < L; ++l) {
    auto& a = ws.layers[size_t(l)];
    const auto& s = m.layer(l);
    grow(a.xin, size_t(T * D)); grow(a.r1, size_t(T)); grow(a.xn1, size_t(T * D));
    grow(a.q, size_t(T * qd)); grow(a.k, size_t(T * kvd)); grow(a.v, size_t(T * kvd));
    grow(a.p, size_t(nh * T * T)); grow(a.ao, size_t(T * qd)); grow(a.x2, size_t(T * D));
    grow(a.r2, size_t(T)); grow(a.xn2, size_t(T * D));
    grow(a.g, size_t(T * F)); grow(a.u, size_t(T * F)); grow(a.h, size_t(T * F));
    std::copy(x->begin(), x->begin() + T * D, a.xin.begin());
    rms_fwd(a.xin.data(), P + s.attn_norm, a.xn1.data(), a.r1.data(), T, D, c.rms_norm_eps);
    mm(a.xn1.data(), P + s.wq, a.q.data(), T, D, qd);
    mm(a.xn1.data(), P + s.wk, a.k.data(), T, D, kvd);
    mm(a.xn1.data(), P + s.wv, a.v.data(), T, D, kvd);
    rope(a.q.data(), T, nh, hd, cs, sn, +1);
    rope(a.k.data(), T, nkv, hd, cs, sn, +1);
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kh = h / group;
      for (int64_t t = 0; t < T; ++t) {
        R* p = a.p.data() + (h * T + t) * T;
        const R* q = a.q.data() + t * qd + h * hd;
        R mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = dot(q, a.k.data() + j * kvd + kh * hd, hd) * att_scale;
          mx = std::max(mx, p[j]);
        }
        R sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const R inv = R(1) / sum;
        R* o = a.ao.data() + t * qd + h * hd;
        std::fill(o, o + hd, R(0));
        for (int64_t j = 0; j <= t; ++j) {
          p[j] *= inv;
          axpy(p[j], a.v.data() + j * kvd + kh * hd, o, hd);
        }
      }
    }
    mm(a.ao.data(), P + s.wo, a.x2.data(), T, qd, D);
    for (int64_t i = 0; i < T * D; ++i) a.x2[size_t(i)] += a.xin[size_t(i)];
    rms_fwd(a.x2.data(), P + s.ffn_norm, a.xn2.data(), a.r2.data(), T, D, c.rms_norm_eps);
    mm(a.xn2.data(), P + s.gate, a.g.data(), T, D, F);
    mm(a.xn2.data(), P + s.up, a.u.data(), T, D, F);
    for (int64_t i = 0; i < T * F; ++i) {
      const R g = a.g[size_t(i)];
      a.h[size_t(i)] = g / (R(1) + std::exp(-g)) * a.u[size_t(i)];
    }
    mm(a.h.data(), P + s.down, x->data(), T, F, D);
    for (int64_t i = 0; i < T * D; ++i) (*x)[size_t(i)] += a.x2[size_t(i)];
  }
  grow(ws.rf, size_t(T));
  grow(ws.xnf, size_t(T * D));
  rms_fwd(x->data(), P + m.final_norm_offset(), ws.xnf.data(), ws.rf.data(), T, D, c.rms_norm_eps);

  // Logits and loss only where the loss weight is non-zero.
  grow(ws.logits, size_t(T * V));
  grow(ws.dx, size_t(T * D));
  const R* head = P + m.lm_head_offset();
  double loss = 0;
  std::vector<int64_t> scored;
  for (int64_t t = 0; t < T; ++t)
    if (weights[t] != 0.0f) scored.push_back(t);
  for (int64_t t : scored) {
    R* lg = ws.logits.data() + t * V;
    const R* xt = ws.xnf.data() + t * D;
    for (int64_t v = 0; v < V; ++v) lg[v] = dot(xt, head + v * D, D);
    R mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, lg[v]);
    R sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      lg[v] = std::exp(lg[v] - mx);
      sum += lg[v];
    }
    const R inv = R(1) / sum;
    for (int64_t v = 0; v < V; ++v) lg[v] *= inv;  // now probabilities
    loss += double(weights[t]) * -std::log(std::max(double(lg[targets[t]]), 1e-300));
  }
  if (!grad) return loss;

  // ---- backward ------------------------------------------------------------
  R* G = grad;
  grow(ws.dxn, size_t(T * D));
  std::fill(ws.dxn.begin(), ws.dxn.begin() + T * D, R(0));
  for (int64_t t : scored) {
    R* lg = ws.logits.data() + t * V;  // becomes dlogits
    const R w = R(double(weights[t]) * scale);
    for (int64_t v = 0; v < V; ++v) lg[v] *= w;
    lg[targets[t]] -= w;
    const R* xt = ws.xnf.data() + t * D;
    R* dxt = ws.dxn.data() + t * D;
    R* dhead = G + m.lm_head_offset();
    for (int64_t v = 0; v < V; ++v) {
      axpy(lg[v], head + v * D, dxt, D);
      axpy(lg[v], xt, dhead + v * D, D);
    }
  }
  rms_back(x->data(), P + m.final_norm_offset(), ws.rf.data(), ws.dxn.data(), ws.dx.data(), G + m.final_norm_offset(), T,
           D, false);

  grow(ws.dh, size_t(T * F)); grow(ws.dg, size_t(T * F)); grow(ws.du, size_t(T * F));
  grow(ws.dao, size_t(T * qd)); grow(ws.dq, size_t(T * qd)); grow(ws.dk, size_t(T * kvd)); grow(ws.dv, size_t(T * kvd));
  grow(ws.dp, size_t(T));
  R* dx = ws.dx.data();  // gradient of the residual stream
  for (int64_t l = L - 1; l >= 0; --l) {
    auto& a = ws.layers[size_t(l)];
    const auto& s = m.layer(l);
    // MLP: out = x2 + down(h); dx is d out, and also d x2 (residual).
    mm_back(a.h.data(), P + s.down, dx, ws.dh.data(), G + s.down, T, F, D, false);
    for (int64_t i = 0; i < T * F; ++i) {
      const R g = a.g[size_t(i)];
      const R sig = R(1) / (R(1) + std::exp(-g));
      const R silu = g * sig;
      const R dh = ws.dh[size_t(i)];
      ws.du[size_t(i)] = dh * silu;
      ws.dg[size_t(i)] = dh * a.u[size_t(i)] * sig * (R(1) + g * (R(1) - sig));
    }
    mm_back(a.xn2.data(), P + s.gate, ws.dg.data(), ws.dxn.data(), G + s.gate, T, D, F, false);
    mm_back(a.xn2.data(), P + s.up, ws.du.data(), ws.dxn.data(), G + s.up, T, D, F, true);
    rms_back(a.x2.data(), P + s.ffn_norm, a.r2.data(), ws.dxn.data(), dx, G + s.ffn_norm, T, D, true);
    // Attention: x2 = xin + o_proj(ao); dx is now d x2, and also d xin.
    mm_back(a.ao.data(), P + s.wo, dx, ws.dao.data(), G + s.wo, T, qd, D, false);
    std::fill(ws.dq.begin(), ws.dq.begin() + T * qd, R(0));
    std::fill(ws.dk.begin(), ws.dk.begin() + T * kvd, R(0));
    std::fill(ws.dv.begin(), ws.dv.begin() + T * kvd, R(0));
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kh = h / group;
      for (int64_t t = 0; t < T; ++t) {
        const R* p = a.p.data() + (h * T + t) * T;
        const R* dout = ws.dao.data() + t * qd + h * hd;
        R* dp = ws.dp.data();
        R sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          dp[j] = dot(dout, a.v.data() + j * kvd + kh * hd, hd);
          sum += p[j] * dp[j];
          axpy(p[j], dout, ws.dv.data() + j * kvd + kh * hd, hd);
        }
        const R* q = a.q.data() + t * qd + h * hd;
        R* dq = ws.dq.data() + t * qd + h * hd;
        for (int64_t j = 0; j <= t; ++j) {
          const R ds = p[j] * (dp[j] - sum) * att_scale;
          axpy(ds, a.k.data() + j * kvd + kh * hd, dq, hd);
          axpy(ds, q, ws.dk.data() + j * kvd + kh * hd, hd);
        }
      }
    }
    rope(ws.dq.data(), T, nh, hd, cs, sn, -1);
    rope(ws.dk.data(), T, nkv, hd, cs, sn, -1);
    mm_back(a.xn1.data(), P + s.wq, ws.dq.data(), ws.dxn.data(), G + s.wq, T, D, qd, false);
    mm_back(a.xn1.data(), P + s.wk, ws.dk.data(), ws.dxn.data(), G + s.wk, T, D, kvd, true);
    mm_back(a.xn1.data(), P + s.wv, ws.dv.data(), ws.dxn.data(), G + s.wv, T, D, kvd, true);
    rms_back(a.xin.data(), P + s.attn_norm, a.r1.data(), ws.dxn.data(), dx, G + s.attn_norm, T, D, true);
  }
  R* dE = G + m.embed_offset();
  for (int64_t t = 0; t < T; ++t) axpy(R(1), dx + t * D, dE + tokens[t] * D, D);
  return loss;
}

template class Transformer<float>;
template class Transformer<double>;
template double forward_backward<float>(const Transformer<float>&, const int32_t*, const int32_t*, const float*,
                                        int64_t, double, Workspace<float>&, float*);
template double forward_backward<double>(const Transformer<double>&, const int32_t*, const int32_t*, const float*,
                                         int64_t, double, Workspace<double>&, double*);
template Transformer<double> convert_transformer<double, float>(const Transformer<float>&);
template Transformer<float> convert_transformer<float, double>(const Transformer<double>&);

}  // namespace chatvec::train

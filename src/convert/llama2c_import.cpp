#include "convert/llama2c_import.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fmt/core.h>
#include <vector>

#include "core/error.h"
#include "formats/architecture.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/json_util.h"
#include "core/mapped_file.h"
#include "formats/safetensors/safetensors_writer.h"

namespace chatvec {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kHeaderBytes = 7 * 4;
constexpr int64_t kMaxDim = int64_t(1) << 24;  // any larger value is not a real model

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Floats of every tensor before the optional freq_cis tables.
uint64_t body_floats(const Llama2cHeader& h) {
  const uint64_t dim = h.dim, hid = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const uint64_t kv_dim = uint64_t(h.n_kv_heads) * uint64_t(h.head_size());
  return V * dim                       // token_embedding
         + L * dim                     // rms_att
         + L * dim * dim               // wq
         + 2 * L * kv_dim * dim        // wk, wv
         + L * dim * dim               // wo
         + L * dim                     // rms_ffn
         + 3 * L * hid * dim           // w1, w2, w3
         + dim;                        // rms_final
}

// Removes a directory tree unless released.
struct DirGuard {
  std::string path;
  ~DirGuard() {
    if (!path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

}  // namespace

Llama2cHeader llama2c_parse_header(const uint8_t* bytes, uint64_t file_size, const std::string& what) {
  if (file_size < kHeaderBytes)
    throw InputError(fmt::format("{}: not a llama2.c checkpoint: {} bytes, shorter than the 28-byte header", what,
                                 file_size));
  if (read_i32(bytes) == 0x616b3432)  // "ak42": llama2.c's export.py version 1/2 formats
    throw InputError(fmt::format("{}: llama2.c export version {} (magic \"ak42\") is not supported; export with "
                                 "--version 0 (the legacy run.c format)",
                                 what, file_size >= 8 ? read_i32(bytes + 4) : -1));
  Llama2cHeader h;
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  int64_t v[7];
  for (int i = 0; i < 7; ++i) v[i] = read_i32(bytes + 4 * i);
  h.dim = v[0], h.hidden_dim = v[1], h.n_layers = v[2], h.n_heads = v[3], h.n_kv_heads = v[4];
  h.shared_classifier = v[5] > 0;
  h.vocab_size = v[5] < 0 ? -v[5] : v[5];
  h.seq_len = v[6];
  for (int i = 0; i < 7; ++i) {
    const int64_t x = i == 5 ? h.vocab_size : v[i];
    if (x <= 0 || x > kMaxDim)
      throw InputError(fmt::format("{}: not a llama2.c checkpoint: header field {} = {} is out of range", what,
                                   names[i], v[i]));
  }
  if (h.dim % h.n_heads != 0)
    throw InputError(fmt::format("{}: header dim {} is not a multiple of n_heads {}", what, h.dim, h.n_heads));
  if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0)
    throw InputError(
        fmt::format("{}: header n_heads {} is not a multiple of n_kv_heads {}", what, h.n_heads, h.n_kv_heads));
  if (h.head_size() % 2 != 0)
    throw InputError(fmt::format("{}: head size {} (dim / n_heads) is odd: rotary embedding needs pairs", what,
                                 h.head_size()));
  // All fields are below 2^24 so these products cannot overflow 64 bits
  // except through n_layers * hidden * dim (2^72 worst case): bound it.
  if (double(h.n_layers) * double(h.hidden_dim) * double(h.dim) > 1e15)
    throw InputError(fmt::format("{}: header sizes describe an impossibly large model", what));
  const uint64_t body = body_floats(h);
  const uint64_t cls = h.shared_classifier ? 0 : uint64_t(h.vocab_size) * uint64_t(h.dim);
  const uint64_t freq = uint64_t(h.seq_len) * uint64_t(h.head_size());  // real + imag, head_size/2 each
  const uint64_t without = kHeaderBytes + 4 * (body + cls);
  const uint64_t with = kHeaderBytes + 4 * (body + freq + cls);
  if (file_size == with) {
    h.has_freq_cis = true;
  } else if (file_size == without) {
    h.has_freq_cis = false;
  } else {
    throw InputError(fmt::format(
        "{}: size {} bytes does not match its header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, n_kv_heads {}, "
        "vocab_size {}, seq_len {}): expected {} bytes (or {} without freq_cis tables){}",
        what, file_size, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, v[5], h.seq_len, with, without,
        file_size < with ? ": truncated" : ": extra bytes at the end"));
  }
  return h;
}

Llama2cHeader import_llama2c(const Llama2cImportOptions& opts) {
  if (!path_exists(opts.model_bin)) throw InputError(opts.model_bin + ": no such file");
  if (is_directory(opts.model_bin)) throw InputError(opts.model_bin + ": is a directory, expected a llama2.c .bin");
  if (!path_exists(opts.tokenizer_model)) throw InputError(opts.tokenizer_model + ": no such file (--tokenizer)");
  if (is_directory(opts.tokenizer_model))
    throw InputError(opts.tokenizer_model + ": is a directory, expected a SentencePiece tokenizer.model");
  if (opts.out_dir.empty()) throw InputError("output directory (-o) is empty");
  fs::path out = fs::path(opts.out_dir);
  if (out.filename().empty()) out = out.parent_path();  // trailing slash
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    throw InputError(out.string() + ": output already exists (choose a new directory)");
  fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  if (!fs::is_directory(parent)) throw InputError(parent.string() + ": output's parent directory does not exist");

  MappedFile bin(opts.model_bin);
  const Llama2cHeader h = llama2c_parse_header(bin.data(), bin.size(), opts.model_bin);

  std::string tmpl = (parent / ("." + out.filename().string() + ".tmp-XXXXXX")).string();
  if (!mkdtemp(tmpl.data())) throw_errno("cannot create a temporary directory beside " + out.string());
  DirGuard guard{tmpl};
  const std::string tmp = tmpl;

  // ---- tensors, in Hugging Face order ----------------------------------
  const uint64_t dim = h.dim, hid = h.hidden_dim, V = h.vocab_size, hs = h.head_size();
  const uint64_t kv_dim = uint64_t(h.n_kv_heads) * hs;
  const float* base = reinterpret_cast<const float*>(bin.data() + kHeaderBytes);
  // Offsets (in floats) of each llama2.c array.
  uint64_t off = 0;
  const uint64_t o_emb = off; off += V * dim;
  const uint64_t o_rms_att = off; off += h.n_layers * dim;
  const uint64_t o_wq = off; off += h.n_layers * dim * dim;
  const uint64_t o_wk = off; off += h.n_layers * kv_dim * dim;
  const uint64_t o_wv = off; off += h.n_layers * kv_dim * dim;
  const uint64_t o_wo = off; off += h.n_layers * dim * dim;
  const uint64_t o_rms_ffn = off; off += h.n_layers * dim;
  const uint64_t o_w1 = off; off += h.n_layers * hid * dim;
  const uint64_t o_w2 = off; off += h.n_layers * dim * hid;
  const uint64_t o_w3 = off; off += h.n_layers * hid * dim;
  const uint64_t o_rms_final = off; off += dim;
  if (h.has_freq_cis) off += h.seq_len * hs;
  const uint64_t o_wcls = off;

  struct Source {
    uint64_t offset;      // floats
    int64_t permute_hs;   // 0: copy; else permute rows with this head size
  };
  std::vector<TensorSpec> specs;
  std::vector<Source> sources;
  auto add = [&](std::string name, std::vector<uint64_t> shape, uint64_t offset, int64_t permute = 0) {
    specs.push_back({std::move(name), DType::F32, std::move(shape)});
    sources.push_back({offset, permute});
  };
  add(hf_weight_name(WeightRole::TokenEmbedding), {V, dim}, o_emb);
  for (int64_t l = 0; l < h.n_layers; ++l) {
    auto name = [l](WeightRole r) { return hf_weight_name(r, l); };
    add(name(WeightRole::AttnNorm), {dim}, o_rms_att + l * dim);
    add(name(WeightRole::Q), {dim, dim}, o_wq + l * dim * dim, int64_t(hs));
    add(name(WeightRole::K), {kv_dim, dim}, o_wk + l * kv_dim * dim, int64_t(hs));
    add(name(WeightRole::V), {kv_dim, dim}, o_wv + l * kv_dim * dim);
    add(name(WeightRole::O), {dim, dim}, o_wo + l * dim * dim);
    add(name(WeightRole::FfnNorm), {dim}, o_rms_ffn + l * dim);
    add(name(WeightRole::Gate), {hid, dim}, o_w1 + l * hid * dim);
    add(name(WeightRole::Up), {hid, dim}, o_w3 + l * hid * dim);
    add(name(WeightRole::Down), {dim, hid}, o_w2 + l * dim * hid);
  }
  add(hf_weight_name(WeightRole::FinalNorm), {dim}, o_rms_final);
  if (!h.shared_classifier) add(hf_weight_name(WeightRole::LmHead), {V, dim}, o_wcls);

  {
    SafetensorsWriter writer(tmp, specs, uint64_t(5) * 1000 * 1000 * 1000, {{"format", "pt"}});
    for (size_t t = 0; t < specs.size(); ++t) {
      check_interrupted();
      const float* src = base + sources[t].offset;
      const uint64_t rows = specs[t].shape[0];
      const uint64_t cols = specs[t].shape.size() > 1 ? specs[t].shape[1] : 1;
      if (sources[t].permute_hs == 0) {
        writer.append(src, rows * cols * 4);
      } else {
        for (uint64_t r = 0; r < rows; ++r) {
          const int64_t m = meta_row_for_hf_row(int64_t(r), sources[t].permute_hs);
          writer.append(src + uint64_t(m) * cols, cols * 4);
        }
      }
    }
    writer.finish();
  }

  // ---- configuration and tokenizer files ------------------------------
  Json config = Json::object();
  config["architectures"] = Json::array({"LlamaForCausalLM"});
  config["attention_bias"] = false;
  config["attention_dropout"] = 0.0;
  config["bos_token_id"] = 1;
  config["eos_token_id"] = 2;
  config["head_dim"] = h.head_size();
  config["hidden_act"] = "silu";
  config["hidden_size"] = h.dim;
  config["initializer_range"] = 0.02;
  config["intermediate_size"] = h.hidden_dim;
  config["max_position_embeddings"] = h.seq_len;
  config["mlp_bias"] = false;
  config["model_type"] = "llama";
  config["num_attention_heads"] = h.n_heads;
  config["num_hidden_layers"] = h.n_layers;
  config["num_key_value_heads"] = h.n_kv_heads;
  config["pretraining_tp"] = 1;
  config["rms_norm_eps"] = 1e-5;
  config["rope_scaling"] = nullptr;
  config["rope_theta"] = 10000.0;
  config["tie_word_embeddings"] = h.shared_classifier;
  config["torch_dtype"] = "float32";
  config["use_cache"] = true;
  config["vocab_size"] = h.vocab_size;
  write_file(tmp + "/config.json", dump_json_pretty(config));

  Json gen = Json::object();
  gen["bos_token_id"] = 1;
  gen["eos_token_id"] = 2;
  write_file(tmp + "/generation_config.json", dump_json_pretty(gen));

  Json tok = Json::object();
  tok["add_bos_token"] = true;
  tok["add_eos_token"] = false;
  tok["bos_token"] = "<s>";
  tok["clean_up_tokenization_spaces"] = false;
  tok["eos_token"] = "</s>";
  tok["legacy"] = true;
  tok["model_max_length"] = h.seq_len;
  tok["pad_token"] = nullptr;
  tok["sp_model_kwargs"] = Json::object();
  tok["tokenizer_class"] = "LlamaTokenizer";
  tok["unk_token"] = "<unk>";
  write_file(tmp + "/tokenizer_config.json", dump_json_pretty(tok));

  Json special = Json::object();
  special["bos_token"] = "<s>";
  special["eos_token"] = "</s>";
  special["unk_token"] = "<unk>";
  write_file(tmp + "/special_tokens_map.json", dump_json_pretty(special));

  copy_file(opts.tokenizer_model, tmp + "/tokenizer.model");
  sync_directory(tmp);

  // ---- publish ---------------------------------------------------------
  if (fs::exists(out)) {
    std::error_code ec;
    fs::remove(out, ec);  // the empty directory checked above
  }
  // rename(2) of a directory never replaces a non-empty directory or a file:
  // another run that put its output there meanwhile wins, this one is refused.
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR || errno == EISDIR)
      throw InputError(out.string() + ": output already exists (another run wrote it while this one ran)");
    throw_errno("cannot rename " + tmp + " to " + out.string());
  }
  guard.path.clear();
  sync_directory(parent.string());
  return h;
}

}  // namespace chatvec

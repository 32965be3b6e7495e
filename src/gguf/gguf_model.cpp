#include "gguf/gguf_model.h"

#include <cstring>
#include <map>

#include <fmt/core.h>

#include "core/error.h"
#include "formats/architecture.h"
#include "formats/model_config.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_names.h"
#include "gguf/gguf_reader.h"

namespace chatvec::gguf {

namespace {

class GgufSource : public WeightSource {
 public:
  explicit GgufSource(const std::string& path) : file_(path) {
    const ArchitectureInfo* info = find_gguf_import_architecture(file_.architecture());
    if (!info) (void)gguf_config_json(file_);  // throws the one-line error naming what can be read
    const std::string arch = file_.architecture();
    const uint64_t heads = file_.get_uint(arch + ".attention.head_count");
    const std::string kvk = arch + ".attention.head_count_kv";
    const uint64_t kv_heads = file_.find(kvk) ? file_.get_uint(kvk) : heads;
    // Huge pages and every page mapped before any tensor is read (see
    // MappedFile::populate_huge): decoding streams all weights per token.
    file_.mapped().populate_huge();
    for (const TensorEntry& t : file_.tensors()) {
      if (t.name == "rope_freqs.weight")
        throw InputError(fmt::format("{}: tensor rope_freqs.weight (llama3 rotary scaling) is not read by the engine; "
                                     "run the Hugging Face directory the file was exported from",
                                     path));
      const auto hf = gguf_to_hf_name(t.name, info->layout);
      if (!hf) throw InputError(fmt::format("{}: tensor {} has no Hugging Face name", path, t.name));
      const uint32_t ty = t.type;
      if (ty != uint32_t(TensorType::F32) && ty != uint32_t(TensorType::F16) && ty != uint32_t(TensorType::BF16) &&
          ty != uint32_t(TensorType::Q8_0))
        throw InputError(fmt::format("{}: tensor {} is {}; the engine runs F32, F16, BF16 and Q8_0", path, t.name,
                                     type_name(ty)));
      if (t.ne.empty() || t.ne.size() > 2)
        throw InputError(fmt::format("{}: tensor {} has {} dimensions (1 or 2 expected)", path, t.name, t.ne.size()));
      EngineTensor e;
      e.name = t.name;
      e.file = path;
      e.q8_0 = ty == uint32_t(TensorType::Q8_0);
      e.dtype = ty == uint32_t(TensorType::F16) ? DType::F16 : ty == uint32_t(TensorType::BF16) ? DType::BF16 : DType::F32;
      e.shape = t.ne.size() == 1 ? std::vector<uint64_t>{t.ne[0]} : std::vector<uint64_t>{t.ne[1], t.ne[0]};
      e.data = file_.data(t);
      const int qk = info->gguf_permute_qk ? qk_kind(t.name) : 0;
      if (qk) e.data = unpermuted(t, e, qk == 1 ? heads : kv_heads);
      tensors_.emplace(*hf, std::move(e));
    }
  }
  const std::string& path() const override { return file_.path(); }
  const File& file() const { return file_; }
  std::optional<EngineTensor> find(const std::string& hf_name) override {
    auto it = tensors_.find(hf_name);
    if (it == tensors_.end()) return std::nullopt;
    return it->second;
  }

 private:
  // A copy of a q/k tensor with its rows in the Hugging Face order.
  const uint8_t* unpermuted(const TensorEntry& t, const EngineTensor& e, uint64_t heads) {
    const uint64_t rows = e.shape[0], cols = e.shape.size() == 2 ? e.shape[1] : 1;
    if (heads == 0 || rows % (2 * heads) != 0)
      throw InputError(fmt::format("{}: tensor {} has {} rows, not a multiple of 2 x {} heads", file_.path(), t.name,
                                   rows, heads));
    if (e.q8_0 && cols % 32 != 0)
      throw InputError(fmt::format("{}: q8_0 tensor {} has rows of {} elements, not whole blocks of 32", file_.path(),
                                   t.name, cols));
    const uint64_t row_bytes = e.q8_0 ? cols / 32 * 34 : cols * (e.dtype == DType::F32 ? 4 : 2);
    if (row_bytes * rows != t.nbytes)
      throw InputError(fmt::format("{}: tensor {} has {} bytes, its shape implies {}", file_.path(), t.name, t.nbytes,
                                   row_bytes * rows));
    std::unique_ptr<uint8_t[]> copy(new uint8_t[t.nbytes]);
    const uint8_t* src = file_.data(t);
    for (uint64_t r = 0; r < rows; ++r)
      std::memcpy(copy.get() + r * row_bytes, src + gguf_row_for_hf_row(r, rows, heads) * row_bytes, row_bytes);
    owned_.push_back(std::move(copy));
    return owned_.back().get();
  }

  File file_;
  std::map<std::string, EngineTensor> tensors_;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

}  // namespace

std::unique_ptr<LlamaModel> open_gguf_model(const std::string& path, const EngineOptions& opts) {
  auto src = std::make_unique<GgufSource>(path);
  // What config.json would hold after an import, read by the one config parser.
  ModelConfig config = parse_model_config(gguf_config_json(src->file()), path);
  return LlamaModel::open(std::move(config), std::move(src), opts);
}

}  // namespace chatvec::gguf

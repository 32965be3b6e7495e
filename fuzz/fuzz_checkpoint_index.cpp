// Checkpoint::open on a directory whose model.safetensors.index.json is the
// fuzz input, next to two fixed valid shards (a.safetensors: "x", "y";
// b.safetensors: "z") and a config.json.
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "formats/checkpoint.h"
#include "fuzz_common.h"

namespace {

std::string shard(const std::string& header_json, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header_json + std::string(data_bytes, '\x01');
}

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = chatvec::fuzz::scratch_dir() + "/model";
    std::filesystem::create_directories(d);
    auto put = [&](const std::string& name, const std::string& bytes) {
      chatvec::fuzz::write_scratch("model/" + name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    };
    put("a.safetensors", shard(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("y":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})", 12));
    put("b.safetensors", shard(R"({"z":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"__metadata__":{"format":"pt"}})", 6));
    put("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":2})");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = model_dir();
  chatvec::fuzz::write_scratch("model/model.safetensors.index.json", data, size);
  try {
    chatvec::Checkpoint c = chatvec::Checkpoint::open(dir);
    // Every tensor found by name, its bytes inside its shard.
    for (const auto& name : c.names()) {
      const chatvec::CheckpointTensor& t = c.at(name);
      if (t.name() != name || t.file_offset() + t.nbytes() > t.map().size()) __builtin_trap();
    }
    (void)c.parameter_count();
  } catch (const chatvec::InputError&) {
  }
  return 0;
}

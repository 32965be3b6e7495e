// Replays the fuzz seed corpora (fuzz/corpus/<target>/) and every finding
// kept as a regression input (tests/reliability/fuzz_regressions/<target>/)
// through the fuzz targets' own entry points, compiled into this test (in
// the sanitizer build, under ASan + UBSan).  A crash, a sanitizer report or
// a broken invariant (__builtin_trap in the target) fails the test.
#include <cstdint>
#include <fstream>
#include <sstream>

#include "test_support.h"

extern "C" int fuzz_entry_safetensors_header(const uint8_t*, size_t);
extern "C" int fuzz_entry_checkpoint_index(const uint8_t*, size_t);
extern "C" int fuzz_entry_config_json(const uint8_t*, size_t);
extern "C" int fuzz_entry_tokenizer_json(const uint8_t*, size_t);
extern "C" int fuzz_entry_sp_model(const uint8_t*, size_t);
extern "C" int fuzz_entry_chat_template(const uint8_t*, size_t);
extern "C" int fuzz_entry_gguf(const uint8_t*, size_t);
extern "C" int fuzz_entry_pytorch_bin(const uint8_t*, size_t);
extern "C" int fuzz_entry_pytorch_pickle(const uint8_t*, size_t);
extern "C" int fuzz_entry_gguf_model(const uint8_t*, size_t);
extern "C" int fuzz_entry_gguf_import(const uint8_t*, size_t);
extern "C" int fuzz_entry_recipe(const uint8_t*, size_t);

namespace chatvec {
namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  int (*entry)(const uint8_t*, size_t);
};

class FuzzReplay : public ::testing::TestWithParam<Target> {};

int replay_dir(const fs::path& dir, const Target& t) {
  int n = 0;
  if (!fs::is_directory(dir)) return 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename() == "README.md") continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string bytes = ss.str();
    SCOPED_TRACE(e.path().string());
    t.entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++n;
  }
  return n;
}

TEST_P(FuzzReplay, SeedsAndFindings) {
  const Target& t = GetParam();
  const int seeds = replay_dir(testing::source_dir() / "fuzz" / "corpus" / t.name, t);
  const int findings = replay_dir(testing::source_dir() / "tests" / "reliability" / "fuzz_regressions" / t.name, t);
  EXPECT_GT(seeds, 0) << "no seed corpus for " << t.name;
  std::cout << t.name << ": " << seeds << " seeds, " << findings << " regression inputs\n";
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay,
                         ::testing::Values(Target{"safetensors_header", fuzz_entry_safetensors_header},
                                           Target{"checkpoint_index", fuzz_entry_checkpoint_index},
                                           Target{"config_json", fuzz_entry_config_json},
                                           Target{"tokenizer_json", fuzz_entry_tokenizer_json},
                                           Target{"sp_model", fuzz_entry_sp_model},
                                           Target{"chat_template", fuzz_entry_chat_template},
                                           Target{"gguf", fuzz_entry_gguf},
                                           Target{"pytorch_bin", fuzz_entry_pytorch_bin},
                                           Target{"pytorch_pickle", fuzz_entry_pytorch_pickle},
                                           Target{"gguf_model", fuzz_entry_gguf_model},
                                           Target{"gguf_import", fuzz_entry_gguf_import},
                                           Target{"recipe", fuzz_entry_recipe}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace chatvec

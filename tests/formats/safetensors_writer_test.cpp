#include "formats/safetensors/safetensors_writer.h"

#include <filesystem>
#include <numeric>

#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "formats/safetensors/safetensors_reader.h"
#include "test_support.h"

namespace chatvec {
namespace {

std::vector<TensorSpec> specs() {
  return {{"b.weight", DType::F32, {3, 5}}, {"a.weight", DType::BF16, {7}}, {"empty", DType::F16, {0}},
          {"c.ids", DType::I64, {2, 2}}, {"d.bias", DType::F16, {9}}};
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

void write_all(SafetensorsWriter& w, size_t piece) {
  for (size_t i = 0; i < w.tensors().size(); ++i) {
    auto bytes = pattern(w.tensors()[i].nbytes(), uint8_t(i));
    for (size_t off = 0; off < bytes.size(); off += piece)
      w.append(bytes.data() + off, std::min(piece, bytes.size() - off));
  }
  w.finish();
}

TEST(SafetensorsWriter, SingleFileRoundTrip) {
  testing::TempDir tmp;
  SafetensorsWriter w(tmp.path().string(), specs(), 5'000'000'000ull, {{"format", "pt"}});
  write_all(w, 3);
  ASSERT_TRUE(std::filesystem::exists(tmp / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(tmp / "model.safetensors.index.json"));
  SafetensorsFile f((tmp / "model.safetensors").string());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  auto sp = specs();
  for (size_t i = 0; i < sp.size(); ++i) {
    const TensorInfo* t = f.find(sp[i].name);
    ASSERT_NE(t, nullptr) << sp[i].name;
    EXPECT_EQ(t->dtype, sp[i].dtype);
    EXPECT_EQ(t->shape, sp[i].shape);
    auto want = pattern(sp[i].nbytes(), uint8_t(i));
    EXPECT_EQ(std::vector<uint8_t>(f.data(*t), f.data(*t) + t->nbytes()), want) << sp[i].name;
  }
}

TEST(SafetensorsWriter, HeaderPaddedToEightBytes) {
  auto sp = specs();
  std::vector<const TensorSpec*> ptrs;
  for (auto& s : sp) ptrs.push_back(&s);
  for (size_t extra = 0; extra < 9; ++extra) {
    std::map<std::string, std::string> md{{"format", "pt"}, {"x", std::string(extra, 'y')}};
    const std::string h = safetensors_header_bytes(ptrs, md);
    EXPECT_EQ(h.size() % 8, 0u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(h[i]);
    EXPECT_EQ(n, h.size() - 8);
    EXPECT_EQ(h[8], '{');
    const auto last = h.find_last_not_of(' ');
    EXPECT_EQ(h[last], '}');
  }
}

TEST(SafetensorsWriter, ShardsLikeTransformers) {
  testing::TempDir tmp;
  // 60 + 14 + 0 + 32 + 18 bytes; limit 63: [b], [a, empty, c], [d]
  SafetensorsWriter w(tmp.path().string(), specs(), 63, {{"format", "pt"}});
  ASSERT_EQ(w.shards().size(), 3u);
  write_all(w, 1000);
  for (const char* f : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors", "model.safetensors.index.json"})
    EXPECT_TRUE(std::filesystem::exists(tmp / f)) << f;
  Json index = read_json_file((tmp / "model.safetensors.index.json").string());
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 60u + 14 + 0 + 32 + 18);
  std::vector<std::string> keys;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) keys.push_back(it.key());
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(index["weight_map"]["b.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["c.ids"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["d.bias"], "model-00003-of-00003.safetensors");
  // The checkpoint reader accepts it and finds every tensor by name.
  Checkpoint c = Checkpoint::open(tmp.path().string());
  EXPECT_EQ(c.tensor_count(), 5u);
  EXPECT_TRUE(c.warnings().empty());
  auto sp = specs();
  for (size_t i = 0; i < sp.size(); ++i) {
    const auto& t = c.at(sp[i].name);
    auto want = pattern(sp[i].nbytes(), uint8_t(i));
    EXPECT_EQ(std::vector<uint8_t>(t.data(), t.data() + t.nbytes()), want);
  }
}

TEST(SafetensorsWriter, TensorLargerThanShardGetsItsOwn) {
  auto shards = plan_safetensors_shards(specs(), 20, {});
  // b (60 > 20) alone; a (14) + empty; c (32) alone; d (18) alone.
  ASSERT_EQ(shards.size(), 4u);
  EXPECT_EQ(shards[0].tensors, std::vector<size_t>{0});
  EXPECT_EQ(shards[1].tensors, (std::vector<size_t>{1, 2}));
}

TEST(SafetensorsWriter, ReadableByIndependentPythonReader) {
  testing::TempDir tmp;
  SafetensorsWriter w(tmp.path().string(), specs(), 64, {{"format", "pt"}});
  write_all(w, 5);
  const std::string script = "import sys; sys.path.insert(0, sys.argv[1]);\n"
                             "from make_synthetic_model import read_safetensors_dir\n"
                             "m = read_safetensors_dir(sys.argv[2])\n"
                             "print(sorted((k, v[0], list(v[1]), len(v[2])) for k, v in m.items()))\n";
  auto r = testing::run_command("/usr/bin/python3 -c " + testing::shell_quote(script) + " " +
                                testing::shell_quote((testing::source_dir() / "scripts").string()) + " " +
                                testing::shell_quote(tmp.path().string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "[('a.weight', 'BF16', [7], 14), ('b.weight', 'F32', [3, 5], 60), ('c.ids', 'I64', [2, 2], 32), "
            "('d.bias', 'F16', [9], 18), ('empty', 'F16', [0], 0)]\n");
}

}  // namespace
}  // namespace chatvec

#include "formats/checkpoint.h"
#include "formats/model_dir.h"

#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "formats/safetensors/safetensors_writer.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

// A two-shard checkpoint with tensors x (shard 1) and y, z (shard 2).
void make_sharded(const fs::path& dir) {
  fs::create_directories(dir);
  SafetensorsWriter w(dir.string(), {{"x", DType::F32, {4}}, {"y", DType::F32, {4}}, {"z", DType::F32, {2}}}, 24, {});
  std::vector<uint8_t> b(16, 1);
  w.append(b.data(), 16);
  w.append(b.data(), 16);
  w.append(b.data(), 8);
  w.finish();
}

void expect_error(const fs::path& dir, const std::string& fragment) {
  try {
    Checkpoint::open(dir.string());
    ADD_FAILURE() << "accepted; expected: " << fragment;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

void rewrite_index(const fs::path& dir, const std::string& from, const std::string& to) {
  const std::string p = (dir / "model.safetensors.index.json").string();
  std::string s = read_file(p);
  auto pos = s.find(from);
  ASSERT_NE(pos, std::string::npos);
  s.replace(pos, from.size(), to);
  fs::remove(p);
  write_file(p, s);
}

TEST(Checkpoint, ShardedDirectory) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  Checkpoint c = Checkpoint::open((tmp / "m").string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(c.shards().size(), 2u);
  EXPECT_EQ(c.parameter_count(), 10u);
}

TEST(Checkpoint, IndexNamesTensorNotInShard) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  rewrite_index(tmp / "m", "\"x\": \"model-00001-of-00002.safetensors\"", "\"x\": \"model-00001-of-00002.safetensors\",\n    \"w\": \"model-00002-of-00002.safetensors\"");
  expect_error(tmp / "m", "tensor \"w\" is listed in the index but not stored");
}

TEST(Checkpoint, IndexPointsToWrongShard) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  rewrite_index(tmp / "m", "\"x\": \"model-00001-of-00002.safetensors\"", "\"x\": \"model-00002-of-00002.safetensors\"");
  // Shard 1 is then not referenced at all, so x is not found where listed.
  expect_error(tmp / "m", "tensor \"x\"");
}

TEST(Checkpoint, ShardTensorMissingFromIndex) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  rewrite_index(tmp / "m", ",\n    \"z\": \"model-00002-of-00002.safetensors\"", "");
  expect_error(tmp / "m", "tensor \"z\" is stored in model-00002-of-00002.safetensors but missing from the index");
}

TEST(Checkpoint, MissingShardFile) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  fs::remove(tmp / "m" / "model-00002-of-00002.safetensors");
  expect_error(tmp / "m", "model-00002-of-00002.safetensors: no such file");
}

TEST(Checkpoint, ShardNameEscapingDirectoryRefused) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  rewrite_index(tmp / "m", "\"z\": \"model-00002-of-00002.safetensors\"", "\"z\": \"../evil.safetensors\"");
  expect_error(tmp / "m", "invalid shard file");
}

TEST(Checkpoint, TotalSizeMismatchIsAWarning) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  rewrite_index(tmp / "m", "\"total_size\": 40", "\"total_size\": 41");
  Checkpoint c = Checkpoint::open((tmp / "m").string());
  ASSERT_EQ(c.warnings().size(), 1u);
  EXPECT_NE(c.warnings()[0].find("total_size"), std::string::npos);
}

TEST(Checkpoint, EmptyOrPyTorchDirectory) {
  testing::TempDir tmp;
  fs::create_directories(tmp / "e");
  expect_error(tmp / "e", "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                          "pytorch_model.bin.index.json");
  // A pytorch_model.bin is opened as one (this one is not a torch.save file).
  write_file((tmp / "e" / "pytorch_model.bin").string(), "x");
  expect_error(tmp / "e", "pytorch_model.bin: not a PyTorch checkpoint");
  // An index naming a shard that is not there.
  write_file((tmp / "e" / "pytorch_model.bin.index.json").string(),
             R"({"weight_map": {"a": "pytorch_model-00001-of-00002.bin"}})");
  expect_error(tmp / "e", "pytorch_model-00001-of-00002.bin: no such file");
  expect_error(tmp / "missing", "no such file or directory");
}

// FP8 weights beside their block scales: paired, the scales hidden from the
// model's tensors; a scale of the wrong shape or a bad block size refused
// naming the tensors.
TEST(Checkpoint, Fp8BlockScalesPairedByName) {
  testing::TempDir tmp;
  auto make = [&](const std::string& name, std::vector<uint64_t> scale_shape, const std::string& config) {
    const fs::path d = tmp / name;
    fs::create_directories(d);
    uint64_t sn = 1;
    for (auto v : scale_shape) sn *= v;
    SafetensorsWriter w(d.string(),
                        {{"l.weight", DType::F8_E4M3, {130, 5}}, {"l.weight_scale_inv", DType::F32, scale_shape},
                         {"n.weight", DType::BF16, {5}}},
                        1ull << 30, {});
    std::vector<uint8_t> wb(130 * 5, 0x38);  // 1.0
    w.append(wb.data(), wb.size());
    std::vector<float> sc(sn, 0.5f);
    w.append(sc.data(), sc.size() * 4);
    std::vector<uint8_t> nb(10, 0);
    w.append(nb.data(), nb.size());
    w.finish();
    if (!config.empty()) write_file((d / "config.json").string(), config);
    return d;
  };
  const fs::path ok = make("ok", {2, 1}, R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})");
  Checkpoint c = Checkpoint::open(ok.string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"l.weight", "n.weight"}));
  EXPECT_EQ(c.find("l.weight_scale_inv"), nullptr);
  EXPECT_EQ(c.fp8_scale_names(), std::vector<std::string>{"l.weight_scale_inv"});
  EXPECT_EQ(c.quantization().scheme, "fp8-block");
  const CheckpointTensor& t = c.at("l.weight");
  ASSERT_NE(t.fp8_block_scales(), nullptr);
  EXPECT_TRUE(t.readable_as_f32());
  std::vector<float> v(650);
  t.read_f32(0, 650, v.data());
  EXPECT_EQ(v[0], 0.5f);
  EXPECT_EQ(v[649], 0.5f);
  EXPECT_EQ(c.find("n.weight")->fp8_block_scales(), nullptr);
  // Without config.json: 128x128, said so.
  Checkpoint d = Checkpoint::open(make("noconfig", {2, 1}, "").string());
  EXPECT_NE(d.quantization().block_source.find("no quantization_config"), std::string::npos);
  expect_error(make("badshape", {1, 1}, ""), "l.weight_scale_inv\": shape [1, 1] does not fit");
  expect_error(make("badblock", {2, 1}, R"({"quantization_config": {"weight_block_size": [0, 128]}})"),
               "quantization_config.weight_block_size [0,128] is not two positive integers");
}

TEST(ModelDir, SideFilesExcludeWeightsCardRecipeAndHiddenFiles) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  for (const char* f : {"config.json", "tokenizer.json", "README.md", "chatvec.json", ".gitattributes",
                        "pytorch_model.bin", "model.gguf", "tokenizer.gguf"})
    write_file((tmp / "m" / f).string(), "{}");
  EXPECT_EQ(side_files((tmp / "m").string()),
            (std::vector<std::string>{"config.json", "tokenizer.gguf", "tokenizer.json"}));
  fs::create_directories(tmp / "out");
  write_file((tmp / "out" / "config.json").string(), "old");
  EXPECT_EQ(copy_side_files((tmp / "m").string(), (tmp / "out").string()),
            (std::vector<std::string>{"config.json", "tokenizer.gguf", "tokenizer.json"}));
  EXPECT_EQ(read_file((tmp / "out" / "config.json").string()), "{}");
  EXPECT_FALSE(fs::exists(tmp / "out" / "README.md"));
}

TEST(Checkpoint, SingleFile) {
  testing::TempDir tmp;
  make_sharded(tmp / "m");
  Checkpoint c = Checkpoint::open((tmp / "m" / "model-00002-of-00002.safetensors").string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"y", "z"}));
}

}  // namespace
}  // namespace chatvec

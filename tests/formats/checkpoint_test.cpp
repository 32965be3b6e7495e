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
  expect_error(tmp / "e", "no model.safetensors or model.safetensors.index.json");
  write_file((tmp / "e" / "pytorch_model.bin").string(), "x");
  expect_error(tmp / "e", "only safetensors is supported");
  expect_error(tmp / "missing", "no such file or directory");
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

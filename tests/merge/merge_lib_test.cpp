// In-process tests of the merge library: the plan (every decision), the
// vocabulary policies, the executor (chunking, sizes), and the pipeline end
// to end on small models written by the test.  The CLI tests
// (tests/cli/) are the outer layer; these call the library directly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/checkpoint.h"
#include "formats/model_dir.h"
#include "formats/safetensors/safetensors_writer.h"
#include "merge/executor.h"
#include "merge/pipeline.h"
#include "merge/plan.h"
#include "merge/vocab_policy.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

// A tensor to write: float values stored in `dtype`, or integers for I64.
struct Tensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<float> values;  // numel values (I64: cast to integers)
};

uint64_t numel_of(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<uint8_t> encode(const Tensor& t) {
  const uint64_t n = numel_of(t.shape);
  std::vector<uint8_t> bytes(n * dtype_bits(t.dtype) / 8);
  if (t.dtype == DType::I64) {
    for (uint64_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(t.values[i]);
      std::memcpy(bytes.data() + 8 * i, &v, 8);
    }
  } else if (dtype_converts_to_f32(t.dtype)) {
    convert_from_f32(t.values.data(), n, t.dtype, bytes.data());
  } else {
    for (uint64_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(t.values[i % t.values.size()]);
  }
  return bytes;
}

// Write `tensors` as a checkpoint directory (sharded by `shard_bytes`).
void write_model(const fs::path& dir, const std::vector<Tensor>& tensors, uint64_t shard_bytes = 1u << 30,
                 const Json& config = Json()) {
  fs::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(dir.string(), specs, shard_bytes, {{"format", "pt"}});
  for (const auto& t : tensors) {
    const auto b = encode(t);
    w.append(b.data(), b.size());
  }
  w.finish();
  if (!config.is_null()) write_file((dir / "config.json").string(), dump_json_pretty(config));
}

std::vector<float> random_values(uint64_t n, uint32_t seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A small Llama-shaped tensor list: vocabulary V, width H, two layers.
std::vector<Tensor> llama_like(uint64_t V, uint64_t H, uint32_t seed, DType dt = DType::BF16) {
  std::vector<Tensor> t;
  uint32_t s = seed * 1000;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape) {
    t.push_back({name, dt, shape, random_values(numel_of(shape), s++)});
  };
  add("model.embed_tokens.weight", {V, H});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {H, H});
    add(p + "mlp.up_proj.weight", {2 * H, H});
  }
  add("model.norm.weight", {H});
  add("lm_head.weight", {V, H});
  return t;
}

// Values of a checkpoint tensor as fp32.
std::vector<float> values_of(const CheckpointTensor& t) {
  std::vector<float> v(t.numel());
  convert_to_f32(t.dtype(), t.data(), t.numel(), v.data());
  return v;
}
std::vector<uint8_t> bytes_of(const CheckpointTensor& t) { return {t.data(), t.data() + t.nbytes()}; }

// The merge of one element, as PyTorch computes it: fp32, no FMA, rounded
// to `out` once.
float merged(float target, float chat, float base, double ratio) {
  const float d = chat - base;
  const float r = float(ratio);
  return target + (r == 1.0f ? d : r * d);
}
float round_to(float x, DType dt) {
  float y;
  uint8_t b[8];
  convert_from_f32(&x, 1, dt, b);
  convert_to_f32(dt, b, 1, &y);
  return y;
}

template <typename F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// ---- the plan ----------------------------------------------------------------

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto base = llama_like(32, 8, 1);
    base.push_back({"model.layers.0.steps", DType::I64, {3}, {1, 2, 3}});
    write_model(tmp_ / "base", base);
    auto chat = llama_like(32, 8, 2);
    chat.push_back({"model.layers.0.steps", DType::I64, {3}, {4, 5, 6}});
    write_model(tmp_ / "chat", chat);
    auto target = llama_like(32, 8, 3);
    target.push_back({"model.layers.0.steps", DType::I64, {3}, {7, 8, 9}});
    write_model(tmp_ / "target", target, 3000);  // several shards
  }
  Checkpoint open(const std::string& n) { return Checkpoint::open((tmp_ / n).string()); }
  testing::TempDir tmp_;
};

TEST_F(PlanTest, MergeCombinesFloatTensorsAndCopiesTheRest) {
  Checkpoint base = open("base"), chat = open("chat"), target = open("target");
  PlanInputs in{&target, {VectorSource{0.5, &chat, &base, nullptr, "chat"}}};
  PlanOptions opt;
  opt.selection = make_selection({}, {"norm"});
  const MergePlan plan = build_plan(in, opt);
  ASSERT_EQ(plan.tasks.size(), target.names().size());
  for (size_t i = 0; i < plan.tasks.size(); ++i) {
    const TensorTask& t = plan.tasks[i];
    EXPECT_EQ(t.name, target.names()[i]) << "output follows the target's storage order";
    EXPECT_EQ(t.target, target.find(t.name));
    if (t.name == "model.layers.0.steps") {
      EXPECT_EQ(t.kind, TaskKind::Copy);
      EXPECT_EQ(t.note, "integer/bool tensor");
      EXPECT_EQ(t.dtype, DType::I64);
    } else if (t.name.find("norm") != std::string::npos) {
      EXPECT_EQ(t.kind, TaskKind::Copy);
      EXPECT_EQ(t.note, "outside the selection");
    } else {
      EXPECT_EQ(t.kind, TaskKind::Combine) << t.name;
      ASSERT_EQ(t.terms.size(), 1u);
      EXPECT_EQ(t.terms[0].chat, chat.find(t.name));
      EXPECT_EQ(t.terms[0].base, base.find(t.name));
      EXPECT_EQ(t.terms[0].vector, nullptr);
      EXPECT_EQ(t.terms[0].ratio, 0.5);
      EXPECT_EQ(t.dtype, DType::BF16);
    }
  }
  EXPECT_EQ(plan.copied, 4u);  // 3 norms + the integer buffer
  EXPECT_EQ(plan.combined, plan.tasks.size() - 4);
  uint64_t read = 0, written = 0;
  for (const auto& t : plan.tasks) {
    written += t.nbytes();
    for (const auto* in_t : t.inputs()) read += in_t->nbytes();
  }
  EXPECT_EQ(plan.bytes_read, read);
  EXPECT_EQ(plan.bytes_written, written);
}

TEST_F(PlanTest, OutputDtypeAndKeepTarget) {
  Checkpoint base = open("base"), chat = open("chat"), target = open("target");
  PlanOptions opt;
  opt.dtype = DType::F32;
  opt.keep_target["lm_head.weight"] = "--embeddings skip";
  const MergePlan plan = build_plan({&target, {VectorSource{1.0, &chat, &base, nullptr, "chat"}}}, opt);
  for (const auto& t : plan.tasks) {
    if (t.name == "lm_head.weight") {
      EXPECT_EQ(t.kind, TaskKind::Copy);
      EXPECT_EQ(t.note, "--embeddings skip");
      EXPECT_EQ(t.dtype, DType::BF16) << "a copied tensor keeps its bytes";
    } else if (t.kind == TaskKind::Combine) {
      EXPECT_EQ(t.dtype, DType::F32);
    }
  }
}

TEST_F(PlanTest, ExtractHasNoTargetAndDropsWhatItDoesNotCombine) {
  Checkpoint base = open("base"), chat = open("chat");
  const MergePlan plan = build_plan({nullptr, {VectorSource{1.0, &chat, &base, nullptr, "chat"}}}, {});
  EXPECT_EQ(plan.copied, 0u);
  for (const auto& t : plan.tasks) {
    EXPECT_EQ(t.kind, TaskKind::Combine);
    EXPECT_EQ(t.target, nullptr);
    EXPECT_NE(t.name, "model.layers.0.steps");
  }
  EXPECT_EQ(plan.tasks.size(), chat.names().size() - 1);
}

TEST_F(PlanTest, RefusalsNameTheTensorAndTheModel) {
  Checkpoint base = open("base"), target = open("target");
  // Missing from the chat model.
  auto missing = llama_like(32, 8, 2);
  missing.erase(missing.begin() + 2);
  write_model(tmp_ / "chat_missing", missing);
  Checkpoint cm = open("chat_missing");
  EXPECT_NE(input_error_of([&] { build_plan({&target, {VectorSource{1.0, &cm, &base, nullptr, "chat"}}}, {}); })
                .find("tensor \"model.layers.0.self_attn.q_proj.weight\" is missing from the chat model"),
            std::string::npos);
  // A shape that differs.
  auto shaped = llama_like(32, 8, 2);
  shaped[2].shape = {4, 16};
  write_model(tmp_ / "chat_shape", shaped);
  Checkpoint cs = open("chat_shape");
  const std::string shape_error =
      input_error_of([&] { build_plan({&target, {VectorSource{1.0, &cs, &base, nullptr, "chat"}}}, {}); });
  EXPECT_NE(shape_error.find("has shape [8, 8] in " + target.path() + " but [4, 16] in " + cs.path()),
            std::string::npos)
      << shape_error;
  // A tensor the chat model has and the target lacks.
  auto extra = llama_like(32, 8, 2);
  extra.push_back({"model.extra.weight", DType::BF16, {4}, {1, 2, 3, 4}});
  write_model(tmp_ / "chat_extra", extra);
  Checkpoint ce = open("chat_extra");
  EXPECT_NE(input_error_of([&] { build_plan({&target, {VectorSource{1.0, &ce, &base, nullptr, "chat"}}}, {}); })
                .find("tensor \"model.extra.weight\" (BF16 [4]) of the chat model"),
            std::string::npos);
  // A dtype with no arithmetic.
  auto fp8 = llama_like(32, 8, 2);
  fp8[1].dtype = DType::F8_E4M3;
  write_model(tmp_ / "chat_fp8", fp8);
  Checkpoint cf = open("chat_fp8");
  EXPECT_NE(input_error_of([&] { build_plan({&target, {VectorSource{1.0, &cf, &base, nullptr, "chat"}}}, {}); })
                .find("has dtype F8_E4M3: arithmetic is supported on F16, BF16, F32 and F64 only"),
            std::string::npos);
  // A bad selection pattern names the flag.
  EXPECT_NE(input_error_of([] { make_selection({"("}, {}); }).find("--include \"(\": invalid regular expression"),
            std::string::npos);
}

TEST_F(PlanTest, ReadyMadeVectorsMayLackTensors) {
  Checkpoint target = open("target");
  auto partial = llama_like(32, 8, 4);
  partial.resize(3);  // embedding and layer 0's first two
  write_model(tmp_ / "vec", partial);
  Checkpoint vec = open("vec");
  const MergePlan plan = build_plan({&target, {VectorSource{2.0, nullptr, nullptr, &vec, "vector vec"}}}, {});
  size_t combined = 0;
  for (const auto& t : plan.tasks) {
    if (vec.find(t.name)) {
      ASSERT_EQ(t.kind, TaskKind::Combine);
      EXPECT_EQ(t.terms[0].vector, vec.find(t.name));
      EXPECT_EQ(t.terms[0].chat, nullptr);
      ++combined;
    } else {
      EXPECT_EQ(t.kind, TaskKind::Copy);
    }
  }
  EXPECT_EQ(combined, 3u);
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_NE(plan.notes[0].find("are not in every vector and are copied unchanged"), std::string::npos);
}

TEST_F(PlanTest, RowMapsMakeRowsTasksAndAreBoundsChecked) {
  Checkpoint base = open("base"), chat = open("chat"), target = open("target");
  auto map = std::make_shared<RowMap>();
  for (int64_t i = 0; i < 32; ++i) map->rows.push_back(RowOp{RowOp::Combine, i, i, i});
  map->rows.push_back(RowOp{RowOp::FromChat, -1, 5, -1});  // a transplanted token
  PlanOptions opt;
  opt.row_maps["model.embed_tokens.weight"] = map;
  const MergePlan plan = build_plan({&target, {VectorSource{1.0, &chat, &base, nullptr, "chat"}}}, opt);
  const TensorTask& emb = plan.tasks[0];
  ASSERT_EQ(emb.name, "model.embed_tokens.weight");
  EXPECT_EQ(emb.kind, TaskKind::Rows);
  EXPECT_EQ(emb.shape, (std::vector<uint64_t>{33, 8}));

  auto bad = std::make_shared<RowMap>(*map);
  bad->rows.push_back(RowOp{RowOp::KeepTarget, 32, -1, -1});  // the target has 32 rows
  opt.row_maps["model.embed_tokens.weight"] = bad;
  EXPECT_THROW(build_plan({&target, {VectorSource{1.0, &chat, &base, nullptr, "chat"}}}, opt), std::logic_error);
}

// ---- the executor ---------------------------------------------------------------

class ExecutorTest : public ::testing::Test {
 protected:
  // Merge base/chat/target with `chunk` bytes per step; returns the output
  // checkpoint's bytes per tensor.
  std::map<std::string, std::vector<uint8_t>> run(uint64_t chunk, const std::optional<DType>& dtype = {}) {
    Checkpoint base = Checkpoint::open((tmp_ / "base").string());
    Checkpoint chat = Checkpoint::open((tmp_ / "chat").string());
    Checkpoint target = Checkpoint::open((tmp_ / "target").string());
    PlanOptions opt;
    opt.dtype = dtype;
    const MergePlan plan = build_plan({&target, {VectorSource{0.37, &chat, &base, nullptr, "chat"}}}, opt);
    const fs::path out = tmp_ / ("out" + std::to_string(runs_++));
    fs::create_directories(out);
    ExecuteOptions eo;
    eo.chunk_bytes = chunk;
    eo.shard_size = 5000;
    uint64_t last = 0, total = 0;
    eo.progress = [&](uint64_t d, uint64_t t) {
      EXPECT_GE(d, last);
      last = d;
      total = t;
    };
    execute_plan(plan, out.string(), eo);
    EXPECT_EQ(last, total);
    EXPECT_EQ(total, planned_output_bytes(plan, eo));
    Checkpoint o = Checkpoint::open(out.string());
    std::map<std::string, std::vector<uint8_t>> r;
    for (const auto& n : o.names()) r[n] = bytes_of(o.at(n));
    return r;
  }
  void write_inputs(const std::vector<Tensor>& shapes) {
    uint32_t seed = 7;
    for (const char* m : {"base", "chat", "target"}) {
      std::vector<Tensor> t = shapes;
      for (auto& x : t)
        if (x.dtype != DType::I64) x.values = random_values(numel_of(x.shape), seed++, 1.0f);
      write_model(tmp_ / m, t, 4000);
    }
  }
  testing::TempDir tmp_;
  int runs_ = 0;
};

TEST_F(ExecutorTest, EveryChunkSizeGivesTheSameBytesAsTheElementwiseReference) {
  std::vector<Tensor> shapes = {
      {"big.bf16", DType::BF16, {100, 101}, {}},  // far larger than a chunk
      {"mid.f16", DType::F16, {777}, {}},
      {"f32", DType::F32, {3, 5, 7}, {}},
      {"empty", DType::BF16, {0, 16}, {}},  // zero-size tensors
      {"scalar", DType::F32, {}, {}},
      {"steps", DType::I64, {5}, {1, 2, 3, 4, 5}},
  };
  for (int i = 0; i < 300; ++i) shapes.push_back({"tiny." + std::to_string(i), DType::BF16, {1}, {}});  // many tiny ones
  write_inputs(shapes);
  const auto want = run(16u << 20);
  // The reference: every element from the definition.
  Checkpoint base = Checkpoint::open((tmp_ / "base").string());
  Checkpoint chat = Checkpoint::open((tmp_ / "chat").string());
  Checkpoint target = Checkpoint::open((tmp_ / "target").string());
  for (const auto& s : shapes) {
    const CheckpointTensor& t = target.at(s.name);
    ASSERT_EQ(want.at(s.name).size(), t.nbytes()) << s.name;
    if (s.dtype == DType::I64) {
      EXPECT_EQ(want.at(s.name), bytes_of(t));
      continue;
    }
    const auto tv = values_of(t), cv = values_of(chat.at(s.name)), bv = values_of(base.at(s.name));
    std::vector<float> expect(tv.size());
    for (size_t i = 0; i < tv.size(); ++i) expect[i] = merged(tv[i], cv[i], bv[i], 0.37);
    std::vector<uint8_t> bytes(t.nbytes());
    convert_from_f32(expect.data(), expect.size(), s.dtype, bytes.data());
    EXPECT_EQ(want.at(s.name), bytes) << s.name;
  }
  // Chunks that split elements' runs anywhere, down to one element.
  for (uint64_t chunk : {uint64_t(2), uint64_t(7), uint64_t(64), uint64_t(1000), uint64_t(4096 + 2)})
    EXPECT_EQ(run(chunk), want) << "chunk " << chunk;
  // And with an output dtype.
  const auto f32 = run(16u << 20, DType::F32);
  const auto f32_small = run(12, DType::F32);
  EXPECT_EQ(f32, f32_small);
  EXPECT_EQ(f32.at("big.bf16").size(), 100u * 101u * 4u);
}

TEST_F(ExecutorTest, RowsTasksFollowTheirMapInEveryChunkSize) {
  write_inputs({{"model.embed_tokens.weight", DType::BF16, {40, 24}, {}}, {"w", DType::BF16, {8}, {}}});
  Checkpoint base = Checkpoint::open((tmp_ / "base").string());
  Checkpoint chat = Checkpoint::open((tmp_ / "chat").string());
  Checkpoint target = Checkpoint::open((tmp_ / "target").string());
  auto map = std::make_shared<RowMap>();
  for (int64_t i = 0; i < 40; ++i)
    map->rows.push_back(i % 3 == 0   ? RowOp{RowOp::KeepTarget, i, -1, -1}
                        : i % 3 == 1 ? RowOp{RowOp::Combine, i, 39 - i, (i * 7) % 40}
                                     : RowOp{RowOp::Combine, i, i, i});
  map->rows.push_back(RowOp{RowOp::FromChat, -1, 17, -1});
  PlanOptions opt;
  opt.row_maps["model.embed_tokens.weight"] = map;
  const MergePlan plan = build_plan({&target, {VectorSource{-0.25, &chat, &base, nullptr, "chat"}}}, opt);
  const auto tv = values_of(target.at("model.embed_tokens.weight")),
             cv = values_of(chat.at("model.embed_tokens.weight")), bv = values_of(base.at("model.embed_tokens.weight"));
  std::vector<float> expect;
  for (const RowOp& r : map->rows)
    for (int c = 0; c < 24; ++c) {
      if (r.kind == RowOp::KeepTarget) expect.push_back(tv[r.target_row * 24 + c]);
      else if (r.kind == RowOp::FromChat) expect.push_back(cv[r.chat_row * 24 + c]);
      else expect.push_back(merged(tv[r.target_row * 24 + c], cv[r.chat_row * 24 + c], bv[r.base_row * 24 + c], -0.25));
    }
  std::vector<uint8_t> want(expect.size() * 2);
  convert_from_f32(expect.data(), expect.size(), DType::BF16, want.data());
  for (uint64_t chunk : {uint64_t(1), uint64_t(48), uint64_t(100), uint64_t(16u << 20)}) {
    const fs::path out = tmp_ / ("rows" + std::to_string(chunk));
    fs::create_directories(out);
    ExecuteOptions eo;
    eo.chunk_bytes = chunk;
    execute_plan(plan, out.string(), eo);
    Checkpoint o = Checkpoint::open(out.string());
    EXPECT_EQ(o.at("model.embed_tokens.weight").shape(), (std::vector<uint64_t>{41, 24}));
    EXPECT_EQ(bytes_of(o.at("model.embed_tokens.weight")), want) << "chunk " << chunk;
  }
}

// Rows the plan copies (KeepTarget: the target's own; FromChat: the chat
// model's row of a transplanted token) are the source's bytes exactly, NaN
// payloads, signalling NaNs and subnormals included, as whole tensors copied
// from the target are.  Only when the output dtype differs are they
// converted (rounded like every other element).
TEST_F(ExecutorTest, CopiedRowsAreTheSourcesBytesExactly) {
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    const size_t es = dtype_bits(dt) / 8;
    write_inputs({{"model.embed_tokens.weight", dt, {6, 16}, {}}});
    // Unusual bit patterns in the rows that are copied: NaNs with payloads
    // (quiet and signalling, both signs), -0, the smallest subnormal.
    auto poke = [&](const char* model, uint64_t row) {
      const fs::path f = tmp_ / model / "model.safetensors";
      uint64_t off;
      {
        Checkpoint c = Checkpoint::open((tmp_ / model).string());
        off = c.at("model.embed_tokens.weight").file_offset() + row * 16 * es;
      }
      std::vector<uint8_t> b(16 * es);
      const uint64_t patterns16[] = {0x7F81, 0xFF81, 0x7FC5, 0xFFFE, 0x8000, 0x0001, 0x7D01, 0xFE01};
      const uint64_t patterns_f16[] = {0x7C01, 0xFC01, 0x7E05, 0xFFFE, 0x8000, 0x0001, 0x7D01, 0xFE01};
      const uint64_t patterns32[] = {0x7F800001, 0xFF800001, 0x7FC00005, 0xFFFFFFFE, 0x80000000, 0x00000001,
                                     0x7FA00001, 0xFFC12345};
      for (size_t i = 0; i < 16; ++i) {
        const uint64_t v = dt == DType::BF16 ? patterns16[i % 8] : dt == DType::F16 ? patterns_f16[i % 8] : patterns32[i % 8];
        std::memcpy(b.data() + i * es, &v, es);  // little endian
      }
      std::FILE* fp = std::fopen(f.c_str(), "r+b");
      ASSERT_TRUE(fp);
      std::fseek(fp, long(off), SEEK_SET);
      std::fwrite(b.data(), 1, b.size(), fp);
      std::fclose(fp);
    };
    poke("target", 1);
    poke("target", 4);
    poke("chat", 2);
    Checkpoint base = Checkpoint::open((tmp_ / "base").string());
    Checkpoint chat = Checkpoint::open((tmp_ / "chat").string());
    Checkpoint target = Checkpoint::open((tmp_ / "target").string());
    auto map = std::make_shared<RowMap>();
    map->rows = {RowOp{RowOp::Combine, 0, 0, 0}, RowOp{RowOp::KeepTarget, 1, -1, -1}, RowOp{RowOp::Combine, 2, 3, 3},
                 RowOp{RowOp::KeepTarget, 4, -1, -1}, RowOp{RowOp::FromChat, -1, 2, -1}};
    PlanOptions opt;
    opt.row_maps["model.embed_tokens.weight"] = map;
    const MergePlan plan = build_plan({&target, {VectorSource{0.5, &chat, &base, nullptr, "chat"}}}, opt);
    const fs::path out = tmp_ / ("exact_" + std::string(dtype_name(dt)));
    fs::create_directories(out);
    execute_plan(plan, out.string(), ExecuteOptions{});
    Checkpoint o = Checkpoint::open(out.string());
    const auto& oe = o.at("model.embed_tokens.weight");
    const auto& te = target.at("model.embed_tokens.weight");
    const auto& ce = chat.at("model.embed_tokens.weight");
    const size_t rb = 16 * es;
    EXPECT_EQ(std::memcmp(oe.row(1), te.row(1), rb), 0) << dtype_name(dt) << ": kept target row 1";
    EXPECT_EQ(std::memcmp(oe.row(3), te.row(4), rb), 0) << dtype_name(dt) << ": kept target row 4";
    EXPECT_EQ(std::memcmp(oe.row(4), ce.row(2), rb), 0) << dtype_name(dt) << ": transplanted chat row 2";
    // A combined row is still rounded as before: element by element.
    const auto tv = values_of(te), cv = values_of(ce), bv = values_of(base.at("model.embed_tokens.weight"));
    std::vector<float> want(16);
    for (int c = 0; c < 16; ++c) want[size_t(c)] = merged(tv[2 * 16 + c], cv[3 * 16 + c], bv[3 * 16 + c], 0.5);
    std::vector<uint8_t> wb(rb);
    convert_from_f32(want.data(), 16, dt, wb.data());
    EXPECT_EQ(std::memcmp(oe.row(2), wb.data(), rb), 0) << dtype_name(dt);
    for (const char* m : {"base", "chat", "target"}) fs::remove_all(tmp_ / m);
  }
}

// ---- the vocabulary policies ----------------------------------------------------

// A tokenizer.json of the given tokens (BPE, no merges), the last
// `special` of them added special tokens.
void write_tokenizer(const fs::path& dir, const std::vector<std::string>& tokens, size_t special = 0,
                     const std::string& eos = "") {
  Json vocab = Json::object(), added = Json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i + special >= tokens.size()) added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
    else vocab[tokens[i]] = i;
  }
  Json tj = {{"version", "1.0"},
             {"added_tokens", added},
             {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}}};
  write_file((dir / "tokenizer.json").string(), dump_json_pretty(tj));
  if (!eos.empty()) write_file((dir / "tokenizer_config.json").string(), dump_json_pretty(Json{{"eos_token", eos}}));
}

std::vector<std::string> words(size_t n, const std::string& prefix = "w") {
  std::vector<std::string> w{"<unk>", "<s>", "</s>"};
  for (size_t i = w.size(); i < n; ++i) w.push_back(prefix + std::to_string(i));
  return w;
}

class VocabTest : public ::testing::Test {
 protected:
  // base: V tokens; chat: base + <|end|> (special); target as given.
  void make(const std::vector<std::string>& target_tokens, uint64_t target_rows = 0) {
    const auto base_tokens = words(20);
    auto chat_tokens = base_tokens;
    chat_tokens.push_back("<|end|>");
    auto one = [&](const char* name, const std::vector<std::string>& toks, uint64_t rows, size_t special, uint32_t seed) {
      write_model(tmp_ / name, llama_like(rows ? rows : toks.size(), 8, seed));
      write_tokenizer(tmp_ / name, toks, special, special ? "<|end|>" : "</s>");
    };
    one("base", base_tokens, 0, 0, 1);
    one("chat", chat_tokens, 0, 1, 2);
    one("target", target_tokens, target_rows, 0, 3);
  }
  VocabDecision decide(EmbeddingPolicy p, bool transplant = true) {
    base_ = std::make_unique<Checkpoint>(Checkpoint::open((tmp_ / "base").string()));
    chat_ = std::make_unique<Checkpoint>(Checkpoint::open((tmp_ / "chat").string()));
    target_ = std::make_unique<Checkpoint>(Checkpoint::open((tmp_ / "target").string()));
    return decide_vocabulary(*base_, *chat_, *target_, VocabOptions{p, transplant});
  }
  testing::TempDir tmp_;
  std::unique_ptr<Checkpoint> base_, chat_, target_;
};

TEST_F(VocabTest, IdenticalVocabulariesAreFullAndTheEndTokenIsAppended) {
  make(words(20));
  const VocabDecision d = decide(EmbeddingPolicy::Auto);
  EXPECT_EQ(d.policy, EmbeddingPolicy::Full);
  ASSERT_EQ(d.transplants.size(), 1u);
  EXPECT_EQ(d.transplants[0].content, "<|end|>");
  EXPECT_EQ(d.transplants[0].chat_id, 20);
  EXPECT_EQ(d.transplants[0].output_id, 20);
  EXPECT_TRUE(d.transplants[0].appended);
  ASSERT_TRUE(d.row_map);
  ASSERT_EQ(d.row_map->rows.size(), 21u);
  for (int64_t i = 0; i < 20; ++i) {
    const RowOp& r = d.row_map->rows[size_t(i)];
    EXPECT_EQ(r.kind, RowOp::Combine);
    EXPECT_EQ(r.target_row, i);
    EXPECT_EQ(r.chat_row, i);
    EXPECT_EQ(r.base_row, i);
  }
  EXPECT_EQ(d.row_map->rows[20].kind, RowOp::FromChat);
  EXPECT_EQ(d.row_map->rows[20].chat_row, 20);
  EXPECT_EQ(d.rows_output, 21u);
}

TEST_F(VocabTest, AppendedTargetIsSharedAndPaddingIsCounted) {
  auto t = words(20);
  for (int i = 0; i < 5; ++i) t.push_back("new" + std::to_string(i));
  make(t, 32);  // 25 tokens, 32 rows: 7 padding rows
  const VocabDecision d = decide(EmbeddingPolicy::Auto);
  EXPECT_EQ(d.policy, EmbeddingPolicy::Shared);
  EXPECT_EQ(d.rows_combined, 20u);
  EXPECT_EQ(d.rows_target_kept, 5u);
  ASSERT_EQ(d.transplants.size(), 1u);
  EXPECT_EQ(d.transplants[0].output_id, 25) << "a padding row becomes the token's";
  EXPECT_EQ(d.rows_output, 32u);
  EXPECT_EQ(d.rows_padding, 6u);
  EXPECT_EQ(d.row_map->rows[25].kind, RowOp::FromChat);
  for (int64_t i = 20; i < 25; ++i) EXPECT_EQ(d.row_map->rows[size_t(i)].kind, RowOp::KeepTarget);
}

TEST_F(VocabTest, ReorderedTargetIsAlignedByTokenString) {
  auto t = words(20);
  std::reverse(t.begin() + 3, t.end());
  make(t);
  const VocabDecision d = decide(EmbeddingPolicy::Auto);
  EXPECT_EQ(d.policy, EmbeddingPolicy::Align);
  for (int64_t i = 3; i < 20; ++i) {
    const RowOp& r = d.row_map->rows[size_t(i)];
    EXPECT_EQ(r.kind, RowOp::Combine);
    EXPECT_EQ(r.target_row, i);
    EXPECT_EQ(r.base_row, 22 - i) << "the base row of the same token";
    EXPECT_EQ(r.chat_row, 22 - i);
  }
}

TEST_F(VocabTest, TargetThatHasTheTokenGetsTheRowAtItsOwnId) {
  auto t = words(20);
  t[7] = "<|end|>";
  make(t);
  const VocabDecision d = decide(EmbeddingPolicy::Shared);
  ASSERT_EQ(d.transplants.size(), 1u);
  EXPECT_EQ(d.transplants[0].output_id, 7);
  EXPECT_FALSE(d.transplants[0].appended);
  EXPECT_EQ(d.row_map->rows[7].kind, RowOp::FromChat);
  EXPECT_EQ(d.row_map->rows.size(), 20u);
}

TEST_F(VocabTest, SkipKeepsTheTargetsTensorsAndNoneTransplantsNothing) {
  make(words(20));
  const VocabDecision skip = decide(EmbeddingPolicy::Skip, /*transplant=*/false);
  EXPECT_TRUE(skip.skip_tensors);
  EXPECT_FALSE(skip.row_map);
  EXPECT_TRUE(skip.transplants.empty());
  const VocabDecision full = decide(EmbeddingPolicy::Full, /*transplant=*/false);
  ASSERT_TRUE(full.row_map) << "the chat model has a row more than the base: the tensors are gathered by rows";
  ASSERT_EQ(full.row_map->rows.size(), 20u);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(full.row_map->rows[size_t(i)].kind, RowOp::Combine);
  bool warned = false;
  for (const auto& n : full.notes) warned |= n.find("not transplanted (--special-tokens none)") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST_F(VocabTest, FullOnDifferentShapesIsAnErrorWithTheChoices) {
  auto t = words(20);
  t.push_back("extra");
  make(t);
  EXPECT_NE(input_error_of([&] { decide(EmbeddingPolicy::Full); })
                .find("--embeddings full needs equal embedding shapes, but the base has 20 rows and the target 21"),
            std::string::npos);
}

// ---- the pipeline end to end ------------------------------------------------------

class CapturingReporter : public JobReporter {
 public:
  void line(const std::string& t) override { lines.push_back(t); }
  void warning(const std::string& t) override { warnings.push_back(t); }
  void progress(uint64_t d, uint64_t t) override {
    done = d;
    total = t;
  }
  bool said(const std::string& needle) const {
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::vector<std::string> lines, warnings;
  uint64_t done = 0, total = 0;
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Json config = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 21}, {"hidden_size", 8},
                         {"torch_dtype", "bfloat16"}};
    auto tokens = words(20);
    write_model(tmp_ / "base", llama_like(20, 8, 1), 1u << 30, config);
    write_tokenizer(tmp_ / "base", tokens, 0, "</s>");
    tokens.push_back("<|end|>");
    write_model(tmp_ / "chat", llama_like(21, 8, 2), 1u << 30, config);
    write_tokenizer(tmp_ / "chat", tokens, 1, "<|end|>");
    write_file((tmp_ / "chat" / "chat_template.jinja").string(), "{% for m in messages %}{{ m.content }}<|end|>{% endfor %}");
    auto tgt = words(20);
    write_model(tmp_ / "target", llama_like(20, 8, 3), 2500, config);
    write_tokenizer(tmp_ / "target", tgt, 0, "</s>");
    write_file((tmp_ / "target" / "generation_config.json").string(), dump_json_pretty(Json{{"eos_token_id", 2}}));
    write_file((tmp_ / "target" / "README.md").string(), "the target's own card");
  }
  MergeJob job(JobKind kind, const std::string& out) {
    MergeJob j;
    j.kind = kind;
    j.base = (tmp_ / "base").string();
    j.chat = (tmp_ / "chat").string();
    j.target = (tmp_ / "target").string();
    j.output = (tmp_ / out).string();
    return j;
  }
  testing::TempDir tmp_;
};

TEST_F(PipelineTest, MergeWritesAModelWithTokenizerTemplateEosAndCard) {
  CapturingReporter r;
  MergeJob j = job(JobKind::Merge, "merged");
  j.ratio = 0.5;
  const JobResult res = run_job(j, r);
  EXPECT_FALSE(res.dry_run);
  EXPECT_EQ(r.done, r.total);
  const fs::path out = tmp_ / "merged";
  Checkpoint o = Checkpoint::open(out.string());
  EXPECT_EQ(o.at("model.embed_tokens.weight").shape(), (std::vector<uint64_t>{21, 8}));
  // The transplanted row is the chat model's, bit for bit.
  Checkpoint chat = Checkpoint::open((tmp_ / "chat").string());
  const auto& oe = o.at("model.embed_tokens.weight");
  EXPECT_EQ(std::memcmp(oe.row(20), chat.at("model.embed_tokens.weight").row(20), 16), 0);
  // Side files, template, EOS, config, card.
  EXPECT_TRUE(fs::exists(out / "tokenizer.json"));
  EXPECT_EQ(read_file((out / "chat_template.jinja").string()), read_file((tmp_ / "chat" / "chat_template.jinja").string()));
  const Json tc = read_json_file((out / "tokenizer_config.json").string());
  EXPECT_EQ(tc["eos_token"], "<|end|>");
  EXPECT_EQ(read_json_file((out / "generation_config.json").string())["eos_token_id"], Json({20, 2}));
  EXPECT_EQ(read_json_file((out / "config.json").string())["vocab_size"], 21);
  const std::string card = read_file((out / "README.md").string());
  EXPECT_NE(card.find("out = target + 0.5 * (chat - base)"), std::string::npos);
  EXPECT_EQ(card.find("the target's own card"), std::string::npos);
  EXPECT_TRUE(r.said("embeddings: full"));
  EXPECT_TRUE(r.said("token \"<|end|>\": chat id 20 -> output id 20 (appended)"));
  EXPECT_TRUE(r.said("eos: the chat model's \"<|end|>\""));
  // Nothing else at the output's parent: no staging, no imports.
  for (const auto& e : fs::directory_iterator(tmp_.path()))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

TEST_F(PipelineTest, ExtractThenApplyInF32EqualsMergeBitForBit) {
  // Equal vocabularies for extract/apply: a chat model without the added token.
  write_model(tmp_ / "chat2", llama_like(20, 8, 2), 700);
  write_tokenizer(tmp_ / "chat2", words(20), 0, "</s>");
  CapturingReporter r;
  MergeJob m = job(JobKind::Merge, "merged");
  m.chat = (tmp_ / "chat2").string();
  m.ratio = 0.7;
  run_job(m, r);
  MergeJob e = job(JobKind::Extract, "vec");
  e.chat = m.chat;
  e.dtype = DType::F32;
  run_job(e, r);
  EXPECT_TRUE(fs::exists(tmp_ / "vec" / "chatvec.json"));
  EXPECT_EQ(read_json_file((tmp_ / "vec" / "chatvec.json").string())["dtype"], "f32");
  EXPECT_FALSE(fs::exists(tmp_ / "vec" / "config.json")) << "a vector is never loadable as a model";
  MergeJob a = job(JobKind::Apply, "applied");
  a.vectors = {ApplyVector{(tmp_ / "vec").string(), 0.7}};
  run_job(a, r);
  Checkpoint mo = Checkpoint::open((tmp_ / "merged").string()), ao = Checkpoint::open((tmp_ / "applied").string());
  ASSERT_EQ(mo.names(), ao.names());
  for (const auto& n : mo.names()) EXPECT_EQ(bytes_of(mo.at(n)), bytes_of(ao.at(n))) << n;
}

TEST_F(PipelineTest, DryRunAndRefusalsWriteNothing) {
  CapturingReporter r;
  MergeJob d = job(JobKind::Merge, "dry");
  d.dry_run = true;
  EXPECT_TRUE(run_job(d, r).dry_run);
  EXPECT_FALSE(fs::exists(tmp_ / "dry"));
  EXPECT_TRUE(r.said("dry run: nothing written"));
  EXPECT_TRUE(r.said("memory: predicted peak"));

  MergeJob nan = job(JobKind::Merge, "nan");
  nan.ratio = std::nan("");
  EXPECT_NE(input_error_of([&] { run_job(nan, r); }).find("--ratio must be a finite number"), std::string::npos);
  MergeJob none = job(JobKind::Apply, "none");
  EXPECT_NE(input_error_of([&] { run_job(none, r); }).find("apply needs at least one --vector"), std::string::npos);
  MergeJob notvec = job(JobKind::Apply, "notvec");
  notvec.vectors = {ApplyVector{(tmp_ / "chat").string(), 1.0}};
  EXPECT_NE(input_error_of([&] { run_job(notvec, r); }).find("not a chat vector made by `chatvec extract`"),
            std::string::npos);
  run_job(job(JobKind::Merge, "once"), r);
  EXPECT_NE(input_error_of([&] { run_job(job(JobKind::Merge, "once"), r); }).find("--force"), std::string::npos);
  for (const char* n : {"nan", "none", "notvec"}) EXPECT_FALSE(fs::exists(tmp_ / n));
  for (const auto& e : fs::directory_iterator(tmp_.path()))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

// ---- the model directory ----------------------------------------------------------

TEST(ChatTemplatePrecedence, OneRuleForEveryCommand) {
  testing::TempDir tmp;
  const fs::path d = tmp.path();
  EXPECT_FALSE(find_chat_template(d.string()));
  write_file((d / "chat_template.json").string(), dump_json_pretty(Json{{"chat_template", "J"}}));
  EXPECT_EQ(find_chat_template(d.string())->text, "J");
  write_file((d / "tokenizer_config.json").string(),
             dump_json_pretty(Json{{"chat_template", Json::array({Json{{"name", "default"}, {"template", "D"}},
                                                                  Json{{"name", "tool_use"}, {"template", "T"}}})}}));
  EXPECT_EQ(find_chat_template(d.string())->text, "D");
  EXPECT_EQ(find_chat_template(d.string(), "tool_use")->text, "T");
  EXPECT_NE(input_error_of([&] { find_chat_template(d.string(), "rag"); }).find("available: default, tool_use"),
            std::string::npos);
  write_file((d / "chat_template.jinja").string(), "JINJA");
  const auto f = find_chat_template(d.string());
  EXPECT_EQ(f->text, "JINJA");
  EXPECT_EQ(f->origin, (d / "chat_template.jinja").string());
  EXPECT_EQ(find_chat_template(d.string(), "tool_use")->text, "T") << "a named template is never the .jinja file";

  // replace_chat_template: the directory's template files give way.
  ChatTemplateFiles files;
  files.tokenizer_config = Json("NEW");
  replace_chat_template(d.string(), files);
  EXPECT_FALSE(fs::exists(d / "chat_template.jinja"));
  EXPECT_FALSE(fs::exists(d / "chat_template.json"));
  EXPECT_EQ(find_chat_template(d.string())->text, "NEW");
}

}  // namespace
}  // namespace chatvec

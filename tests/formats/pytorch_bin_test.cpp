// The PyTorch .bin reader on files written at test time by Debian's
// python3-torch (tests/formats/make_torch_fixtures.py): every tensor's bytes
// equal to what torch says they are; hostile pickles refused without running
// anything (proved: torch.load of the same file does run the payload);
// broken archives refused with clear errors; the zip64 layout; what torch 2.x
// writes (_rebuild_tensor_v3, float8), from a faked torch module.
#include <cstring>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/pytorch/pytorch_bin.h"
#include "formats/pytorch/state_dict_pickle.h"
#include "formats/pytorch/zip_reader.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::shell_quote;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class PytorchBin : public testing::SharedDirSuite<PytorchBin> {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    ok_ = true;
    fs::create_directories(tmp_->path() / "markers");
    const auto r = run_command("/usr/bin/python3 " +
                               shell_quote((testing::source_dir() / "tests/formats/make_torch_fixtures.py").string()) +
                               " " + shell_quote(path("f")) + " " + shell_quote(path("markers")));
    if (r.exit_code != 0) {
      ok_ = false;
      why_ = "fixtures (python3-torch) failed: " + r.err;
      return;
    }
    manifest_ = new Json(read_json_file(path("f/expected.json")));
  }
  static void TearDownTestSuite() {
    delete manifest_;
    manifest_ = nullptr;
    SharedDirSuite::TearDownTestSuite();
  }
  static std::string f(const std::string& rel) { return path("f/" + rel); }
  // The InputError message of opening `rel`.
  static std::string error_of(const std::string& rel) {
    try {
      PytorchBinFile file(f(rel));
    } catch (const InputError& e) {
      return e.what();
    }
    return "(opened without error)";
  }
  static std::string unpickle_error(const std::string& rel) {
    const std::string b = slurp(f(rel));
    try {
      unpickle_state_dict(reinterpret_cast<const uint8_t*>(b.data()), b.size(), rel);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(accepted)";
  }
  inline static Json* manifest_ = nullptr;
};

TEST_F(PytorchBin, EveryTensorEqualsWhatTorchSays) {
  int files = 0, tensors = 0;
  for (const auto& [rel, expect] : manifest_->at("files").items()) {
    SCOPED_TRACE(rel);
    PytorchBinFile file(f(rel));
    const std::string blob = slurp(f(rel + ".expected"));
    ASSERT_EQ(file.tensors().size(), expect.size());
    for (size_t i = 0; i < expect.size(); ++i) {
      const MappedTensor& t = file.tensors()[i];
      const Json& e = expect[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, e["name"].get<std::string>());  // in the state dict's order
      EXPECT_EQ(dtype_name(t.dtype), e["dtype"].get<std::string>());
      EXPECT_EQ(t.shape, e["shape"].get<std::vector<uint64_t>>());
      ASSERT_EQ(t.nbytes, e["nbytes"].get<uint64_t>());
      ASSERT_LE(t.offset + t.nbytes, file.mapped().size());
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(file.data(t)), t.nbytes),
                blob.substr(e["offset"].get<size_t>(), t.nbytes));
      EXPECT_EQ(file.find(t.name), &t);
      ++tensors;
    }
    ++files;
  }
  EXPECT_EQ(files, 10);
  EXPECT_GT(tensors, 100);
}

TEST_F(PytorchBin, TiedWeightsViewsScalarsAndEmptyTensors) {
  PytorchBinFile file(f("real/all_dtypes.bin"));
  const MappedTensor* emb = file.find("embed.weight");
  const MappedTensor* head = file.find("lm_head.weight");
  ASSERT_TRUE(emb && head);
  EXPECT_EQ(emb->offset, head->offset);  // one storage, read once
  EXPECT_EQ(emb->nbytes, 96u);
  const MappedTensor* scalar = file.find("scalar");
  ASSERT_TRUE(scalar);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->nbytes, 4u);
  float v;
  std::memcpy(&v, file.data(*scalar), 4);
  EXPECT_EQ(v, 3.25f);
  const MappedTensor* empty = file.find("empty");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->shape, (std::vector<uint64_t>{0, 4}));
  EXPECT_EQ(empty->nbytes, 0u);
  // torch.save keeps a view's whole storage; the view starts inside it.
  const MappedTensor* view = file.find("view_rows");
  ASSERT_TRUE(view);
  EXPECT_EQ(view->shape, (std::vector<uint64_t>{2, 4}));
  EXPECT_EQ(view->nbytes, 16u);
  EXPECT_EQ(view->offset % 64, 16u);  // torch aligns each storage to 64 bytes; 8 halves in
}

TEST_F(PytorchBin, ShardedWithIndex) {
  const PytorchBinIndex idx = read_pytorch_bin_index(f("sharded/pytorch_model.bin.index.json"));
  ASSERT_EQ(idx.shards, (std::vector<std::string>{"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"}));
  ASSERT_EQ(idx.weight_map.size(), 4u);
  uint64_t total = 0;
  for (const auto& [name, shard] : idx.weight_map) {
    PytorchBinFile file(f("sharded/" + shard));
    const MappedTensor* t = file.find(name);
    ASSERT_TRUE(t) << name << " not in " << shard;
    total += t->nbytes;
  }
  ASSERT_TRUE(idx.total_size);
  EXPECT_EQ(*idx.total_size, total);

  testing::TempDir tmp;
  int n = 0;
  auto index_error = [&](const std::string& text) {
    const std::string p = (tmp / ("i" + std::to_string(n++) + ".json")).string();
    write_file(p, text);
    try {
      read_pytorch_bin_index(p);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(index_error(R"({"weight_map": {"a": "../x.bin"}})").find("invalid shard file \"../x.bin\""), std::string::npos);
  EXPECT_NE(index_error(R"({"weight_map": {"a": 3}})").find("is not a file name"), std::string::npos);
  EXPECT_NE(index_error(R"({"weight_map": {}})").find("weight_map is empty"), std::string::npos);
  EXPECT_NE(index_error(R"({"metadata": {}})").find("no \"weight_map\""), std::string::npos);
  EXPECT_NE(index_error(R"({"weight_map": {"a": "x.bin", "a": "y.bin"}})").find("duplicate"), std::string::npos);
  EXPECT_NE(index_error(R"({"metadata": {"total_size": -1}, "weight_map": {"a": "x.bin"}})").find("total_size"),
            std::string::npos);
}

TEST_F(PytorchBin, NonContiguousTensorRefusedByName) {
  std::string e = error_of("bad/noncontig.bin");
  EXPECT_NE(e.find(f("bad/noncontig.bin") + ": tensor \"transposed\" is not contiguous (size [2, 3], stride [1, 2]"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("v.contiguous()"), std::string::npos) << e;
  e = error_of("bad/strided.bin");
  EXPECT_NE(e.find("tensor \"ok\" is not contiguous (size [2, 1], stride [2, 1]"), std::string::npos) << e;
}

TEST_F(PytorchBin, BrokenAndForeignFilesRefusedClearly) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad/legacy.bin", "legacy format of PyTorch < 1.6"},
      {"bad/empty.bin", "not a PyTorch checkpoint"},
      {"bad/not_zip.bin", "not a PyTorch checkpoint"},
      {"bad/truncated_half.bin", "no zip end-of-central-directory record (not a zip archive, or truncated)"},
      {"bad/truncated_tail.bin", "no zip end-of-central-directory record"},
      {"bad/truncated_in_cd.bin", "no zip end-of-central-directory record"},
      {"bad/bad_cd_signature.bin", "central directory entry 0 is damaged"},
      {"bad/local_name_mismatch.bin", "local header names a different file"},
      {"bad/pkl_crc.bin", "data.pkl\" fails its CRC-32 check"},
      {"bad/count_mismatch.bin", "zip64 end record disagrees with the end record"},
      {"bad/oversized_entry.bin", "overlap"},
      {"bad/missing_storage.bin", "/data/3) is missing from the archive"},
      {"bad/compressed_storage.bin", "/data/0\" is compressed (method 8)"},
      {"bad/short_storage.bin", "storage \"0\" should hold 15 F32 elements but its entry has 58 bytes"},
      {"bad/duplicate_entry.bin", "appears twice in the archive"},
      {"bad/training_ckpt.bin", "state dict entry \"model\" is a dict, not a tensor"},
      {"bad/non_tensor.bin", "state dict entry \"n\" is an int, not a tensor"},
      {"bad/complex.bin", "uses torch.ComplexFloatStorage: complex and quantised tensors are not supported"},
      {"bad/bare_tensor.bin", "the pickled object is a tensor, not a state dict"},
  };
  for (const auto& [rel, want] : cases) {
    const std::string e = error_of(rel);
    EXPECT_NE(e.find(want), std::string::npos) << rel << ": " << e;
    EXPECT_EQ(e.rfind(f(rel), 0), 0u) << "the message names the file: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// Each payload would create markers/NAME when unpickled.  chatvec's reader
// refuses it naming the global (as the file spells it: protocol 2 writes
// Python 2 module names) and creates nothing; torch.load of the same files
// then does create them, so the payloads were live.
TEST_F(PytorchBin, ForeignGlobalsRefusedAndNothingExecuted) {
  const std::map<std::string, std::string> names = {
      {"os_system", "imports posix.system"},         {"stack_global", "imports posix.system"},
      {"builtins_exec", "imports __builtin__.exec"}, {"subprocess", "imports commands.call"},
      {"inst", "opcode 0x69 (INST)"},                {"in_state_dict", "imports posix.system"},
  };
  ASSERT_EQ(manifest_->at("evil").size(), names.size());
  std::string files;
  for (const auto& [name, marker] : manifest_->at("evil").items()) {
    SCOPED_TRACE(name);
    const std::string file = f("evil/" + name + ".bin");
    files += " " + shell_quote(file);
    ASSERT_FALSE(fs::exists(marker.get<std::string>()));
    const std::string e = error_of("evil/" + name + ".bin");
    EXPECT_NE(e.find(names.at(name)), std::string::npos) << e;
    EXPECT_NE(e.find("nothing was executed"), std::string::npos) << e;
    EXPECT_EQ(e.rfind(file, 0), 0u) << e;
    EXPECT_FALSE(fs::exists(marker.get<std::string>())) << "the payload ran";
  }
  // Proof that the payloads are real.
  const auto r = run_command("/usr/bin/python3 -c 'import sys, torch\nfor f in sys.argv[1:]: torch.load(f)'" + files);
  for (const auto& [name, marker] : manifest_->at("evil").items())
    EXPECT_TRUE(fs::exists(marker.get<std::string>())) << "torch.load did not run the payload of " << name << ": " << r.err;
}

TEST_F(PytorchBin, Zip64LayoutAndOtherWriters) {
  // Byte contents are checked in EveryTensorEqualsWhatTorchSays (zip64.bin and
  // pyzip.bin are in the manifest); here the zip64 structures themselves.
  const std::string b = slurp(f("zip64.bin"));
  const auto z = ZipDirectory::parse(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "zip64.bin");
  ASSERT_GT(z.entries().size(), 10u);
  for (const ZipEntry& e : z.entries()) {
    EXPECT_EQ(e.method, 0);
    EXPECT_EQ(e.compressed_size, e.size);
    z.verify_crc(reinterpret_cast<const uint8_t*>(b.data()), e);
  }
  verify_pytorch_storages(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "zip64.bin");
}

TEST_F(PytorchBin, Torch2FormsRebuildV3Float8AndParameters) {
  for (const char* rel : {"crafted/v3.bin", "crafted/v3_proto4.bin"}) {
    SCOPED_TRACE(rel);
    PytorchBinFile file(f(rel));
    ASSERT_EQ(file.tensors().size(), 6u);
    const MappedTensor* w = file.find("w_fp8");
    ASSERT_TRUE(w);
    EXPECT_EQ(w->dtype, DType::F8_E4M3);
    EXPECT_EQ(w->shape, (std::vector<uint64_t>{16, 32}));
    ASSERT_EQ(w->nbytes, 512u);
    for (size_t i = 0; i < 512; ++i) ASSERT_EQ(file.data(*w)[i], i < 256 ? i : 511 - i);
    const MappedTensor* tail = file.find("w_fp8_tail");
    ASSERT_TRUE(tail);
    EXPECT_EQ(tail->offset, w->offset + 256);
    EXPECT_EQ(tail->nbytes, 256u);
    const MappedTensor* u16 = file.find("u16");
    ASSERT_TRUE(u16);
    EXPECT_EQ(u16->dtype, DType::U16);
    ASSERT_EQ(u16->nbytes, 10u);
    uint16_t vals[5];
    std::memcpy(vals, file.data(*u16), 10);
    EXPECT_EQ(vals[0], 2);  // storage offset 1 element
    EXPECT_EQ(vals[2], 65535);
    const MappedTensor* v1 = file.find("v1");
    ASSERT_TRUE(v1);
    float fl[3];
    std::memcpy(fl, file.data(*v1), 12);
    EXPECT_EQ(fl[0], -2.0f);
    EXPECT_EQ(fl[2], 0.25f);
    EXPECT_EQ(file.find("meta")->dtype, DType::F32);
    EXPECT_EQ(file.find("param")->dtype, DType::F16);
  }
}

TEST_F(PytorchBin, UnpicklerValuesAndRefusals) {
  const std::string b = slurp(f("crafted/long1.pkl"));
  const PickledStateDict sd = unpickle_state_dict(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "long1.pkl");
  ASSERT_EQ(sd.tensors.size(), 1u);
  EXPECT_EQ(sd.storages[0].numel, uint64_t(1) << 40);
  EXPECT_EQ(sd.tensors[0].storage_offset, uint64_t(1) << 33);
  EXPECT_EQ(sd.tensors[0].shape, (std::vector<uint64_t>{1u << 20, 1u << 19}));
  EXPECT_NE(unpickle_error("crafted/negative_offset.pkl").find("storage offset is an int, not a non-negative int"), std::string::npos);
  EXPECT_NE(unpickle_error("crafted/hooks.pkl").find("backward hooks"), std::string::npos);
  EXPECT_NE(unpickle_error("crafted/complex.pkl").find("complex"), std::string::npos);
  EXPECT_NE(unpickle_error("crafted/storage_retyped.pkl").find("declared twice with different types"), std::string::npos);
  EXPECT_NE(unpickle_error("crafted/neg_bit.pkl").find("metadata"), std::string::npos);
  EXPECT_NE(unpickle_error("crafted/key_path.pkl").find("invalid storage key \"../0\""), std::string::npos);
}

// Hand-written pickles: the opcodes and structures outside a state dict.
class Pk {
 public:
  explicit Pk(int proto = 2) { s_ = {char(0x80), char(proto)}; }
  Pk& op(unsigned char c) {
    s_ += char(c);
    return *this;
  }
  Pk& raw(std::initializer_list<int> bytes) {
    for (int b : bytes) s_ += char(b);
    return *this;
  }
  Pk& str(std::string_view v) {  // BINUNICODE
    s_ += 'X';
    for (int k = 0; k < 4; ++k) s_ += char((v.size() >> (8 * k)) & 0xff);
    s_ += v;
    return *this;
  }
  Pk& global(std::string_view m, std::string_view n) {
    s_ += 'c';
    s_ += m;
    s_ += '\n';
    s_ += n;
    s_ += '\n';
    return *this;
  }
  Pk& int1(int v) { return op('K').op(uint8_t(v)); }
  Pk& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  // _rebuild_tensor(storage('0', FloatStorage, 1 element), 0, size, stride)
  // with `rank` dimensions of size 1.
  Pk& tensor(int rank = 1) {
    global("torch._utils", "_rebuild_tensor").op('(');
    op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").int1(1).op('t').op('Q');
    int1(0);
    for (int pass = 0; pass < 2; ++pass) {
      op('(');
      for (int i = 0; i < rank; ++i) int1(1);
      op('t');
    }
    return op('t').op('R');
  }
  std::string stop() const { return s_ + "."; }
  const std::string& bytes() const { return s_; }

 private:
  std::string s_;
};

std::string unpickle_bytes_error(const std::string& pk) {
  try {
    unpickle_state_dict(reinterpret_cast<const uint8_t*>(pk.data()), pk.size(), "x.bin (data.pkl)");
  } catch (const InputError& e) {
    return e.what();
  }
  return "(accepted)";
}

#define EXPECT_REFUSED(pickle, text)                                      \
  do {                                                                    \
    const std::string e_ = unpickle_bytes_error(pickle);                  \
    EXPECT_NE(e_.find(text), std::string::npos) << "message: " << e_;     \
  } while (0)

TEST(StateDictPickle, AcceptsTheStateDictShapes) {
  EXPECT_EQ(unpickle_bytes_error(Pk().ordered_dict().stop()), "(accepted)");  // empty
  EXPECT_EQ(unpickle_bytes_error(Pk().op('}').stop()), "(accepted)");
  const std::string one = Pk().op('}').op('(').str("a").tensor().op('u').stop();
  EXPECT_EQ(unpickle_bytes_error(one), "(accepted)");
  const auto sd = unpickle_state_dict(reinterpret_cast<const uint8_t*>(one.data()), one.size(), "x");
  ASSERT_EQ(sd.tensors.size(), 1u);
  EXPECT_EQ(sd.tensors[0].name, "a");
  EXPECT_EQ(sd.tensors[0].dtype, DType::F32);
  EXPECT_EQ(sd.storages[0].key, "0");
  EXPECT_EQ(sd.storages[0].location, "cpu");
  // SETITEM, BINPUT/BINGET of the tensor (the same tensor under two names),
  // the state dict's _metadata through BUILD, POP and POP_MARK, FRAME.
  Pk p(4);
  p.raw({0x95, 0, 0, 0, 0, 0, 0, 0, 0}).ordered_dict().str("a").tensor().raw({'q', 7}).op('s');
  p.str("b").raw({'h', 7}).op('s');
  p.op('}').str("_metadata").op('}').op('s').op('b');
  p.op('N').op('0').op('(').op('N').op('N').op('1');
  const std::string tied = p.stop();
  const auto sd2 = unpickle_state_dict(reinterpret_cast<const uint8_t*>(tied.data()), tied.size(), "x");
  ASSERT_EQ(sd2.tensors.size(), 2u);
  EXPECT_EQ(sd2.tensors[1].name, "b");
  EXPECT_EQ(sd2.storages.size(), 1u);
}

TEST(StateDictPickle, RefusesWhatAStateDictNeverHas) {
  EXPECT_REFUSED(std::string(), "pickle ends without STOP");
  EXPECT_REFUSED(Pk().ordered_dict().bytes(), "pickle ends without STOP");
  EXPECT_REFUSED(Pk().stop(), "stack underflow");
  EXPECT_REFUSED(Pk(9).op('}').stop(), "pickle protocol 9");
  EXPECT_REFUSED(Pk().raw({'h', 5}).stop(), "memo entry 5 used before it is set");
  EXPECT_REFUSED(Pk().raw({'X', 0xff, 0xff, 0, 0, 'a', 'b'}).stop(), "runs past the end");
  EXPECT_REFUSED(Pk().op(']').stop(), "the pickled object is a list, not a state dict");
  EXPECT_REFUSED(Pk().raw({0x8a, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1}).stop(), "more than 64 bits");
  // Calling an allowed class with arguments, or a storage class or dtype at all.
  EXPECT_REFUSED(Pk().global("collections", "OrderedDict").int1(1).op(0x85).op('R').stop(),
                 "OrderedDict called with arguments");
  EXPECT_REFUSED(Pk().global("torch", "FloatStorage").int1(4).op(0x85).op('R').stop(), "REDUCE calls a torch storage class");
  EXPECT_REFUSED(Pk().global("torch", "float16").op(')').op('R').stop(), "REDUCE calls a torch dtype");
  // REDUCE on something that is not a global; BUILD on anything but a dict.
  EXPECT_REFUSED(Pk().int1(1).op(')').op('R').stop(), "REDUCE on an int");
  EXPECT_REFUSED(Pk().op(']').op(')').op('b').stop(), "BUILD (setting the state of an object) on a list");
  EXPECT_REFUSED(Pk().ordered_dict().int1(1).op('b').stop(), "BUILD (setting the state of an object) on a dict with an int");
  EXPECT_REFUSED(Pk().tensor().op('}').op('b').stop(), "BUILD (setting the state of an object) on a tensor");
  // Other opcodes and globals.
  EXPECT_REFUSED(Pk().op('(').int1(1).op('l').stop(), "opcode 0x6c (LIST)");
  EXPECT_REFUSED(Pk().global("builtins", "getattr").stop(), "imports builtins.getattr");
  EXPECT_REFUSED(Pk().global("torch", "load").stop(), "imports torch.load");
  EXPECT_REFUSED(Pk().global("torch._utils", "_rebuild_qtensor").stop(), "imports torch._utils._rebuild_qtensor");
  EXPECT_REFUSED(Pk().global("torch", "QInt8Storage").stop(), "complex and quantised tensors are not supported");
  EXPECT_REFUSED(Pk(4).str("posix").str("system").op(0x93).stop(), "imports posix.system");
  EXPECT_REFUSED(Pk().op('c').bytes() + "not terminated", "GLOBAL name not terminated");
  // Persistent ids other than torch's storage tuples.
  EXPECT_REFUSED(Pk().int1(1).op('Q').stop(), "persistent id is an int");
  EXPECT_REFUSED(Pk().op('(').str("x").op('t').op('Q').stop(), "persistent id is not ('storage'");
  // Tensor arguments: wrong count, wrong types.
  EXPECT_REFUSED(Pk().global("torch._utils", "_rebuild_tensor_v2").op(')').op('R').stop(),
                 "_rebuild_tensor_v2 called with 0 arguments");
  EXPECT_REFUSED(Pk().global("torch._utils", "_rebuild_tensor").op('(').int1(1).int1(0).op(')').op(')').op('t').op('R').stop(),
                 "a tensor's storage is an int, not a storage");
  // A tensor name that is not UTF-8; a duplicated name; rank above 64.
  EXPECT_REFUSED(Pk().op('}').op('(').str("\xff").tensor().op('u').stop(), "not valid UTF-8");
  EXPECT_REFUSED(Pk().op('}').op('(').str("a").tensor().str("a").tensor().op('u').stop(), "tensor \"a\" appears twice");
  EXPECT_REFUSED(Pk().op('}').op('(').str("a").tensor(65).op('u').stop(), "65 dimensions (at most 64)");
  EXPECT_REFUSED(Pk().op('}').op('(').str("a\nb").tensor().str("a\nb").tensor().op('u').stop(), "tensor \"a?b\" appears twice");
  EXPECT_EQ(unpickle_bytes_error(Pk().op('}').op('(').str("a").tensor(64).op('u').stop()), "(accepted)");
  // A deep nest of marks and tuples is data, not recursion.
  Pk deep;
  for (int i = 0; i < 100000; ++i) deep.op('(');
  for (int i = 0; i < 100000; ++i) deep.op('t');
  EXPECT_REFUSED(deep.stop(), "the pickled object is a tuple, not a state dict");
  // The message names the file and the position.
  const std::string e = unpickle_bytes_error(Pk().op(0x99).stop());
  EXPECT_EQ(e.rfind("x.bin (data.pkl): pickle opcode 0x99", 0), 0u) << e;
  EXPECT_NE(e.find("(at byte 2 of the pickle)"), std::string::npos) << e;
}

TEST(ZipReader, Crc32KnownValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32_update(0, reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xcbf43926u);
  EXPECT_EQ(crc32_update(crc32_update(0, reinterpret_cast<const uint8_t*>(s.data()), 4),
                         reinterpret_cast<const uint8_t*>(s.data()) + 4, 5),
            0xcbf43926u);
}

}  // namespace
}  // namespace chatvec

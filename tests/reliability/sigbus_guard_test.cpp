// The SIGBUS guard in-process: reading pages of a mapped input after the
// file was truncated gives zeros and a recorded fault (then an error naming
// the file), on any thread; faults outside guarded maps still crash.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/mapped_file.h"
#include "core/sigbus_guard.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

std::string make_file(const fs::path& p, size_t n) {
  std::ofstream f(p, std::ios::binary);
  std::string s(n, '\x5a');
  f.write(s.data(), std::streamsize(s.size()));
  return p.string();
}

// Same-dtype copies are written with write(2) straight from the input's map;
// when the input was truncated the kernel answers EFAULT (no signal).  The
// error must be the input-changed one, not "write failed: Bad address".
TEST(SigbusGuard, WriteFromATruncatedMapGivesTheInputChangedError) {
  testing::TempDir tmp;
  const std::string path = make_file(tmp / "w.safetensors", 1 << 20);
  std::string message;
  {
    MappedFile m(path);
    ASSERT_EQ(::truncate(path.c_str(), 8192), 0);
    OutputFile out((tmp / "copy").string());
    try {
      out.write(m.data(), m.size());
      FAIL() << "no error";
    } catch (const RuntimeFailure& e) {
      message = e.what();
    }
  }
  EXPECT_NE(message.find(path + ": input file was truncated or rewritten while being read (now 8192 bytes, was "
                                "1048576)"),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find("Bad address"), std::string::npos) << message;
}

TEST(SigbusGuard, TruncatedMapReadsZerosAndReportsTheFile) {
  testing::TempDir tmp;
  const std::string path = make_file(tmp / "w.safetensors", 1 << 20);
  MappedFile m(path);
  EXPECT_NO_THROW(check_input_faults());
  ASSERT_EQ(m.data()[12345], 0x5a);
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
  const uint64_t faults_before = input_fault_count();
  // Several threads read the vanished pages at once.
  std::vector<std::thread> threads;
  std::atomic<uint64_t> sum{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      uint64_t s = 0;
      for (size_t i = 8192 + size_t(t) * 4096; i < m.size(); i += 4096 * 4) s += m.data()[i];
      sum += s;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(sum.load(), 0u);
  EXPECT_EQ(m.data()[100], 0x5a);  // the page that still exists
  EXPECT_GT(input_fault_count(), faults_before);
  try {
    check_interrupted();  // the executors' per-chunk check
    FAIL() << "no error";
  } catch (const RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": input file was truncated or rewritten while being read (now 4096 "
                                                "bytes, was 1048576)"),
              std::string::npos)
        << e.what();
  }
}

TEST(SigbusGuard, UnmappedFileIsForgotten) {
  testing::TempDir tmp;
  const std::string path = make_file(tmp / "a.bin", 8192);
  { MappedFile m(path); }
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  EXPECT_NO_THROW(check_input_faults());
}

TEST(SigbusGuard, RewriteInPlaceIsNoticedWithoutAFault) {
  testing::TempDir tmp;
  const std::string path = make_file(tmp / "b.bin", 8192);
  MappedFile m(path);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a later mtime
  {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "x", 1, 10), 1);
    ::close(fd);
  }
  EXPECT_THROW(check_input_faults(), RuntimeFailure);
}

TEST(SigbusGuardDeathTest, FaultOutsideGuardedMapsStillCrashes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  testing::TempDir tmp;
  const std::string path = make_file(tmp / "c.bin", 1 << 16);
  { MappedFile install_handler(path); }
  EXPECT_DEATH(
      {
        int fd = ::open(path.c_str(), O_RDONLY);
        auto* p = static_cast<volatile const uint8_t*>(::mmap(nullptr, 1 << 16, PROT_READ, MAP_SHARED, fd, 0));
        if (::ftruncate(::open(path.c_str(), O_WRONLY), 0) != 0) _exit(3);
        (void)p[1 << 15];
        _exit(0);
      },
      "");
}

}  // namespace
}  // namespace chatvec

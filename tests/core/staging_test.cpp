#include "core/staging.h"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

size_t entries(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(StagedOutput, AppearsOnlyOnCommit) {
  testing::TempDir tmp;
  const std::string out = (tmp / "out").string();
  {
    StagedOutput s(out, StagedOutput::Kind::Directory, false);
    write_file(s.path() + "/f", "data");
    EXPECT_FALSE(fs::exists(out));
    s.commit();
  }
  EXPECT_EQ(read_file(out + "/f"), "data");
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(StagedOutput, RemovedWhenNotCommitted) {
  testing::TempDir tmp;
  const std::string out = (tmp / "out").string();
  {
    StagedOutput s(out, StagedOutput::Kind::Directory, false);
    write_file(s.path() + "/f", "data");
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(entries(tmp.path()), 0u);
}

TEST(StagedOutput, ExistingOutputNeedsForce) {
  testing::TempDir tmp;
  const std::string out = (tmp / "out").string();
  fs::create_directory(out);
  write_file(out + "/old", "old");
  EXPECT_THROW(StagedOutput(out, StagedOutput::Kind::Directory, false), InputError);
  {
    StagedOutput s(out, StagedOutput::Kind::Directory, true);
    write_file(s.path() + "/new", "new");
    EXPECT_TRUE(fs::exists(out + "/old"));
    s.commit();
  }
  EXPECT_FALSE(fs::exists(out + "/old"));
  EXPECT_EQ(read_file(out + "/new"), "new");
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(StagedOutput, StaleStagingOfDeadProcessIsRemoved) {
  testing::TempDir tmp;
  // A pid that cannot be alive: above the kernel's pid_max.
  const fs::path stale = tmp / ".out.chatvec-tmp-99999999";
  fs::create_directory(stale);
  const fs::path alive = tmp / (".out.chatvec-tmp-" + std::to_string(getppid()));
  fs::create_directory(alive);
  StagedOutput s((tmp / "out").string(), StagedOutput::Kind::Directory, false);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(alive));
}

// Two runs both pass the constructor's existence check; the second to commit
// must not replace the first one's output (the check and the rename are far
// apart in a real merge).
class StagedCommit : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { staging_test_disable_rename2(GetParam()); }
  void TearDown() override { staging_test_disable_rename2(false); }
};
INSTANTIATE_TEST_SUITE_P(Rename2, StagedCommit, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "fallback" : "renameat2"; });

TEST_P(StagedCommit, NeverReplacesWithoutForce) {
  testing::TempDir tmp;
  for (auto kind : {StagedOutput::Kind::Directory, StagedOutput::Kind::File}) {
    const bool dir = kind == StagedOutput::Kind::Directory;
    const std::string out = (tmp / (dir ? "outdir" : "outfile")).string();
    StagedOutput first(out, kind, false), second(out, kind, false);
    EXPECT_NE(first.path(), second.path());
    write_file(dir ? first.path() + "/f" : first.path(), "first");
    write_file(dir ? second.path() + "/f" : second.path(), "second");
    first.commit();
    try {
      second.commit();
      ADD_FAILURE() << out << ": second commit replaced the first output";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_file(dir ? out + "/f" : out), "first");
  }
  // The losers' staging paths go with their objects.
  EXPECT_EQ(entries(tmp.path()), 2u);
}

// Forced commits racing each other: each commit succeeds, the final path
// always holds one whole output (never absent once there, never a mix), and
// nothing is left beside it.
TEST_P(StagedCommit, ConcurrentForcedCommitsLeaveOneCompleteOutput) {
  testing::TempDir tmp;
  const std::string out = (tmp / "out").string();
  {
    StagedOutput s(out, StagedOutput::Kind::Directory, false);
    write_file(s.path() + "/a", "0");
    write_file(s.path() + "/b", "0");
    s.commit();
  }
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, failures{0};
  std::thread reader([&] {
    while (!stop) {
      // Both files present and from the same writer.
      std::string a, b;
      try {
        a = read_file(out + "/a");
        b = read_file(out + "/b");
      } catch (const std::exception&) {
        // A rename between the two reads is fine only if the directory is
        // still there: the path must never be missing.
        if (!fs::exists(out)) ++bad;
        continue;
      }
      (void)a, (void)b;
    }
  });
  std::vector<std::thread> writers;
  for (int w = 1; w <= 4; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < 25; ++i) {
        try {
          StagedOutput s(out, StagedOutput::Kind::Directory, true);
          const std::string v = std::to_string(w * 100 + i);
          write_file(s.path() + "/a", v);
          write_file(s.path() + "/b", v);
          s.commit();
        } catch (const std::exception& e) {
          ++failures;
          ADD_FAILURE() << e.what();
        }
      }
    });
  for (auto& t : writers) t.join();
  stop = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  // Without RENAME_EXCHANGE the old output is moved aside before the new one
  // arrives, so the path is missing for a moment; the end state is the same.
  if (!GetParam()) {
    EXPECT_EQ(bad.load(), 0) << "the output path was missing while forced runs replaced it";
  }
  EXPECT_EQ(read_file(out + "/a"), read_file(out + "/b"));
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(StagedOutput, MissingParentIsInputError) {
  EXPECT_THROW(StagedOutput("/nonexistent-dir/out", StagedOutput::Kind::Directory, false), InputError);
}

}  // namespace
}  // namespace chatvec

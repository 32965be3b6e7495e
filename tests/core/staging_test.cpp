#include "core/staging.h"

#include <unistd.h>

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

TEST(StagedOutput, MissingParentIsInputError) {
  EXPECT_THROW(StagedOutput("/nonexistent-dir/out", StagedOutput::Kind::Directory, false), InputError);
}

}  // namespace
}  // namespace chatvec

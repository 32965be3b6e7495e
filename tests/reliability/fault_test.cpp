// Fault injection with real processes: chatvec merges killed with SIGKILL at
// random points, run onto a file system that is (or becomes) full, and fed
// an input file that is truncated or rewritten while it is being read.
// The promises checked: inputs are never modified, OUT is either absent or
// complete (never partial), errors are clear one-line messages with exit
// status 1 (not a crash), and a rerun succeeds.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "process_util.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::run_command;
using testing::shell_quote;

// 64-bit FNV-1a of a file's bytes.
uint64_t file_hash(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> buf(1 << 20);
  uint64_t h = 1469598103934665603ull;
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ uint8_t(buf[size_t(i)])) * 1099511628211ull;
  }
  return h;
}

// name -> (size, mtime, hash) of every file in a directory.
using Snapshot = std::map<std::string, std::tuple<uintmax_t, fs::file_time_type, uint64_t>>;
Snapshot snapshot(const fs::path& dir) {
  Snapshot s;
  for (const auto& e : fs::directory_iterator(dir))
    s[e.path().filename().string()] = {fs::file_size(e.path()), fs::last_write_time(e.path()), file_hash(e.path())};
  return s;
}

class Faults : public testing::SharedDirSuite<Faults> {
 protected:
  static void SetUpTestSuite() {
    if (!begin_suite("numpy")) return;
    // About 64 MB each (bf16): long enough to be interrupted at many points.
    gen("base", "--shape medium --dtype bf16 --seed 1");
    gen("chat", "--shape medium --derive-from " + path("base") + " --seed 2 --noise 0.01");
    // (With a tokenizer: the GGUF export of the concurrent-merge test needs one.)
    gen("target", "--shape medium --tokenizer --derive-from " + path("base") + " --seed 3 --noise 0.05");
    if (!ok_) return;
    // The reference output and how long a merge takes here.
    const auto t0 = std::chrono::steady_clock::now();
    auto m = testing::run_command(shell_quote(testing::chatvec_bin()) + " -q " + merge_args("reference"));
    merge_time_ = std::chrono::steady_clock::now() - t0;
    if (m.exit_code != 0) {
      ok_ = false;
      why_ = "reference merge failed: " + m.err;
    }
  }

  static std::string merge_args(const std::string& out, const std::string& target = "target") {
    return "merge --base " + path("base") + " --chat " + path("chat") + " --target " + path(target) + " -o " +
           shell_quote(out.front() == '/' ? out : path(out));
  }
  static std::vector<std::string> merge_argv(const std::string& out, const std::string& target = "target") {
    return {testing::chatvec_bin(), "-q",   "merge", "--base", path("base"), "--chat", path("chat"),
            "--target",             path(target), "-o", out.front() == '/' ? out : path(out)};
  }
  // The output equals the reference merge, file by file.
  static void expect_complete(const std::string& out) {
    Snapshot want = snapshot(path("reference")), got = snapshot(out);
    ASSERT_EQ(want.size(), got.size()) << out;
    for (const auto& [name, w] : want) {
      ASSERT_TRUE(got.count(name)) << out << ": missing " << name;
      if (name == "README.md" || name == "chatvec.json") continue;  // they record the output path
      // The model card records the command line, whose -o differs.
      if (name == "README.md") continue;
      EXPECT_EQ(std::get<0>(w), std::get<0>(got[name])) << name;
      EXPECT_EQ(std::get<2>(w), std::get<2>(got[name])) << name;
    }
  }
  // A copy of the target model (to be damaged).
  static std::string copy_target(const std::string& name) {
    fs::remove_all(path(name));
    fs::copy(path("target"), path(name));
    return path(name);
  }

  static std::chrono::steady_clock::duration merge_time_;
};
std::chrono::steady_clock::duration Faults::merge_time_{};

TEST_F(Faults, SigkillAtRandomPointsLeavesInputsAndNoPartialOutput) {
  const Snapshot before[3] = {snapshot(path("base")), snapshot(path("chat")), snapshot(path("target"))};
  const double full_s = std::chrono::duration<double>(merge_time_).count();
  std::mt19937 rng(20261129);
  // Mostly inside the run; some just after it (then OUT must be complete).
  std::uniform_real_distribution<double> when(0.0, full_s * 1.1);
  const int kKills = 10;
  int absent = 0, complete = 0, stale = 0;
  for (int i = 0; i < kKills; ++i) {
    const std::string out = path("killed");
    fs::remove_all(out);
    const double delay = when(rng);
    testing::Child c = testing::spawn(merge_argv(out), tmp_->path().string());
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    ::kill(c.pid, SIGKILL);
    testing::Finished f = testing::wait_child(c);
    if (fs::exists(out)) {
      ++complete;
      expect_complete(out);  // renamed into place only when finished
    } else {
      ++absent;
    }
    stale += int(testing::staging_entries(tmp_->path().string()).size());
    std::cout << "kill " << i << " after " << delay << " s (merge takes " << full_s << " s): "
              << (f.signal == SIGKILL ? "killed" : "had exited " + std::to_string(f.exit_code)) << ", OUT "
              << (fs::exists(out) ? "complete" : "absent") << "\n";
  }
  std::cout << kKills << " SIGKILLs: OUT absent " << absent << ", complete " << complete
            << "; staging directories left by killed runs: " << stale << "\n";
  EXPECT_GT(absent, 0);
  // A rerun succeeds, equals the reference and removes stale staging
  // directories of dead processes.
  const std::string out = path("killed");
  fs::remove_all(out);
  auto r = run_command(shell_quote(testing::chatvec_bin()) + " -q " + merge_args("killed"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_complete(out);
  EXPECT_TRUE(testing::staging_entries(tmp_->path().string()).empty());
  // Inputs untouched (sizes, times, contents).
  EXPECT_EQ(before[0], snapshot(path("base")));
  EXPECT_EQ(before[1], snapshot(path("chat")));
  EXPECT_EQ(before[2], snapshot(path("target")));
}

TEST_F(Faults, FullDiskIsRefusedBeforeStarting) {
  testing::TmpfsMount small(path("small2m"), "size=2m");
  if (!small.ok()) GTEST_SKIP() << "skipped: " << small.why();
  auto r = run_command(shell_quote(testing::chatvec_bin()) + " -q " + merge_args(small.dir() + "/out"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not enough free space at " + small.dir()), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(small.dir() + "/out"));
  EXPECT_TRUE(testing::staging_entries(small.dir()).empty());
}

// Fills `dir` with a file until the file system reports ENOSPC.
void fill_up(const std::string& dir) {
  int fd = ::open((dir + "/filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  std::vector<char> block(1 << 20, 'f');
  while (::write(fd, block.data(), block.size()) > 0) {
  }
  ::close(fd);
}

TEST_F(Faults, DiskFillingUpDuringTheMergeGivesNoSpaceErrorAndNoOutput) {
  // Room for the output (64 MB) and the 16 MB margin of the free-space
  // check, no more; another writer fills it once the merge has started.
  testing::TmpfsMount fs96(path("fs96"), "size=96m");
  if (!fs96.ok()) GTEST_SKIP() << "skipped: " << fs96.why();
  const std::string out = fs96.dir() + "/out";
  auto argv = merge_argv(out);
  argv.insert(argv.end(), {"--shard-size", "4MB"});  // each shard reserves its space when opened
  testing::Child c = testing::spawn(argv, tmp_->path().string());
  const bool started =
      testing::wait_until([&] { return !testing::staging_entries(fs96.dir()).empty(); }, 60s);
  fill_up(fs96.dir());
  testing::Finished f = testing::wait_child(c);
  ASSERT_TRUE(started) << f.err;
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(f.err.find("no space left on device"), std::string::npos) << f.err;
  EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << f.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(testing::staging_entries(fs96.dir()).empty());
}

TEST_F(Faults, RunningOutOfInodesGivesNoSpaceErrorAndNoOutput) {
  // Plenty of bytes (the free-space check passes) but room for only a few
  // files: creating the output's files fails with ENOSPC, deterministically.
  for (int inodes : {2, 3, 4, 6}) {
    testing::TmpfsMount m(path("inodes" + std::to_string(inodes)), "size=256m,nr_inodes=" + std::to_string(inodes));
    if (!m.ok()) GTEST_SKIP() << "skipped: " << m.why();
    const std::string out = m.dir() + "/out";
    auto argv = merge_argv(out);
    argv.insert(argv.end(), {"--shard-size", "16MB"});
    testing::Finished f = testing::wait_child(testing::spawn(argv, tmp_->path().string()));
    EXPECT_EQ(f.exit_code, 1) << inodes << ": " << f.err;
    EXPECT_NE(f.err.find("no space left on device"), std::string::npos) << inodes << ": " << f.err;
    EXPECT_FALSE(fs::exists(out)) << inodes;
    EXPECT_TRUE(testing::staging_entries(m.dir()).empty()) << inodes;
  }
}

// Several merges onto the same OUT at once.  Each is stopped (SIGSTOP) as
// soon as its staging directory appears, i.e. after its "OUT exists?" check,
// and all are continued together, so that every run has passed the check
// before any commits.  Returns each run's result.
std::vector<testing::Finished> concurrent_merges(const std::vector<std::vector<std::string>>& argvs,
                                                 const std::string& out_dir, const std::string& log_dir) {
  std::vector<testing::Child> kids;
  for (const auto& a : argvs) kids.push_back(testing::spawn(a, log_dir));
  std::vector<bool> stopped(kids.size(), false);
  testing::wait_until([&] {
    bool all = true;
    for (size_t i = 0; i < kids.size(); ++i) {
      if (stopped[i]) continue;
      siginfo_t si{};  // already finished (not reaped: wait_child does that)
      if (::waitid(P_PID, id_t(kids[i].pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0) {
        stopped[i] = true;
        continue;
      }
      const std::string tag = "chatvec-tmp-" + std::to_string(kids[i].pid);
      for (const auto& e : testing::staging_entries(out_dir))
        if (e.find(tag) != std::string::npos) {
          ::kill(kids[i].pid, SIGSTOP);
          stopped[i] = true;
        }
      all = all && stopped[i];
    }
    return all;
  }, 60s);
  for (const auto& k : kids) ::kill(k.pid, SIGCONT);
  std::vector<testing::Finished> done;
  for (const auto& k : kids) done.push_back(testing::wait_child(k));
  return done;
}

TEST_F(Faults, ConcurrentMergesWithoutForceLeaveOneWinnerAndClearErrors) {
  for (const bool gguf : {false, true}) {
    const std::string out = path(gguf ? "race.gguf" : "race");
    fs::remove_all(out);
    std::vector<std::vector<std::string>> argvs;
    for (int i = 0; i < (gguf ? 2 : 3); ++i) {
      argvs.push_back(merge_argv(out));
      if (gguf) argvs.back().insert(argvs.back().end(), {"--format", "gguf"});
    }
    const auto results = concurrent_merges(argvs, tmp_->path().string(), tmp_->path().string());
    int winners = 0;
    for (const auto& f : results) {
      EXPECT_EQ(f.signal, 0) << f.err;
      if (f.exit_code == 0) {
        ++winners;
        continue;
      }
      EXPECT_EQ(f.exit_code, 2) << f.err;
      EXPECT_NE(f.err.find(out + ": already exists"), std::string::npos) << f.err;
      EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << f.err;
    }
    EXPECT_EQ(winners, 1) << (gguf ? "gguf" : "directory") << ": runs without --force replaced each other";
    if (gguf) EXPECT_GT(fs::file_size(out), 60u << 20);  // (export_gguf's own tests check the contents)
    else expect_complete(out);
    EXPECT_TRUE(testing::staging_entries(tmp_->path().string()).empty());
  }
}

TEST_F(Faults, ConcurrentForcedMergesLeaveOneCompleteOutput) {
  const std::string out = path("race_forced");
  fs::remove_all(out);
  fs::create_directory(out);  // an old output to replace
  std::ofstream(out + "/old.txt") << "old";
  std::vector<std::vector<std::string>> argvs;
  for (int i = 0; i < 3; ++i) {
    argvs.push_back(merge_argv(out));
    argvs.back().push_back("--force");
  }
  for (const auto& f : concurrent_merges(argvs, tmp_->path().string(), tmp_->path().string())) {
    EXPECT_EQ(f.signal, 0) << f.err;
    EXPECT_EQ(f.exit_code, 0) << f.err;
  }
  expect_complete(out);
  EXPECT_FALSE(fs::exists(out + "/old.txt"));
  EXPECT_TRUE(testing::staging_entries(tmp_->path().string()).empty());
  for (const auto& e : fs::directory_iterator(tmp_->path()))
    EXPECT_EQ(e.path().filename().string().find(".chatvec-old-"), std::string::npos) << e.path();
}

// Starts a merge onto `victim`, waits until it has started writing, damages
// the victim's weights with `damage`, and expects a clear error.
void damaged_during_merge(const std::string& victim, const std::vector<std::string>& argv, const std::string& out,
                          const std::function<void(const std::string&)>& damage, const std::string& log_dir) {
  const std::string weights = victim + "/model.safetensors";
  testing::Child c = testing::spawn(argv, log_dir);
  const bool started = testing::wait_until(
      [&] { return !testing::staging_entries(fs::path(out).parent_path().string()).empty(); }, 60s);
  damage(weights);
  testing::Finished f = testing::wait_child(c);
  ASSERT_TRUE(started) << f.err;
  EXPECT_EQ(f.signal, 0) << "crashed with signal " << f.signal << ": " << f.err;
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(f.err.find(weights + ": input file was truncated or rewritten while being read"), std::string::npos)
      << f.err;
  EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << f.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(testing::staging_entries(fs::path(out).parent_path().string()).empty());
}

TEST_F(Faults, InputTruncatedDuringMergeIsAnErrorNotSigbus) {
  for (double keep : {0.0, 0.5}) {
    const std::string victim = copy_target("victim_trunc");
    const std::string out = path("out_trunc");
    damaged_during_merge(victim, merge_argv(out, "victim_trunc"), out, [&](const std::string& w) {
      ASSERT_EQ(::truncate(w.c_str(), off_t(double(fs::file_size(w)) * keep)), 0);
    }, tmp_->path().string());
  }
}

// The same during same-dtype copies (every tensor but one outside the
// selection): those bytes go from the input's map straight to write(2),
// which answers EFAULT rather than raising SIGBUS.
TEST_F(Faults, InputTruncatedDuringACopyIsTheSameClearError) {
  for (double keep : {0.0, 0.5}) {
    const std::string victim = copy_target("victim_copy");
    const std::string out = path("out_copy");
    auto argv = merge_argv(out, "victim_copy");
    argv.insert(argv.end(), {"--include", "model\\.norm\\.weight"});
    damaged_during_merge(victim, argv, out, [&](const std::string& w) {
      ASSERT_EQ(::truncate(w.c_str(), off_t(double(fs::file_size(w)) * keep)), 0);
    }, tmp_->path().string());
  }
}

TEST_F(Faults, InputRewrittenInPlaceDuringMergeIsAnError) {
  const std::string victim = copy_target("victim_rewrite");
  const std::string out = path("out_rewrite");
  damaged_during_merge(victim, merge_argv(out, "victim_rewrite"), out, [](const std::string& w) {
    // Same size, new bytes near the end (what a download tool resuming
    // into the file would do).
    int fd = ::open(w.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::vector<char> junk(1 << 16, 'j');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), off_t(fs::file_size(w) - junk.size())), ssize_t(junk.size()));
    ::close(fd);
  }, tmp_->path().string());
}

}  // namespace
}  // namespace chatvec

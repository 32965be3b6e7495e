// Helpers shared by the test suites: where things are, temporary folders,
// running the chatvec command and peer programs.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace chatvec::testing {

// The message of the InputError that f() throws, "(no error)" if none.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

namespace fs = std::filesystem;

inline fs::path source_dir() { return CHATVEC_SOURCE_DIR; }
inline fs::path binary_dir() { return CHATVEC_BINARY_DIR; }
inline fs::path shared_dir() {
  if (const char* e = std::getenv("CHATVEC_SHARED")) return e;
  return CHATVEC_SHARED_DIR;
}
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}
// The npm reference programs (tests/peers/node_modules, installed by
// scripts/setup.sh).
inline fs::path peers_dir() { return source_dir() / "tests" / "peers"; }
inline bool peers_installed() { return fs::exists(peers_dir() / "node_modules"); }

// The chatvec binary under test.
inline std::string chatvec_bin() {
  if (const char* e = std::getenv("CHATVEC_BIN")) return e;
  return (binary_dir() / "src" / "cli" / "chatvec").string();
}

// A fresh temporary directory removed when the object dies.
//
// With CHATVEC_TEST_KEEP=DIR in the environment, test directories are made
// at DIR/<suite>.<test>/<n> instead (the same path on every run) and kept,
// so that every output a suite writes can be hashed and compared across two
// builds (scripts/compare_test_outputs.sh).
class TempDir {
 public:
  explicit TempDir(bool keepable = true) {
    if (const char* keep = std::getenv("CHATVEC_TEST_KEEP"); keep && *keep && keepable) {
      static int counter = 0;
      std::string where = "outside-tests";
      if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info())
        where = std::string(info->test_suite_name()) + "." + info->name();
      else if (const auto* suite = ::testing::UnitTest::GetInstance()->current_test_suite())
        where = std::string(suite->name()) + ".SetUpTestSuite";
      // Under ctest every test runs in a process of its own (the gtest filter
      // names it), and suites generate their shared inputs in each process.
#ifdef GTEST_FLAG_GET
      std::string process = GTEST_FLAG_GET(filter);
#else
      std::string process = ::testing::GTEST_FLAG(filter);
#endif
      for (char& c : process)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
      path_ = fs::path(keep) / process / where / std::to_string(counter++);
      fs::remove_all(path_);
      fs::create_directories(path_);
      keep_ = true;
      return;
    }
    std::string tmpl = (fs::temp_directory_path() / "chatvec-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    if (keep_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& s) const { return path_ / s; }

 private:
  fs::path path_;
  bool keep_ = false;
};

struct CommandResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Run a shell command line; stdout and stderr captured separately.
CommandResult run_command(const std::string& command_line);
// Shell-quote one argument.
std::string shell_quote(const std::string& s);
// Generate a synthetic Llama-shaped checkpoint at `out` with
// scripts/make_synthetic_model.py (run by /usr/bin/python3), `args` being
// its flags as one shell string.
CommandResult make_synthetic_model(const std::string& out, const std::string& args);

// Inputs that a suite generates and never changes, generated once per build
// directory instead of once per test process (ctest runs every test in a
// process of its own, so a suite's SetUpTestSuite runs once per test).
//
// The directory is binary_dir()/test-fixtures/NAME-KEY, KEY a hash of the
// contents of `inputs` (the generator script, the scripts it imports, its
// data files): a change to any of them generates a new one (and removes the
// old ones of NAME).  `generate(dir)` writes into a staging directory under an
// flock, which is then renamed into place, so concurrent test processes
// (ctest -j) wait for one generation and never see a partial one.  A
// manifest of every file's path, size and mtime is written last and checked
// on each use: a fixture that was changed or partly removed is generated
// again.  Callers must treat the files as read-only (link them into the
// suite's own directory, see link_entries).
struct CachedFixture {
  bool ok = false;
  fs::path dir;
  std::string error;  // when !ok: the generator's stderr or what failed
  bool generated = false;  // this call generated it (else reused)
};
CachedFixture cached_fixture(const std::string& name, const std::vector<fs::path>& inputs,
                             const std::function<CommandResult(const fs::path& dir)>& generate);
// Symlinks every entry of `from` (but the manifest) into `to`.
void link_entries(const fs::path& from, const fs::path& to);

// A suite whose tests share inputs generated once, by the suite's own
// SetUpTestSuite, in one temporary directory.  When generating them fails
// (set ok_ false and why_), every test skips with the reason, or fails in CI.
template <class Suite>
class SharedDirSuite : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override {
    if (!ok_) {
      if (in_ci()) FAIL() << why_;
      GTEST_SKIP() << why_;
    }
  }
  // Start the suite: a fresh shared directory, and a check that Debian's
  // python3 imports `modules` (e.g. "numpy, torch"), which the generators and
  // references need; a missing module marks the suite (skip, or fail in CI).
  static bool begin_suite(const std::string& modules) {
    tmp_ = new TempDir();
    ok_ = true;
    auto r = run_command("/usr/bin/python3 -c 'import " + modules + "'");
    if (r.exit_code != 0) {
      ok_ = false;
      why_ = "python3 cannot import " + modules + " (Debian's python3-numpy/python3-torch): " + r.err;
    }
    return ok_;
  }
  static std::string path(const std::string& name) {
    return ((generating_in_ ? *generating_in_ : tmp_->path()) / name).string();
  }
  // Runs `generate` (the suite's gen() calls and other generators, writing
  // through path()) once per build directory, in cached_fixture(name,
  // inputs), and links what it wrote into the suite's directory.  Only for
  // inputs no test changes; `inputs` must name every file the generation
  // depends on (the test's own source holds the generators' arguments).
  static void generate_cached(const std::string& name, const std::vector<fs::path>& inputs,
                              const std::function<void()>& generate) {
    if (!ok_) return;
    const auto fx = cached_fixture(name, inputs, [&](const fs::path& dir) {
      generating_in_ = &dir;
      generate();
      generating_in_ = nullptr;
      return ok_ ? CommandResult{0, "", ""} : CommandResult{1, "", why_};
    });
    if (!fx.ok) {
      ok_ = false;
      why_ = fx.error;
      return;
    }
    link_entries(fx.dir, tmp_->path());
  }
  // Generate a synthetic model at path(name); a failure marks the suite.
  static void gen(const std::string& name, const std::string& args) {
    if (!ok_) return;
    auto r = make_synthetic_model(path(name), args);
    if (r.exit_code != 0) {
      ok_ = false;
      why_ = "generator failed: " + r.err;
    }
  }

  inline static TempDir* tmp_ = nullptr;
  inline static bool ok_ = false;
  inline static std::string why_;
  inline static const fs::path* generating_in_ = nullptr;
};

}  // namespace chatvec::testing

// Skip (outside CI) or fail (in CI) when a needed input is missing.
#define CHATVEC_REQUIRE_PATH(p)                                                             \
  do {                                                                                      \
    if (!std::filesystem::exists(p)) {                                                      \
      if (::chatvec::testing::in_ci()) FAIL() << "required in CI but missing: " << (p);     \
      GTEST_SKIP() << "skipped: " << (p) << " is absent (see README: shared/ and peers)";   \
    }                                                                                       \
  } while (0)

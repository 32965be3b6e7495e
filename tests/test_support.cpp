#include "test_support.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/file_util.h"

namespace chatvec::testing {

std::string shell_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) {
    if (c == '\'') r += "'\\''";
    else r += c;
  }
  return r + "'";
}

CommandResult run_command(const std::string& command_line) {
  TempDir tmp(/*keepable=*/false);
  fs::path out = tmp / "out", err = tmp / "err";
  std::string cmd = command_line + " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string()) + " </dev/null";
  int status = std::system(cmd.c_str());
  CommandResult r{};
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

CommandResult make_synthetic_model(const std::string& out, const std::string& args) {
  return run_command("/usr/bin/python3 " + shell_quote((source_dir() / "scripts/make_synthetic_model.py").string()) +
                     " " + shell_quote(out) + " " + args);
}

namespace {

constexpr const char* kManifest = ".fixture-manifest";

// Every regular file under dir (but the manifest): relative path, size and
// mtime in nanoseconds, one per line, sorted.
std::string manifest_of(const fs::path& dir) {
  std::vector<std::string> lines;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename() == kManifest) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    lines.push_back(fs::relative(e.path(), dir).string() + "\t" + std::to_string(st.st_size) + "\t" +
                    std::to_string(int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec));
  }
  std::sort(lines.begin(), lines.end());
  std::string m;
  for (const auto& l : lines) m += l + "\n";
  return m;
}

bool valid_fixture(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || !fs::exists(dir / kManifest, ec)) return false;
  return read_file((dir / kManifest).string()) == manifest_of(dir);
}

}  // namespace

CachedFixture cached_fixture(const std::string& name, const std::vector<fs::path>& inputs,
                             const std::function<CommandResult(const fs::path& dir)>& generate) {
  CachedFixture r;
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 over each input's name and bytes
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(in, ec)) {
      r.error = "fixture input missing: " + in.string();
      return r;
    }
    mix(in.filename().string());
    mix(read_file(in.string()));
  }
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(h));
  const fs::path root = binary_dir() / "test-fixtures";
  r.dir = root / (name + "-" + key);
  std::error_code ec;
  fs::create_directories(root, ec);
  const std::string lock_path = (root / (name + ".lock")).string();
  const int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    r.error = "cannot lock " + lock_path;
    if (lock >= 0) ::close(lock);
    return r;
  }
  if (valid_fixture(r.dir)) {
    r.ok = true;
  } else {
    // Other keys of this name are stale; so is an invalid r.dir.
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string f = e.path().filename().string();
      if (e.is_directory() && f.rfind(name + "-", 0) == 0) fs::remove_all(e.path(), ec);
    }
    const fs::path staging = root / (".staging-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(staging, ec);
    fs::create_directories(staging, ec);
    CommandResult g = generate(staging);
    if (g.exit_code != 0) {
      r.error = g.err.empty() ? "generator exited " + std::to_string(g.exit_code) : g.err;
      fs::remove_all(staging, ec);
    } else {
      std::ofstream(staging / kManifest, std::ios::binary) << manifest_of(staging);
      fs::rename(staging, r.dir, ec);
      if (ec) {
        r.error = "cannot rename " + staging.string() + " to " + r.dir.string() + ": " + ec.message();
        fs::remove_all(staging, ec);
      } else {
        r.ok = r.generated = true;
      }
    }
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return r;
}

void link_entries(const fs::path& from, const fs::path& to) {
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.path().filename() == kManifest) continue;
    fs::create_symlink(e.path(), to / e.path().filename());
  }
}

}  // namespace chatvec::testing

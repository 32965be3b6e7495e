#include "process_util.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace chatvec::testing {

namespace fs = std::filesystem;

Child spawn(const std::vector<std::string>& argv, const std::string& log_dir) {
  static int counter = 0;
  Child c;
  const std::string stem = log_dir + "/child" + std::to_string(++counter);
  c.out_path = stem + ".out";
  c.err_path = stem + ".err";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, c.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, c.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int r = posix_spawn(&c.pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + strerror(r));
  return c;
}

Finished wait_child(const Child& c) {
  Finished f;
  int status = 0;
  while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) f.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) f.signal = WTERMSIG(status);
  std::ifstream in(c.err_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  f.err = ss.str();
  return f;
}

TmpfsMount::TmpfsMount(std::string dir, const std::string& options) : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    why_ = "cannot mount a tmpfs (" + options + ") at " + dir_ + ": " + strerror(errno) +
           " (needs root or CAP_SYS_ADMIN)";
    return;
  }
  ok_ = true;
}

TmpfsMount::~TmpfsMount() {
  if (ok_) ::umount2(dir_.c_str(), MNT_DETACH);
}

std::vector<std::string> staging_entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.find(".chatvec-tmp-") != std::string::npos) out.push_back(n);
  }
  return out;
}

}  // namespace chatvec::testing

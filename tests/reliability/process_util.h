// Starting chatvec as a real child process that a test can kill, and
// size-limited tmpfs mounts for disk-full tests.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace chatvec::testing {

struct Child {
  pid_t pid = -1;
  std::string out_path, err_path;  // captured stdout / stderr
};

// Starts `argv` (argv[0] is the program path) with stdout and stderr sent to
// files in `log_dir`.
Child spawn(const std::vector<std::string>& argv, const std::string& log_dir);

struct Finished {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string err;
};
// Waits for the child and reads its stderr.
Finished wait_child(const Child& c);

// A tmpfs mounted at `dir` (created) with `options` ("size=2m"); unmounted
// by the destructor.  ok() is false, with why(), where mounting is not
// permitted.
class TmpfsMount {
 public:
  TmpfsMount(std::string dir, const std::string& options);
  ~TmpfsMount();
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, why_;
  bool ok_ = false;
};

// Names in `dir` containing ".chatvec-tmp-" (staging leftovers).
std::vector<std::string> staging_entries(const std::string& dir);

// Polls `pred` every millisecond until it is true or `timeout` passes.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    struct timespec ts {0, 1000000};
    nanosleep(&ts, nullptr);
  }
  return pred();
}

}  // namespace chatvec::testing

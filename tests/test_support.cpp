#include "test_support.h"

#include <sys/wait.h>

#include <fstream>
#include <sstream>

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

}  // namespace chatvec::testing

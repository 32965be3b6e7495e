// Errors the tool reports to its user.
//
// Two kinds, as the command line promises: bad input or usage (exit status 2)
// and every other failure (exit status 1).  Messages are one line and name the
// file or tensor concerned.
#pragma once

#include <stdexcept>
#include <string>

namespace chatvec {

class Error : public std::runtime_error {
 public:
  Error(std::string message, int exit_code)
      : std::runtime_error(std::move(message)), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// The input (a file, a flag, a combination of models) is wrong: exit 2.
class InputError : public Error {
 public:
  explicit InputError(std::string message) : Error(std::move(message), 2) {}
};

// Something failed that is not the input's fault (I/O, disk full): exit 1.
class RuntimeFailure : public Error {
 public:
  explicit RuntimeFailure(std::string message) : Error(std::move(message), 1) {}
};

// A system call failed: message plus strerror(errno).
[[noreturn]] void throw_errno(const std::string& what);

}  // namespace chatvec

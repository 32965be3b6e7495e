#include "core/error.h"

#include <cerrno>
#include <cstring>

namespace chatvec {

void throw_errno(const std::string& what) {
  int e = errno;
  std::string msg = what + ": " + std::strerror(e);
  if (e == ENOSPC || e == EDQUOT) throw RuntimeFailure(what + ": no space left on device");
  throw RuntimeFailure(msg);
}

}  // namespace chatvec

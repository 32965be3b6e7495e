#include "core/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

#include "core/error.h"
#include "core/sigbus_guard.h"

namespace chatvec {

namespace {
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_signal.exchange(sig) != 0) _exit(128 + sig);
}
}  // namespace

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

bool interrupted() { return g_signal.load(std::memory_order_relaxed) != 0; }

void check_interrupted() {
  int sig = g_signal.load(std::memory_order_relaxed);
  if (sig) throw Error(sig == SIGINT ? "interrupted" : "terminated by signal " + std::to_string(sig), 128 + sig);
  check_input_faults();  // SIGBUS from a mapped input that was truncated (sigbus_guard.h)
}

}  // namespace chatvec

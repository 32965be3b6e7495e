#include "core/sigbus_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>

#include "core/error.h"

namespace chatvec {

namespace {

// What the signal handler may read: fixed slots of atomics, no allocation.
struct Slot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<size_t> size{0};
  std::atomic<int> faults{0};
};
Slot g_slots[kMaxWatchedMaps];
std::atomic<uint64_t> g_fault_count{0};
struct sigaction g_previous {};

// What check_input_faults() reads, under a mutex.
struct Watched {
  std::string path;
  int fd;
  size_t size;
  struct timespec mtime;
  size_t slot;
};
std::mutex g_mutex;
std::map<uintptr_t, Watched>& watched() {
  static auto* m = new std::map<uintptr_t, Watched>;  // never destroyed: used until exit
  return *m;
}

void chain_to_previous(int sig, siginfo_t* si, void* ctx) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) {
      g_previous.sa_sigaction(sig, si, ctx);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the faulting access repeats and
  // the process dies of SIGBUS as it would have without us.
  signal(sig, SIG_DFL);
}

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire);
    if (b == 0 || a < b || a - b >= s.size.load(std::memory_order_relaxed)) continue;
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    void* p = reinterpret_cast<void*>(a & ~(page - 1));
    // Zeros in place of the vanished page; the data is discarded anyway.
    if (mmap(p, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
      s.faults.fetch_add(1, std::memory_order_relaxed);
      g_fault_count.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    break;
  }
  chain_to_previous(sig, si, ctx);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

bool same_time(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

}  // namespace

void watch_mapped_input(const void* begin, size_t size, const std::string& path, int fd) {
  if (!begin || size == 0) return;
  install_handler();
  struct stat st {};
  if (fstat(fd, &st) != 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (size_t i = 0; i < kMaxWatchedMaps; ++i) {
    Slot& s = g_slots[i];
    if (s.begin.load(std::memory_order_relaxed) != 0) continue;
    s.size.store(size, std::memory_order_relaxed);
    s.faults.store(0, std::memory_order_relaxed);
    s.begin.store(reinterpret_cast<uintptr_t>(begin), std::memory_order_release);
    watched()[reinterpret_cast<uintptr_t>(begin)] = Watched{path, fd, size, st.st_mtim, i};
    return;
  }
}

void unwatch_mapped_input(const void* begin) noexcept {
  if (!begin) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = watched().find(reinterpret_cast<uintptr_t>(begin));
  if (it == watched().end()) return;
  g_slots[it->second.slot].begin.store(0, std::memory_order_release);
  watched().erase(it);
}

void check_input_faults() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (watched().empty()) return;
  for (const auto& [b, w] : watched()) {
    struct stat st {};
    const bool faulted = g_slots[w.slot].faults.load(std::memory_order_relaxed) != 0;
    const bool statted = fstat(w.fd, &st) == 0;
    if (!faulted && (!statted || (size_t(st.st_size) == w.size && same_time(st.st_mtim, w.mtime)))) continue;
    std::string now = statted ? " (now " + std::to_string(st.st_size) + " bytes, was " + std::to_string(w.size) + ")" : "";
    throw RuntimeFailure(w.path + ": input file was truncated or rewritten while being read" + now +
                         "; inputs must not change during a run");
  }
}

uint64_t input_fault_count() { return g_fault_count.load(std::memory_order_relaxed); }

}  // namespace chatvec

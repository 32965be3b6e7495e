// The engine's worker threads.  Workers sleep on a condition variable
// between jobs (no spinning at barriers: a core given to another process is
// not burned waiting), and a job's items are handed out in chunks from an
// atomic counter, so a thread that is descheduled delays the job by at most
// one chunk instead of half of it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace chatvec {

class ThreadPool {
 public:
  // The engine's pool: CHATVEC_THREADS, else OMP_NUM_THREADS, else the
  // number of CPUs this process may run on.
  static ThreadPool& shared();

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return int(workers_.size()) + 1; }

  // fn(begin, end) over [0, total) in chunks of `chunk` items, on the calling
  // thread and the workers; returns when every chunk is done.  A call made
  // while the pool is busy (from a job, or from another thread) runs on the
  // calling thread alone.
  template <class F>
  void parallel_for(int64_t total, int64_t chunk, F&& fn) {
    if (total <= 0) return;
    if (chunk < 1) chunk = 1;
    using Fn = std::remove_reference_t<F>;
    auto call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); };
    run(total, chunk, call, const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Call = void (*)(void*, int64_t, int64_t);
  struct Job {
    Call call;
    void* ctx;
    int64_t total, chunk;
    std::atomic<int64_t> next{0};
  };
  void run(int64_t total, int64_t chunk, Call call, void* ctx);
  static void work(Job& j);
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex submit_;  // one job at a time
  std::mutex m_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool open_ = false, stop_ = false;
  int joined_ = 0;
  Job* job_ = nullptr;
};

}  // namespace chatvec

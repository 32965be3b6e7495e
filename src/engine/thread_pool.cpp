#include "engine/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <sched.h>

namespace chatvec {

namespace {
int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end != v && n > 0 && n <= 1024 ? int(n) : 0;
}

int default_threads() {
  if (int n = env_threads("CHATVEC_THREADS")) return n;
  if (int n = env_threads("OMP_NUM_THREADS")) return n;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned h = std::thread::hardware_concurrency();
  return h ? int(h) : 1;
}
}  // namespace

ThreadPool& ThreadPool::shared() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {
thread_local bool t_in_job = false;  // this thread is running a chunk
}

void ThreadPool::work(Job& j) {
  const bool outer = t_in_job;
  t_in_job = true;
  for (;;) {
    const int64_t b = j.next.fetch_add(j.chunk, std::memory_order_relaxed);
    if (b >= j.total) break;
    j.call(j.ctx, b, std::min(j.total, b + j.chunk));
  }
  t_in_job = outer;
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lk(m_);
  for (;;) {
    wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    if (!open_) continue;  // woke after the job was finished by others
    Job* j = job_;
    ++joined_;
    lk.unlock();
    work(*j);
    lk.lock();
    if (--joined_ == 0) done_.notify_one();
  }
}

void ThreadPool::run(int64_t total, int64_t chunk, Call call, void* ctx) {
  Job j{call, ctx, total, chunk};
  if (t_in_job || workers_.empty() || total <= chunk) {  // nested, or nothing to share
    work(j);
    return;
  }
  std::unique_lock<std::mutex> submit(submit_, std::try_to_lock);
  if (workers_.empty() || total <= chunk || !submit.owns_lock()) {
    work(j);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    job_ = &j;
    open_ = true;
    ++generation_;
  }
  wake_.notify_all();
  work(j);
  std::unique_lock<std::mutex> lk(m_);
  open_ = false;  // workers that wake from now on leave the job alone
  done_.wait(lk, [&] { return joined_ == 0; });
  job_ = nullptr;
}

}  // namespace chatvec

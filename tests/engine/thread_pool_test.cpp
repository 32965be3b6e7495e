// The engine's thread pool: every item exactly once, whatever the chunk;
// nested and concurrent calls run (on the calling thread) instead of
// deadlocking; many small jobs in a row (the per-token barriers) complete.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "engine/thread_pool.h"

using chatvec::ThreadPool;

TEST(ThreadPool, EveryItemOnceForAnyChunk) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.threads(), 3);
  for (int64_t total : {1, 7, 64, 1000}) {
    for (int64_t chunk : {1, 3, 16, 5000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(total));
      pool.parallel_for(total, chunk, [&](int64_t b, int64_t e) {
        EXPECT_LE(e - b, chunk);
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (int64_t i = 0; i < total; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << total << " " << chunk << " " << i;
    }
  }
}

TEST(ThreadPool, NestedAndConcurrentCallsComplete) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pool.parallel_for(10, 2, [&](int64_t x, int64_t y) { sum += y - x; });
  });
  EXPECT_EQ(sum.load(), 80);
  sum = 0;
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int r = 0; r < 200; ++r) pool.parallel_for(50, 4, [&](int64_t x, int64_t y) { sum += y - x; });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(sum.load(), 4 * 200 * 50);
}

TEST(ThreadPool, ManySmallJobsInARow) {
  ThreadPool pool(4);
  int64_t total = 0;
  std::atomic<int64_t> sum{0};
  for (int j = 0; j < 20000; ++j) {
    pool.parallel_for(16, 1, [&](int64_t b, int64_t e) { sum += e - b; });
    total += 16;
  }
  EXPECT_EQ(sum.load(), total);
}

#include "merge/executor.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/interrupt.h"
#include "formats/safetensors/safetensors_writer.h"
#include "merge/kernels.h"
#include "merge/row_gather.h"
#include "merge/vector_ops.h"

namespace chatvec {

namespace {

std::vector<TensorSpec> specs_of(const MergePlan& plan) {
  std::vector<TensorSpec> specs;
  specs.reserve(plan.tasks.size());
  for (const auto& t : plan.tasks) specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
  return specs;
}

// Pages of an input to hand back once they have been consumed: a byte range
// of the tensor.
struct Release {
  const CheckpointTensor* tensor;
  uint64_t begin, bytes;
};

// Write-behind: chunks go to the SafetensorsWriter, in order, on a thread of
// its own, so that the arithmetic (and the page faults reading the inputs)
// of the next chunk overlaps the write (and the flush-behind wait) of this
// one.  Memory is a fixed pool of chunk buffers; chunks written straight
// from an input map hold no buffer, only their (mapped) input pages, which
// are released once written.
class WriteBehind {
 public:
  WriteBehind(SafetensorsWriter& writer, size_t buffers, uint64_t max_queued)
      : writer_(writer), max_queued_(max_queued) {
    pool_.resize(buffers);
    for (auto& b : pool_) free_.push_back(&b);
    thread_ = std::thread([this] { run(); });
  }
  ~WriteBehind() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // A free buffer of `bytes` (waits for the writer to return one).
  std::vector<uint8_t>* buffer(size_t bytes) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !free_.empty() || error_; });
    rethrow_locked();
    std::vector<uint8_t>* b = free_.back();
    free_.pop_back();
    lk.unlock();
    b->resize(bytes);
    return b;
  }
  // Queue `buf` (from buffer()) to be written; `releases` are handed back
  // first (the arithmetic is done with them).
  void submit(std::vector<uint8_t>* buf) { push(Item{buf->data(), buf->size(), buf, {}}); }
  // Queue bytes that stay valid until written (an input map); `releases`
  // are handed back once written.
  void submit_mapped(const void* data, size_t n, std::vector<Release> releases) {
    push(Item{static_cast<const uint8_t*>(data), n, nullptr, std::move(releases)});
  }
  // Append like SafetensorsWriter::append: the caller may reuse `data` on
  // return (the bytes are copied into a pool buffer).
  void append(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    const size_t step = pool_chunk_;
    while (n > 0) {
      const size_t take = std::min(n, step);
      std::vector<uint8_t>* b = buffer(take);
      std::copy(p, p + take, b->data());
      submit(b);
      p += take;
      n -= take;
    }
  }
  // Wait until everything queued is written; rethrows the writer's error.
  void drain() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return (queue_.empty() && !busy_) || error_; });
    rethrow_locked();
  }
  void set_pool_chunk(size_t bytes) { pool_chunk_ = std::max<size_t>(1, bytes); }

 private:
  struct Item {
    const uint8_t* data;
    size_t n;
    std::vector<uint8_t>* buf;
    std::vector<Release> releases;
  };

  void push(Item it) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return queued_bytes_ < max_queued_ || error_; });
    rethrow_locked();
    queued_bytes_ += it.n;
    queue_.push_back(std::move(it));
    lk.unlock();
    cv_.notify_all();
  }
  void rethrow_locked() {
    if (error_) std::rethrow_exception(error_);
  }
  void run() {
    std::unique_lock lk(mu_);
    while (true) {
      cv_.wait(lk, [&] { return !queue_.empty() || stop_; });
      if (queue_.empty()) return;  // stop_ and nothing left
      Item it = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      const bool skip = error_ || stop_;  // after an error (or abandon), only recycle
      lk.unlock();
      if (!skip) {
        try {
          writer_.append(it.data, it.n);
        } catch (...) {
          lk.lock();
          error_ = std::current_exception();
          lk.unlock();
        }
      }
      for (const Release& r : it.releases) r.tensor->release_bytes(r.begin, r.bytes);
      lk.lock();
      busy_ = false;
      queued_bytes_ -= it.n;
      if (it.buf) free_.push_back(it.buf);
      cv_.notify_all();
    }
  }

  SafetensorsWriter& writer_;
  const uint64_t max_queued_;
  size_t pool_chunk_ = 16u << 20;
  std::deque<std::vector<uint8_t>> pool_;
  std::vector<std::vector<uint8_t>*> free_;
  std::deque<Item> queue_;
  uint64_t queued_bytes_ = 0;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// Threads for the arithmetic: one core is left to the writer thread and the
// kernel's I/O; with two cores or fewer the arithmetic runs on the calling
// thread alone, without OpenMP (whose fork-join per chunk stalls badly when
// the cores are shared).
int compute_threads() {
  const int want = omp_get_max_threads();  // --threads, OMP_NUM_THREADS or all cores
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  return std::max(1, std::min<int>(want, int(cores)) - 1);
}

// Chunk buffers in the write-behind pool: one being filled, one being
// written, one ready in between.
constexpr size_t kBuffers = 3;
// Input bytes asked ahead of the current chunk (madvise WILLNEED), per
// input, so that a cold read overlaps the arithmetic and the writes.
constexpr uint64_t kPrefetchAhead = 64ull << 20;

}  // namespace

uint64_t planned_output_bytes(const MergePlan& plan, const ExecuteOptions& opt) {
  uint64_t total = 0;
  for (const auto& s : plan_safetensors_shards(specs_of(plan), opt.shard_size, opt.metadata)) total += s.file_bytes();
  return total;
}

MemoryEstimate estimate_peak_memory(const MergePlan& plan, const ExecuteOptions& opt) {
  MemoryEstimate m;
  uint64_t max_in_es = 1, max_out_es = 1;
  for (const auto& t : plan.tasks) {
    max_out_es = std::max<uint64_t>(max_out_es, dtype_bits(t.dtype) / 8);
    for (const CheckpointTensor* in : t.inputs()) max_in_es = std::max<uint64_t>(max_in_es, in->element_size());
  }
  size_t operands = 1;
  for (const auto& t : plan.tasks) operands = std::max(operands, t.inputs().size());
  const uint64_t elems = std::max<uint64_t>(1, opt.chunk_bytes / max_out_es);
  // Output: the pool buffers, and chunks queued from the maps.
  m.buffers = kBuffers * opt.chunk_bytes;
  // Inputs: the pages of the chunk being computed (all operands) plus the
  // mapped chunks queued for writing (released once written).
  m.mapped_inputs = operands * elems * max_in_es + 2 * opt.chunk_bytes;
  // (Row-mapped vocabulary tensors hand their input rows back chunk by chunk
  // too: row_gather.cpp.)
  // Program, libraries, headers and plan: measured about 20 MB on a 1B model.
  m.fixed = 24ull << 20;
  m.total = m.buffers + m.mapped_inputs + m.fixed;
  return m;
}

InputResidency input_residency(const MergePlan& plan) {
  InputResidency r;
  std::set<const CheckpointTensor*> seen;
  for (const auto& t : plan.tasks)
    for (const CheckpointTensor* in : t.inputs()) {
      if (!seen.insert(in).second) continue;
      r.bytes += in->nbytes();
      r.resident += in->resident_bytes();
    }
  return r;
}

void execute_plan(const MergePlan& plan, const std::string& out_dir, const ExecuteOptions& opt) {
  SafetensorsWriter sink(out_dir, specs_of(plan), opt.shard_size, opt.metadata);
  const uint64_t total = sink.total_bytes();
  uint64_t done = 0;
  const int threads = compute_threads();
  // `writer` has SafetensorsWriter::append's meaning (bytes in order), but
  // writes behind on its own thread.
  WriteBehind writer(sink, kBuffers, kBuffers * opt.chunk_bytes);
  writer.set_pool_chunk(opt.chunk_bytes);

  // Prefetch cursor: inputs are asked for up to kPrefetchAhead output bytes
  // ahead of the chunk being computed, across tensor boundaries.
  size_t pf_task = 0;
  uint64_t pf_done = 0, pf_pos = 0;  // bytes of the task / of the output before the cursor
  auto prefetch_until = [&](uint64_t pos) {
    while (pf_pos < pos + kPrefetchAhead && pf_task < plan.tasks.size()) {
      const TensorTask& t = plan.tasks[pf_task];
      const uint64_t bytes = t.nbytes();
      if (t.kind == TaskKind::Rows || pf_done >= bytes) {  // rows: read in their own order
        pf_pos += bytes - std::min(pf_done, bytes);
        ++pf_task;
        pf_done = 0;
        continue;
      }
      uint64_t take = std::min(bytes - pf_done, opt.chunk_bytes);
      if (t.kind == TaskKind::Copy) {
        t.target->prefetch_bytes(pf_done, take);
      } else {  // whole output elements; the inputs' elements match them one to one
        const uint64_t es = dtype_bits(t.dtype) / 8;
        const uint64_t count = std::max<uint64_t>(1, take / es);
        take = count * es;
        for (const CheckpointTensor* in : t.inputs()) in->prefetch(pf_done / es, count);
      }
      pf_done += take;
      pf_pos += take;
    }
  };
  auto advance = [&](uint64_t bytes) {
    done += bytes;
    if (opt.progress) opt.progress(done, total);
  };

  for (const TensorTask& task : plan.tasks) {
    switch (task.kind) {
      case TaskKind::Rows: {  // vocabulary tensors, row by row
        // Operations: the statistics over the rows each vector is added to
        // first (in steps of at most a chunk), as for a Combine tensor.
        OpsState ops_state;
        if (task.ops.any()) {
          const uint64_t es = dtype_bits(task.dtype) / 8;
          ops_state = prepare_vector_ops(task, std::max<uint64_t>(1, opt.chunk_bytes / es), threads);
        }
        gather_rows(
            task, opt.chunk_bytes,
            [&](const void* p, size_t n) {
              writer.append(p, n);
              advance(n);
            },
            task.ops.any() ? &ops_state : nullptr);
        break;
      }
      case TaskKind::Copy: {
        // The target's bytes, written straight from the map (any dtype, the
        // packed sub-byte ones too) and released once written.
        const uint64_t bytes = task.nbytes();
        for (uint64_t begin = 0; begin < bytes; begin += opt.chunk_bytes) {
          check_interrupted();
          const uint64_t take = std::min(opt.chunk_bytes, bytes - begin);
          prefetch_until(done + take);
          writer.submit_mapped(task.target->data() + begin, take, {Release{task.target, begin, take}});
          advance(take);
        }
        break;
      }
      case TaskKind::Combine: {
        const uint64_t n = task.numel();
        const uint64_t out_es = dtype_bits(task.dtype) / 8;
        const uint64_t chunk = std::max<uint64_t>(1, opt.chunk_bytes / out_es);
        // Operations on the vectors: their statistics passes first (each in
        // steps of at most a chunk), then the output chunk by chunk.
        const bool with_ops = task.ops.any();
        OpsState ops_state;
        if (with_ops) ops_state = prepare_vector_ops(task, chunk, threads);
        for (uint64_t first = 0; first < n; first += chunk) {
          check_interrupted();
          const uint64_t count = std::min(chunk, n - first);
          prefetch_until(done + count * out_es);
          std::vector<uint8_t>* buffer = writer.buffer(count * out_es);
          CombineArgs args;
          auto op = [&](const CheckpointTensor* t) {
            return t ? KernelOperand{t->element(first), t->dtype(), t->fp8_block_scales()} : KernelOperand{};
          };
          args.source = op(task.target);
          for (const auto& term : task.terms)
            args.terms.push_back(term.vector ? KernelTerm{term.ratio, op(term.vector), KernelOperand{}}
                                             : KernelTerm{term.ratio, op(term.chat), op(term.base)});
          args.out = buffer->data();
          args.out_dtype = task.dtype;
          const int64_t grain = 1 << 15;
          const int64_t pieces = int64_t((count + grain - 1) / grain);
          if (with_ops) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && pieces > 1)
            for (int64_t p = 0; p < pieces; ++p) {
              const uint64_t b = first + uint64_t(p) * grain;
              combine_ops_range(task, ops_state, buffer->data(), first, b, std::min<uint64_t>(first + count, b + grain));
            }
          } else if (threads > 1 && pieces > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (int64_t p = 0; p < pieces; ++p) {
              const size_t b = size_t(p) * grain;
              combine_range(args, b, std::min<size_t>(count, b + grain));
            }
          } else {
            combine_range(args, 0, count);
          }
          for (const CheckpointTensor* in : task.inputs()) in->release(first, count);
          writer.submit(buffer);
          advance(count * out_es);
        }
        break;
      }
    }
  }
  check_interrupted();
  writer.drain();
  sink.finish();
  if (opt.progress) opt.progress(total, total);
}

}  // namespace chatvec

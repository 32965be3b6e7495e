#include "merge/executor.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/interrupt.h"
#include "formats/safetensors/safetensors_writer.h"
#include "merge/kernels.h"
#include "merge/row_gather.h"

namespace chatvec {

namespace {

std::vector<TensorSpec> specs_of(const MergePlan& plan) {
  std::vector<TensorSpec> specs;
  specs.reserve(plan.tasks.size());
  for (const auto& t : plan.tasks) specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
  return specs;
}

// The byte range [first, first+count) elements of an input tensor.
void release_elements(const CheckpointTensor* t, uint64_t first, uint64_t count) {
  if (!t) return;
  const uint64_t es = dtype_bits(t->info->dtype) / 8;
  t->file->mapped().release(t->file->file_offset(*t->info) + first * es, count * es);
}

void prefetch_elements(const CheckpointTensor* t, uint64_t first, uint64_t count) {
  if (!t) return;
  const uint64_t es = dtype_bits(t->info->dtype) / 8;
  t->file->mapped().will_need(t->file->file_offset(*t->info) + first * es, count * es);
}

}  // namespace

uint64_t planned_output_bytes(const MergePlan& plan, const ExecuteOptions& opt) {
  uint64_t total = 0;
  for (const auto& s : plan_safetensors_shards(specs_of(plan), opt.shard_size, opt.metadata)) total += s.file_bytes();
  return total;
}

void execute_plan(const MergePlan& plan, const std::string& out_dir, const ExecuteOptions& opt) {
  SafetensorsWriter writer(out_dir, specs_of(plan), opt.shard_size, opt.metadata);
  const uint64_t total = writer.total_bytes();
  uint64_t done = 0;
  std::vector<uint8_t> buffer;

  for (const TensorTask& task : plan.tasks) {
    if (task.kind == TaskKind::Rows) {  // vocabulary tensors, row by row
      gather_rows(task, opt.chunk_bytes, [&](const void* p, size_t n) {
        writer.append(p, n);
        done += n;
        if (opt.progress) opt.progress(done, total);
      });
      continue;
    }
    const uint64_t n = task.numel();
    const uint64_t out_es = dtype_bits(task.dtype) / 8;
    const uint64_t chunk = std::max<uint64_t>(1, opt.chunk_bytes / std::max<uint64_t>(1, out_es));

    for (uint64_t first = 0; first < n; first += chunk) {
      check_interrupted();
      const uint64_t count = std::min(chunk, n - first);
      // Prefetch the next chunk's inputs while this one is processed.
      if (first + count < n) {
        const uint64_t next = std::min(chunk, n - first - count);
        prefetch_elements(task.source, first + count, next);
        for (const auto& term : task.terms) {
          prefetch_elements(term.plus, first + count, next);
          prefetch_elements(term.minus, first + count, next);
        }
      }
      if (task.kind == TaskKind::Copy) {
        // Same dtype: write straight from the map.
        writer.append(task.source->data() + first * out_es, count * out_es);
      } else {
        buffer.resize(count * out_es);
        CombineArgs args;
        const uint64_t base_off = first;
        auto op = [&](const CheckpointTensor* t) {
          KernelOperand o;
          if (t) {
            o.dtype = t->info->dtype;
            o.data = t->data() + base_off * (dtype_bits(t->info->dtype) / 8);
          }
          return o;
        };
        args.source = op(task.source);
        for (const auto& term : task.terms) args.terms.push_back(KernelTerm{term.ratio, op(term.plus), op(term.minus)});
        args.out = buffer.data();
        args.out_dtype = task.dtype;
        const int64_t grain = 1 << 15;
        const int64_t pieces = int64_t((count + grain - 1) / grain);
#pragma omp parallel for schedule(static) if (pieces > 1)
        for (int64_t p = 0; p < pieces; ++p) {
          const size_t b = size_t(p) * grain;
          combine_range(args, b, std::min<size_t>(count, b + grain));
        }
        writer.append(buffer.data(), buffer.size());
      }
      release_elements(task.source, first, count);
      for (const auto& term : task.terms) {
        release_elements(term.plus, first, count);
        release_elements(term.minus, first, count);
      }
      done += count * out_es;
      if (opt.progress) opt.progress(done, total);
    }
  }
  check_interrupted();
  writer.finish();
  if (opt.progress) opt.progress(total, total);
}

}  // namespace chatvec

#include "merge/row_gather.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/interrupt.h"
#include "merge/kernels.h"

namespace chatvec {

namespace {
KernelOperand row_of(const CheckpointTensor* t, int64_t row, uint64_t width) {
  KernelOperand o;
  o.dtype = t->info->dtype;
  o.data = t->data() + uint64_t(row) * width * (dtype_bits(t->info->dtype) / 8);
  return o;
}
void release_rows(const CheckpointTensor* t, const RowMap& map, int64_t first, int64_t count,
                  int64_t RowOp::*which, uint64_t width) {
  if (!t) return;
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t i = first; i < first + count; ++i) {
    const int64_t r = map.rows[size_t(i)].*which;
    if (r < 0) continue;
    lo = std::min(lo, r);
    hi = std::max(hi, r);
  }
  if (hi < 0) return;
  const uint64_t es = dtype_bits(t->info->dtype) / 8;
  t->file->mapped().release(t->file->file_offset(*t->info) + uint64_t(lo) * width * es,
                            uint64_t(hi - lo + 1) * width * es);
}

}  // namespace

void gather_rows(const TensorTask& task, uint64_t chunk_bytes, const std::function<void(const void*, size_t)>& sink) {
  const RowMap& map = *task.row_map;
  const TensorTerm& term = task.terms.at(0);
  const uint64_t width = task.shape[1];
  const uint64_t row_bytes = width * (dtype_bits(task.dtype) / 8);
  const int64_t rows_per_chunk = int64_t(std::max<uint64_t>(1, chunk_bytes / std::max<uint64_t>(1, row_bytes)));
  const int64_t n = int64_t(map.rows.size());
  std::vector<uint8_t> buffer;
  for (int64_t first = 0; first < n; first += rows_per_chunk) {
    check_interrupted();
    const int64_t count = std::min(rows_per_chunk, n - first);
    buffer.resize(size_t(count) * row_bytes);
    // Threads only where there are cores to spare: on two cores the
    // fork-join per chunk costs more than it saves (see the executor).
#pragma omp parallel for schedule(static) if (count * int64_t(width) > (1 << 16) && omp_get_max_threads() > 2)
    for (int64_t i = 0; i < count; ++i) {
      const RowOp& r = map.rows[size_t(first + i)];
      CombineArgs args;
      args.out = buffer.data() + size_t(i) * row_bytes;
      args.out_dtype = task.dtype;
      switch (r.kind) {
        case RowOp::Combine:
          args.source = row_of(task.source, r.source_row, width);
          args.terms.push_back(KernelTerm{term.ratio, row_of(term.plus, r.plus_row, width),
                                          row_of(term.minus, r.minus_row, width)});
          break;
        case RowOp::FromSource:
          args.terms.push_back(KernelTerm{1.0, row_of(task.source, r.source_row, width), KernelOperand{}});
          break;
        case RowOp::FromPlus:
          args.terms.push_back(KernelTerm{1.0, row_of(term.plus, r.plus_row, width), KernelOperand{}});
          break;
      }
      combine_range(args, 0, width);
    }
    sink(buffer.data(), buffer.size());
    // Hand back the input rows this chunk read (the span from the lowest to
    // the highest row of each operand), so that resident memory stays at a
    // chunk's worth whatever the vocabulary size.  Rows needed again later
    // (align orders rows freely) are simply read again.
    release_rows(task.source, map, first, count, &RowOp::source_row, width);
    release_rows(term.plus, map, first, count, &RowOp::plus_row, width);
    release_rows(term.minus, map, first, count, &RowOp::minus_row, width);
  }
}

}  // namespace chatvec

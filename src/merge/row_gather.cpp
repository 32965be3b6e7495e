#include "merge/row_gather.h"

#include <algorithm>
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
#pragma omp parallel for schedule(static) if (count * int64_t(width) > (1 << 16))
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
  }
}

}  // namespace chatvec

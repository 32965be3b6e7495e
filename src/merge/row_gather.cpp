#include "merge/row_gather.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/interrupt.h"
#include "merge/kernels.h"
#include "merge/vector_ops.h"

namespace chatvec {

namespace {
KernelOperand row_of(const CheckpointTensor* t, int64_t row) {
  return KernelOperand{t->row(uint64_t(row)), t->dtype(), t->fp8_block_scales()};
}
// Hand back the rows [lo, hi] of `t` that output rows [first, first+count)
// read (through `which` of their RowOp).
void release_rows(const CheckpointTensor* t, const RowMap& map, int64_t first, int64_t count,
                  int64_t RowOp::*which) {
  if (!t) return;
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t i = first; i < first + count; ++i) {
    const int64_t r = map.rows[size_t(i)].*which;
    if (r < 0 || r >= int64_t(t->rows())) continue;  // (rows of another vector's tensor)
    lo = std::min(lo, r);
    hi = std::max(hi, r);
  }
  if (hi < 0) return;
  t->release_rows(uint64_t(lo), uint64_t(hi - lo + 1));
}

}  // namespace

void gather_rows(const TensorTask& task, uint64_t chunk_bytes, const std::function<void(const void*, size_t)>& sink,
                 const OpsState* ops) {
  const RowMap& map = *task.row_map;
  const uint64_t width = task.shape[1];
  const uint64_t row_bytes = width * (dtype_bits(task.dtype) / 8);
  const int64_t rows_per_chunk = int64_t(std::max<uint64_t>(1, chunk_bytes / std::max<uint64_t>(1, row_bytes)));
  const int64_t n = int64_t(map.rows.size());
  std::vector<uint8_t> buffer;
  // A row the plan copies (the target's own, a transplanted token's chat
  // row) is its source's bytes exactly when the dtypes agree, NaN payloads
  // included, as a whole copied tensor is; otherwise it is converted like
  // any element (false).
  auto copy_row = [&](const CheckpointTensor* src, int64_t row, uint8_t* out) {
    if (src->dtype() != task.dtype) return false;
    std::memcpy(out, src->row(uint64_t(row)), row_bytes);
    return true;
  };
  for (int64_t first = 0; first < n; first += rows_per_chunk) {
    check_interrupted();
    const int64_t count = std::min(rows_per_chunk, n - first);
    buffer.resize(size_t(count) * row_bytes);
    // Threads only where there are cores to spare: on two cores the
    // fork-join per chunk costs more than it saves (see the executor).
#pragma omp parallel for schedule(static) if (count * int64_t(width) > (1 << 16) && omp_get_max_threads() > 2)
    for (int64_t i = 0; i < count; ++i) {
      const RowOp& r = map.rows[size_t(first + i)];
      uint8_t* out = buffer.data() + size_t(i) * row_bytes;
      if (r.kind == RowOp::Zero) {
        std::memset(out, 0, row_bytes);  // +0.0 in every float type
        continue;
      }
      CombineArgs args;
      args.out = out;
      args.out_dtype = task.dtype;
      if (ops && r.kind == RowOp::Combine) {
        combine_ops_row(task, *ops, r, out);
        continue;
      }
      switch (r.kind) {
        case RowOp::Combine:
          if (task.target) args.source = row_of(task.target, r.target_row);
          for (const TensorTerm& term : task.terms) {
            if (term.vector) {
              if (term.base_rows_present && !(*term.base_rows_present)[size_t(r.base_row)]) continue;
              args.terms.push_back(KernelTerm{term.ratio, row_of(term.vector, r.base_row), KernelOperand{}});
            } else {
              args.terms.push_back(
                  KernelTerm{term.ratio, row_of(term.chat, r.chat_row), row_of(term.base, r.base_row)});
            }
          }
          break;
        case RowOp::KeepTarget:
          if (copy_row(task.target, r.target_row, out)) continue;
          args.terms.push_back(KernelTerm{1.0, row_of(task.target, r.target_row), KernelOperand{}});
          break;
        case RowOp::FromChat: {
          const TensorTerm& term = task.terms[size_t(r.term)];
          const CheckpointTensor* from = term.vector ? term.chat_rows : term.chat;
          if (copy_row(from, r.chat_row, out)) continue;
          args.terms.push_back(KernelTerm{1.0, row_of(from, r.chat_row), KernelOperand{}});
          break;
        }
        case RowOp::Zero:
          break;
      }
      combine_range(args, 0, width);
    }
    sink(buffer.data(), buffer.size());
    // Hand back the input rows this chunk read (the span from the lowest to
    // the highest row of each operand), so that resident memory stays at a
    // chunk's worth whatever the vocabulary size.  Rows needed again later
    // (align orders rows freely) are simply read again.
    release_rows(task.target, map, first, count, &RowOp::target_row);
    for (const TensorTerm& term : task.terms) {
      release_rows(term.vector ? term.vector : term.base, map, first, count, &RowOp::base_row);
      release_rows(term.vector ? term.chat_rows : term.chat, map, first, count, &RowOp::chat_row);
    }
  }
}

}  // namespace chatvec

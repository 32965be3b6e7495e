// The element-wise arithmetic of a merge, on raw tensor bytes.
//
//   out = source + r1*(plus1 - minus1) + r2*(plus2 - minus2) + ...
//
// evaluated left to right in fp32 (fp64 when the output is F64) with no fused
// multiply-add, each operand converted exactly from its own dtype, and the
// result rounded to the output dtype to nearest-even as PyTorch does.  A
// missing source means "no base term" (out = r1*(plus1 - minus1) ...), a
// missing minus means the term is a ready-made vector (r * plus).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "formats/fp8_block.h"

namespace chatvec {

struct KernelOperand {
  const void* data = nullptr;  // start of the tensor
  DType dtype = DType::F32;
  // FP8 block-scaled weight (dtype F8_E4M3, data inside fp8->weight):
  // widened by its block dequantisation (formats/fp8_block.h).
  const Fp8BlockScaled* fp8 = nullptr;
};

struct KernelTerm {
  double ratio = 1.0;  // rounded to the compute type (float for fp32) as PyTorch does with a Python scalar
  KernelOperand plus;
  KernelOperand minus;  // data == nullptr: no minus
};

struct CombineArgs {
  KernelOperand source;  // data == nullptr: no source term
  std::vector<KernelTerm> terms;
  void* out = nullptr;
  DType out_dtype = DType::F32;
};

// Compute elements [begin, end) of the output.  Thread-safe for disjoint
// ranges.  All dtypes must be F16, BF16, F32 or F64.
void combine_range(const CombineArgs& args, size_t begin, size_t end);

// Convert elements [begin, end) of `in` (any float dtype) into `out` (any
// float dtype), rounding as above.
void convert_range(const void* in, DType in_dtype, void* out, DType out_dtype, size_t begin, size_t end);

}  // namespace chatvec

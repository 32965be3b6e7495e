// Micro-benchmarks of the merge kernels (src/merge/kernels.h) against a plain
// memcpy of the same bytes, single-threaded.
//
//   build-bench/bench/kernels_bench [--benchmark_filter=BF16]
//
// bytes_per_second counts the bytes a merge moves for the range: the inputs
// read plus the output written (4 operands of 2 bytes for a bf16 combine).
// The Memcpy rows copy that many bytes, so the ratio of the two rates is the
// cost of the arithmetic over pure memory traffic.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "merge/kernels.h"

using namespace chatvec;

namespace {

constexpr size_t kN = 1 << 20;  // elements per iteration: 2 MiB of bf16 per operand

std::vector<uint8_t> random_tensor(DType dt, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint8_t> v(n * dtype_bits(dt) / 8);
  for (size_t i = 0; i < n; ++i) {
    float x = nd(rng);
    switch (dt) {
      case DType::BF16: {
        uint16_t h = f32_to_bf16(x);
        std::memcpy(&v[2 * i], &h, 2);
        break;
      }
      case DType::F16: {
        uint16_t h = f32_to_f16(x);
        std::memcpy(&v[2 * i], &h, 2);
        break;
      }
      default:
        std::memcpy(&v[4 * i], &x, 4);
    }
  }
  return v;
}

// out = target + 0.5 * (chat - base), all in `dt`.
void BM_Combine(benchmark::State& state, DType dt) {
  auto base = random_tensor(dt, kN, 1), chat = random_tensor(dt, kN, 2), target = random_tensor(dt, kN, 3);
  std::vector<uint8_t> out(base.size());
  CombineArgs a;
  a.source = KernelOperand{target.data(), dt};
  a.terms.push_back(KernelTerm{0.5, KernelOperand{chat.data(), dt}, KernelOperand{base.data(), dt}});
  a.out = out.data();
  a.out_dtype = dt;
  for (auto _ : state) {
    combine_range(a, 0, kN);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(4 * base.size()));
  state.counters["ns/elem"] =
      benchmark::Counter(double(kN), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_Convert(benchmark::State& state, DType from, DType to) {
  auto in = random_tensor(from, kN, 4);
  std::vector<uint8_t> out(kN * dtype_bits(to) / 8);
  for (auto _ : state) {
    convert_range(in.data(), from, out.data(), to, 0, kN);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(in.size() + out.size()));
  state.counters["ns/elem"] =
      benchmark::Counter(double(kN), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// memcpy moving `bytes` through memory in all (bytes/2 read, bytes/2 written).
void BM_Memcpy(benchmark::State& state, size_t bytes) {
  std::vector<uint8_t> src(bytes / 2, 1), dst(bytes / 2);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
}

}  // namespace

// out (bf16) = target + 0.5 * (chat - base), the three FP8 block-scaled
// (1024 x 1024 e4m3fn, 128 x 128 blocks of f32 scales): the dequantisation
// on read that FP8 checkpoints take (formats/fp8_block.h).
void BM_Combine_FP8(benchmark::State& state) {
  constexpr uint64_t kRows = 1024, kCols = kN / 1024;
  std::mt19937 rng(4);
  std::vector<std::vector<uint8_t>> w(3, std::vector<uint8_t>(kN));
  std::vector<std::vector<float>> s(3, std::vector<float>(64));
  std::vector<Fp8BlockScaled> f(3);
  for (int k = 0; k < 3; ++k) {
    for (auto& b : w[k]) b = uint8_t(rng() & 0x7E);  // finite
    for (auto& x : s[k]) x = 0.001f * float(1 + rng() % 7);
    f[k] = Fp8BlockScaled{w[k].data(), kRows, kCols, s[k].data(), DType::F32, 128, 128};
  }
  std::vector<uint8_t> out(2 * kN);
  CombineArgs a;
  a.source = KernelOperand{w[2].data(), DType::F8_E4M3, &f[2]};
  a.terms.push_back(KernelTerm{0.5, KernelOperand{w[1].data(), DType::F8_E4M3, &f[1]},
                               KernelOperand{w[0].data(), DType::F8_E4M3, &f[0]}});
  a.out = out.data();
  a.out_dtype = DType::BF16;
  for (auto _ : state) {
    combine_range(a, 0, kN);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(3 * kN + 2 * kN));
  state.counters["ns/elem"] =
      benchmark::Counter(double(kN), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Combine_FP8);

BENCHMARK_CAPTURE(BM_Combine, BF16, DType::BF16);
BENCHMARK_CAPTURE(BM_Combine, F16, DType::F16);
BENCHMARK_CAPTURE(BM_Combine, F32, DType::F32);
BENCHMARK_CAPTURE(BM_Convert, BF16_to_F32, DType::BF16, DType::F32);
BENCHMARK_CAPTURE(BM_Convert, F32_to_BF16, DType::F32, DType::BF16);
BENCHMARK_CAPTURE(BM_Convert, F16_to_F32, DType::F16, DType::F32);
BENCHMARK_CAPTURE(BM_Convert, F32_to_F16, DType::F32, DType::F16);
BENCHMARK_CAPTURE(BM_Convert, BF16_to_F16, DType::BF16, DType::F16);
// Same bytes as the 16-bit combines (4 x 2 MiB) and the f32 combine (4 x 4 MiB).
BENCHMARK_CAPTURE(BM_Memcpy, same_bytes_as_16bit_combine, 4 * 2 * kN);
BENCHMARK_CAPTURE(BM_Memcpy, same_bytes_as_F32_combine, 4 * 4 * kN);

BENCHMARK_MAIN();

// bench_attention: the CUDA attention kernels (kernels/cuda/attention*.cuh), causal, bf16, at GPT-2
// shapes: forward and forward+backward milliseconds (median of timed repeats after warm-up, CUDA
// events on the backend's current stream) and TFLOP/s. The peer measured in the same run is the
// unfused path built from the backend's own ops (q k^T matmul, scale, mask, softmax, matmul), which
// materialises the T x T matrix. PyTorch's F.scaled_dot_product_attention is not reachable from
// C++; compare against it with a Python script on the same machine (numbers in the lead's notes).
//
// FLOPs: causal forward 4 B H T^2 D / 2 (two products, half the matrix); backward 2.5 x forward.
//
// usage: bench_attention [--reps N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/ops.h"

#if defined(ZT_HAVE_CUDA)
#include "bench/timing.h"
#include "kernels/cuda/runtime.h"
#endif

namespace zt {
namespace {

struct Shape4 {
  const char* name;
  int64_t B, H, T, D;
};

#if defined(ZT_HAVE_CUDA)

Tensor random_gpu(const Shape& shape, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = normal(gen);
  return from_vector_as(v, shape, DType::bf16, Device::cuda(0));
}

double time_ms(const std::function<void()>& fn, int reps) { return bench::time_ms({reps, 5, 10}, fn); }

// The unfused peer: scores in device memory. Returns NaN (and says why) if an op is missing.
double time_unfused_forward(const Tensor& q, const Tensor& k, const Tensor& v, int reps) {
  const int64_t T = q.size(2);
  std::vector<double> mask_values(static_cast<size_t>(T * T), 0.0);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = i + 1; j < T; ++j) mask_values[i * T + j] = -INFINITY;
  try {
    const Tensor mask = from_vector_as(mask_values, {T, T}, q.dtype(), q.device());
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    auto run = [&] {
      Tensor s = add(mul_scalar(matmul(q, k, false, true), scale), mask);
      Tensor out = matmul(softmax(s, -1), v);
      (void)out;
    };
    return time_ms(run, reps);
  } catch (const Error& e) {
    std::printf("  (unfused peer unavailable: %s)\n", e.what());
    return NAN;
  }
}

int run(int reps) {
  if (!cuda::is_available()) {
    std::printf("bench_attention: no CUDA device, nothing to measure\n");
    return 0;
  }
  std::printf("bench_attention on %s, bf16, causal, median of %d runs\n", cuda::device_name(0).c_str(), reps);
  const std::vector<Shape4> shapes = {
      {"gpt2-124M", 16, 12, 1024, 64},
      {"gpt2-1.5B", 8, 25, 1024, 64},
      {"D128", 8, 16, 1024, 128},
      {"T4096", 2, 12, 4096, 64},
  };
  const Backend& backend = cuda::backend();
  struct Row {
    Shape4 s;
    double fwd, fwd_bwd, unfused, flops;
  };
  std::vector<Row> rows;
  for (const Shape4& s : shapes) {
    const Shape shape{s.B, s.H, s.T, s.D};
    const Tensor q = random_gpu(shape, 1), k = random_gpu(shape, 2), v = random_gpu(shape, 3),
                 dout = random_gpu(shape, 4);
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
    Row row{s, 0, 0, 0, 4.0 * s.B * s.H * s.T * s.T * s.D / 2};
    row.fwd = time_ms([&] { (void)backend.attention(q, k, v, true, scale); }, reps);
    row.fwd_bwd = time_ms(
        [&] {
          const AttentionResult r = backend.attention(q, k, v, true, scale);
          (void)backend.attention_backward(dout, q, k, v, r.out, r.lse, true, scale);
        },
        reps);
    row.unfused = time_unfused_forward(q, k, v, reps);
    rows.push_back(row);
  }
  std::printf("\n%-10s %4s %3s %5s %4s | %9s %7s | %9s %7s | %12s %8s\n", "shape", "B", "H", "T", "D", "fwd ms",
              "TFLOP/s", "f+b ms", "TFLOP/s", "unfused fwd", "speedup");
  for (const Row& r : rows) {
    std::printf("%-10s %4lld %3lld %5lld %4lld | %9.3f %7.1f | %9.3f %7.1f | %12.3f %8.2f\n", r.s.name,
                static_cast<long long>(r.s.B), static_cast<long long>(r.s.H), static_cast<long long>(r.s.T),
                static_cast<long long>(r.s.D), r.fwd, r.flops / r.fwd / 1e9, r.fwd_bwd, 3.5 * r.flops / r.fwd_bwd / 1e9,
                r.unfused, r.unfused / r.fwd);
  }
  return 0;
}

#else

int run(int) {
  std::printf("bench_attention: built without CUDA, nothing to measure\n");
  return 0;
}

#endif

}  // namespace
}  // namespace zt

int main(int argc, char** argv) {
  int reps = 30;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
      return 2;
    }
  }
  try {
    return zt::run(reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
}

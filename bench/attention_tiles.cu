// attention_tiles: times candidate tile shapes of the attention forward kernel
// (kernels/cuda/attention_forward.cuh) at GPT-2 shapes, so the launcher's choice is measured, not
// guessed. Each row is one instantiation <warps, keys per tile, 16-row tiles per warp>; the first
// column is the launcher's own pick (what CudaBackend::attention runs), timed the same way.
//
// usage: attention_tiles [--repeats N]     (bf16, causal; exits 0 without a GPU)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/timing.h"
#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/tensor.h"
#include "kernels/cuda/attention_forward.cuh"
#include "kernels/cuda/runtime.h"

namespace {

using namespace zt;
using Launch = cudaError_t (*)(const cuda::attn::ForwardParams&, cudaStream_t);

struct Candidate {
  const char* name;
  int head_dim;
  Launch launch;
};

template <int D, int kWarps, int kBlockN, int kMTiles>
Candidate candidate(const char* name) {
  return {name, D, &cuda::attn::launch_attention_forward_t<__nv_bfloat16, D, kWarps, kBlockN, kMTiles>};
}

struct Problem {
  const char* name;
  int64_t B, H, T, D;
};

int run(int repeats) {
  if (cuda::device_count() == 0) {
    std::printf("attention_tiles: no GPU visible; nothing to measure\n");
    return 0;
  }
  const std::vector<Candidate> candidates = {
      candidate<64, 4, 64, 1>("w4 n64 m1"),   candidate<64, 4, 64, 2>("w4 n64 m2"),
      candidate<64, 4, 32, 2>("w4 n32 m2"),   candidate<64, 4, 128, 1>("w4 n128 m1"),
      candidate<64, 8, 64, 1>("w8 n64 m1"),   candidate<64, 8, 64, 2>("w8 n64 m2"),
      candidate<128, 4, 64, 1>("w4 n64 m1"),  candidate<128, 4, 32, 2>("w4 n32 m2"),
      candidate<128, 8, 64, 1>("w8 n64 m1"),
  };
  const std::vector<Problem> problems = {
      {"gpt2-124M", 16, 12, 1024, 64}, {"gpt2-1.5B", 8, 25, 1024, 64}, {"D128", 8, 16, 1024, 128}};
  const Backend& gpu = cuda::backend();
  const bench::Timing timing{repeats, 3, 10};
  std::printf("attention_tiles on %s, bf16, causal, ms per call (median of %d x %d calls)\n\n",
              cuda::device_name(0).c_str(), repeats, timing.calls);
  for (const Problem& pr : problems) {
    // The model's layout: q, k and v are views of one packed [B, T, 3, H, D] buffer; out is [B, T, H, D].
    const int64_t C = pr.H * pr.D;
    Tensor qkv = empty({pr.B, pr.T, 3 * C}, DType::bf16, Device::cuda(0));
    gpu.random_fill(qkv, RandomKind::normal, 1, 0);
    const Shape shape{pr.B, pr.H, pr.T, pr.D}, strides{pr.T * 3 * C, pr.D, 3 * C, 1};
    const Tensor q = make_view(qkv, shape, strides, 0), k = make_view(qkv, shape, strides, C),
                 v = make_view(qkv, shape, strides, 2 * C);
    const double scale = 1.0 / std::sqrt(static_cast<double>(pr.D));
    const double flops = 4.0 * pr.B * pr.H * pr.T * pr.T * pr.D / 2;
    const double backend_ms = bench::time_ms(timing, [&] { (void)gpu.attention(q, k, v, true, scale); });
    std::printf("%-10s backend %.4f ms (%.0f TFLOP/s)\n", pr.name, backend_ms, flops / backend_ms / 1e9);

    Tensor out = empty({pr.B, pr.T, C}, DType::bf16, Device::cuda(0));
    Tensor lse = empty({pr.B, pr.H, pr.T}, DType::f32, Device::cuda(0));
    cuda::attn::ForwardParams p;
    p.q = q.raw_data();
    p.k = k.raw_data();
    p.v = v.raw_data();
    p.out = out.raw_data();
    p.lse = lse.data<float>();
    p.lq = p.lk = p.lv = {strides[0], strides[1], strides[2]};
    p.lout = {pr.T * C, pr.D, C};
    p.heads = static_cast<int>(pr.H);
    p.batch_heads = static_cast<int>(pr.B * pr.H);
    p.seq_len = static_cast<int>(pr.T);
    p.scale = static_cast<float>(scale);
    p.causal = true;
    const cudaStream_t stream = cuda::current_stream(0);
    for (const Candidate& c : candidates) {
      if (c.head_dim != pr.D) continue;
      const cudaError_t err = c.launch(p, stream);
      if (err != cudaSuccess) {
        std::printf("%-10s %-12s launch failed: %s\n", "", c.name, cudaGetErrorString(err));
        continue;
      }
      const double ms = bench::time_ms(timing, [&] { (void)c.launch(p, stream); });
      std::printf("%-10s %-12s %.4f ms (%.0f TFLOP/s)\n", "", c.name, ms, flops / ms / 1e9);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 20;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::max(1, std::atoi(argv[i + 1]));
  try {
    return run(repeats);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_tiles: %s\n", e.what());
    return 1;
  }
}

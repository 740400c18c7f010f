// Kernel benchmark: zerotrain's CUDA kernels at GPT-2 124M training shapes (B*T = 16384 tokens,
// C = 768, vocabulary 50304), timed with CUDA events after a warm-up, median of repeats, on
// random data. bench/peer_kernels.py times PyTorch eager on the same shapes and prints the same
// table; scripts/gpu-check runs both in one GPU run and prints the ratios.
//
// usage: bench_kernels [--repeats N] [--warmup N] [--calls N] [--pause-ms N]
// Timing (bench/timing.h): back-to-back calls between CUDA events, so launch overhead is hidden.
// Prints a markdown table, then one "RESULT <name> <ms>" line per kernel for scripts. Never fails
// because of speed; exits 0 without a GPU.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/tensor.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"
#include "bench/timing.h"

namespace {

using namespace zt;

using Options = bench::Timing;
using bench::time_ms;

struct Row {
  std::string name, shape;
  double ms;
  double flops;  // per call, 0 when not a matrix product
  double bytes;  // moved per call (read + write), 0 when compute-bound
};

const Backend& gpu() { return cuda::backend(); }

Tensor randn(const Shape& shape, DType dtype, uint64_t seed, double scale = 1.0) {
  Tensor t = empty(shape, dtype, Device::cuda(0));
  gpu().random_fill(t, RandomKind::normal, seed, 0);
  if (scale != 1.0) gpu().scale(t, scale);
  return t;
}

Tensor ids(int64_t n, int64_t high, uint64_t seed) {
  Tensor u = empty({n}, DType::f32, Device::cuda(0));
  gpu().random_fill(u, RandomKind::uniform, seed, 0);
  gpu().scale(u, static_cast<double>(high) - 0.5);
  Tensor out = empty({n}, DType::i64, Device::cuda(0));
  gpu().copy_strided(u, out);  // truncation: uniform ids in [0, high)
  return out;
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(v);
  }
  return s;
}

Tensor as3d(const Tensor& t) { return make_view(t, {1, t.size(0), t.size(1)}, {t.numel(), t.size(1), 1}, t.offset()); }

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--repeats") == 0) opt.repeats = std::max(1, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--warmup") == 0) opt.warmup = std::max(0, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--calls") == 0) opt.calls = std::max(1, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--pause-ms") == 0) opt.pause_ms = std::max(0, std::atoi(argv[i + 1]));
  }
  if (cuda::device_count() == 0) {
    fmt::print("bench_kernels: no GPU visible; nothing to measure\n");
    return 0;
  }
  try {
    fmt::print("# zerotrain kernels on {} ({})\n", cuda::device_name(0), cuda::version_info());
    const int64_t tokens = 16384, c = 768, vocab = 50304, valid_vocab = 50257;
    const DType bf16 = DType::bf16;
    std::vector<Row> rows;

    // LayerNorm of the residual stream.
    {
      Tensor x = randn({tokens, c}, bf16, 1), w = randn({c}, bf16, 2), b = randn({c}, bf16, 3);
      Tensor dy = randn({tokens, c}, bf16, 4);
      LayerNormResult f = gpu().layernorm(x, w, b, 1e-5);
      const double act = static_cast<double>(tokens * c) * 2;
      rows.push_back({"layernorm_fwd", dims({tokens, c}) + " bf16",
                      time_ms(opt, [&] { gpu().layernorm(x, w, b, 1e-5); }), 0, 2 * act});
      rows.push_back({"layernorm_bwd", dims({tokens, c}) + " bf16",
                      time_ms(opt, [&] { gpu().layernorm_backward(dy, x, w, f.mean, f.rstd, true); }), 0, 3 * act});
    }
    // Softmax over attention scores [B * H * T, T] (B 16, H 12, T 1024).
    {
      const int64_t r = 16 * 12 * 1024, t = 1024;
      Tensor x = randn({r, t}, bf16, 5), dy = randn({r, t}, bf16, 6);
      Tensor y = gpu().softmax(x);
      const double act = static_cast<double>(r * t) * 2;
      rows.push_back({"softmax_fwd", dims({r, t}) + " bf16", time_ms(opt, [&] { gpu().softmax(x); }), 0, 2 * act});
      rows.push_back({"softmax_bwd", dims({r, t}) + " bf16", time_ms(opt, [&] { gpu().softmax_backward(dy, y); }), 0,
                      3 * act});
    }
    // The classifier's loss: cross entropy forward and backward over the (padded) vocabulary.
    {
      Tensor logits = randn({tokens, vocab}, bf16, 7, 2.0);
      Tensor targets = ids(tokens, valid_vocab, 8);
      const double act = static_cast<double>(tokens * vocab) * 2;
      rows.push_back({"classifier_fwd_bwd", dims({tokens, vocab}) + " bf16", time_ms(opt, [&] {
                        CrossEntropyResult r = gpu().cross_entropy(logits, targets, -100, valid_vocab);
                        gpu().cross_entropy_backward(logits, targets, r.lse, -100, valid_vocab, 1.0 / tokens, Tensor(), false);
                      }),
                      0, 3 * act});
      Tensor dlogits = empty({tokens, vocab}, bf16, Device::cuda(0));
      rows.push_back({"classifier_fused", dims({tokens, vocab}) + " bf16", time_ms(opt, [&] {
                        cuda::cross_entropy_forward_backward(logits, targets, -100, valid_vocab, 1.0 / tokens, dlogits);
                      }),
                      0, 3 * act});
    }
    // The matrix products of one GPT-2 block: y = x W^T (forward), dx = dy W, dW = dy^T x.
    struct Linear {
      const char* name;
      int64_t in, out;
    };
    for (const Linear& l : {Linear{"qkv", c, 3 * c}, Linear{"attn_proj", c, c}, Linear{"fc", c, 4 * c},
                            Linear{"fc_proj", 4 * c, c}}) {
      Tensor x = randn({tokens, l.in}, bf16, 9), w = randn({l.out, l.in}, bf16, 10, 0.02);
      Tensor dy = randn({tokens, l.out}, bf16, 11);
      const double flops = 2.0 * static_cast<double>(tokens) * static_cast<double>(l.in) * static_cast<double>(l.out);
      const std::string shape = dims({tokens, l.in, l.out});
      rows.push_back({fmt::format("gemm_{}_fwd", l.name), shape,
                      time_ms(opt, [&] { gpu().gemm(as3d(x), as3d(w), false, true, 1, Tensor()); }), flops, 0});
      rows.push_back({fmt::format("gemm_{}_bwd_dx", l.name), shape,
                      time_ms(opt, [&] { gpu().gemm(as3d(dy), as3d(w), false, false, 1, Tensor()); }), flops, 0});
      rows.push_back({fmt::format("gemm_{}_bwd_dw", l.name), shape,
                      time_ms(opt, [&] { gpu().gemm(as3d(dy), as3d(x), true, false, 1, Tensor()); }), flops, 0});
    }
    // The fc layer with its bias and GeLU fused into the product (cuBLASLt epilogue).
    {
      Tensor x = randn({tokens, c}, bf16, 12), w = randn({4 * c, c}, bf16, 13, 0.02), b = randn({4 * c}, bf16, 14);
      rows.push_back({"linear_fc_bias_gelu", dims({tokens, c, 4 * c}),
                      time_ms(opt, [&] { cuda::linear_forward(x, w, b, cuda::GemmEpilogue::bias_gelu); }),
                      2.0 * tokens * c * 4 * c, 0});
    }

    // Causal attention at GPT-2 124M's shape, [B, H, T, D] = [16, 12, 1024, 64]. FLOPs: forward
    // 4 B H T^2 D / 2 (two products over half the matrix), backward 2.5 x forward.
    {
      const int64_t B = 16, H = 12, T = 1024, D = 64;
      Tensor q = randn({B, H, T, D}, bf16, 15), k = randn({B, H, T, D}, bf16, 16), v = randn({B, H, T, D}, bf16, 17);
      Tensor dout = randn({B, H, T, D}, bf16, 18);
      const double scale = 1.0 / std::sqrt(static_cast<double>(D));
      const double fwd_flops = 2.0 * static_cast<double>(B * H * T * T * D);
      const std::string shape = dims({B, H, T, D}) + " causal";
      rows.push_back({"attention_fwd", shape, time_ms(opt, [&] { gpu().attention(q, k, v, true, scale); }), fwd_flops, 0});
      rows.push_back({"attention_fwd_bwd", shape, time_ms(opt, [&] {
                        AttentionResult r = gpu().attention(q, k, v, true, scale);
                        gpu().attention_backward(dout, q, k, v, r.out, r.lse, true, scale);
                      }),
                      3.5 * fwd_flops, 0});
      // The model's own layout (Note [Attention layouts]): q, k, v as views of the packed qkv
      // projection [B, T, 3C], dO as a view of [B, T, C].
      const int64_t C = H * D;
      Tensor qkv = randn({B, T, 3 * C}, bf16, 19), g = randn({B, T, C}, bf16, 20);
      const Shape heads{B, H, T, D}, packed{T * 3 * C, D, 3 * C, 1};
      Tensor pq = make_view(qkv, heads, packed, 0), pk = make_view(qkv, heads, packed, C),
             pv = make_view(qkv, heads, packed, 2 * C), pdout = make_view(g, heads, {T * C, D, C, 1}, 0);
      rows.push_back({"attention_packed_fwd", shape, time_ms(opt, [&] { gpu().attention(pq, pk, pv, true, scale); }),
                      fwd_flops, 0});
      rows.push_back({"attention_packed_fwd_bwd", shape, time_ms(opt, [&] {
                        AttentionResult r = gpu().attention(pq, pk, pv, true, scale);
                        gpu().attention_backward(pdout, pq, pk, pv, r.out, r.lse, true, scale);
                      }),
                      3.5 * fwd_flops, 0});
      // cuDNN's non-deterministic backward (opt-in, Note [Deterministic attention]).
      const CudaBackend nondet(CudaBackend::AttentionImpl::automatic_nondeterministic);
      rows.push_back({"attention_nondet_fwd_bwd", shape, time_ms(opt, [&] {
                        AttentionResult r = nondet.attention(pq, pk, pv, true, scale);
                        nondet.attention_backward(pdout, pq, pk, pv, r.out, r.lse, true, scale);
                      }),
                      3.5 * fwd_flops, 0});
      // zerotrain's own kernels (the default above is cuDNN's SDPA where the build has it).
      const CudaBackend own(CudaBackend::AttentionImpl::kernels);
      rows.push_back({"attention_kernels_fwd", shape, time_ms(opt, [&] { own.attention(pq, pk, pv, true, scale); }),
                      fwd_flops, 0});
      rows.push_back({"attention_kernels_fwd_bwd", shape, time_ms(opt, [&] {
                        AttentionResult r = own.attention(pq, pk, pv, true, scale);
                        own.attention_backward(pdout, pq, pk, pv, r.out, r.lse, true, scale);
                      }),
                      3.5 * fwd_flops, 0});
    }

    fmt::print("\n| kernel | shape | ms | TFLOP/s | GB/s |\n| --- | --- | ---: | ---: | ---: |\n");
    for (const Row& r : rows)
      fmt::print("| {} | {} | {:.3f} | {} | {} |\n", r.name, r.shape, r.ms,
                 r.flops > 0 ? fmt::format("{:.0f}", r.flops / (r.ms * 1e-3) / 1e12) : "",
                 r.bytes > 0 ? fmt::format("{:.0f}", r.bytes / (r.ms * 1e-3) / 1e9) : "");
    for (const Row& r : rows) fmt::print("RESULT {} {:.4f}\n", r.name, r.ms);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_kernels: {}\n", e.what());
    return 1;
  }
  return 0;
}

// Matrix products through cuBLASLt against the CPU backend: every transpose combination, odd
// shapes, batches with shared operands, accumulation, and the fused linear epilogues.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <cmath>

#include "cuda_test_util.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cuda/gemm.h"

namespace zt {
namespace {

using namespace zt::test;

// Tolerance scale of a K-long dot product of unit normals: the result is O(sqrt K) and so are
// the rounding differences between two summation orders.
double dot_scale(int64_t k) { return std::sqrt(static_cast<double>(k)) * 4.0; }

Tol gemm_tol(DType d) {
  Tol t = tol_for(d);
  if (d == DType::f32) t.rel = 2e-5;  // different blocking of a long f32 sum
  return t;
}

TEST(CudaGemm, AllTransposesAndOddShapesMatchCpu) {
  ZT_REQUIRE_GPU();
  struct Case {
    int64_t m, n, k;
  };
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (const Case& cs : {Case{1, 1, 1}, Case{17, 33, 65}, Case{128, 768, 768}, Case{3, 2304, 768}, Case{100, 7, 1000}}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          const std::string what = std::string(dtype_name(dtype)) + " m=" + std::to_string(cs.m) + " n=" +
                                   std::to_string(cs.n) + " k=" + std::to_string(cs.k) + (ta ? " a^T" : "") +
                                   (tb ? " b^T" : "");
          Tensor a = randn_cpu(ta ? Shape{1, cs.k, cs.m} : Shape{1, cs.m, cs.k}, dtype, ++seed);
          Tensor b = randn_cpu(tb ? Shape{1, cs.n, cs.k} : Shape{1, cs.k, cs.n}, dtype, ++seed);
          Tensor want = cpu().gemm(a, b, ta, tb, 1, Tensor());
          Tensor got = gpu().gemm(to_gpu(a), to_gpu(b), ta, tb, 1, Tensor());
          EXPECT_EQ(shape_str(got.shape()), shape_str(Shape{1, cs.m, cs.n})) << what;
          expect_close(got, want, gemm_tol(dtype), what, dot_scale(cs.k));
        }
      }
    }
  }
}

TEST(CudaGemm, BatchesSharedOperandsAndAccumulate) {
  ZT_REQUIRE_GPU();
  const int64_t batch = 3, m = 19, n = 24, k = 40;
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::bf16}) {
    struct Case {
      int64_t batch_a, batch_b;
      bool ta, tb;
    };
    for (const Case& cs : {Case{batch, batch, false, false}, Case{batch, 1, false, true}, Case{batch, 1, true, false},
                           Case{1, batch, false, false}, Case{1, batch, true, true}}) {
      for (bool accumulate : {false, true}) {
        const std::string what = std::string(dtype_name(dtype)) + " batch_a=" + std::to_string(cs.batch_a) +
                                 " batch_b=" + std::to_string(cs.batch_b) + (cs.ta ? " a^T" : "") + (cs.tb ? " b^T" : "") +
                                 (accumulate ? " accumulate" : "");
        Tensor a = randn_cpu(cs.ta ? Shape{cs.batch_a, k, m} : Shape{cs.batch_a, m, k}, dtype, ++seed);
        Tensor b = randn_cpu(cs.tb ? Shape{cs.batch_b, n, k} : Shape{cs.batch_b, k, n}, dtype, ++seed);
        Tensor acc = accumulate ? randn_cpu({batch, m, n}, dtype, ++seed) : Tensor();
        Tensor want = cpu().gemm(a, b, cs.ta, cs.tb, batch, acc);
        Tensor got = gpu().gemm(to_gpu(a), to_gpu(b), cs.ta, cs.tb, batch, accumulate ? to_gpu(acc) : Tensor());
        expect_close(got, want, gemm_tol(dtype), what, dot_scale(k));
      }
    }
  }
  // A 2-D accumulate (a broadcast bias made contiguous, as linear() passes it).
  Tensor a = randn_cpu({1, 5, 8}, DType::f32, 1), b = randn_cpu({1, 6, 8}, DType::f32, 2);
  Tensor start = randn_cpu({5, 6}, DType::f32, 3);
  expect_close(gpu().gemm(to_gpu(a), to_gpu(b), false, true, 1, to_gpu(start)), cpu().gemm(a, b, false, true, 1, start),
               gemm_tol(DType::f32), "2-D accumulate", dot_scale(8));
}

TEST(CudaGemm, EmptyInnerDimensionGivesZerosOrTheAccumulator) {
  ZT_REQUIRE_GPU();
  Tensor a = empty({1, 4, 0}, DType::f32, gpu_device()), b = empty({1, 0, 5}, DType::f32, gpu_device());
  for (double v : as_doubles(gpu().gemm(a, b, false, false, 1, Tensor()))) EXPECT_EQ(v, 0.0);
  Tensor acc = to_gpu(randn_cpu({1, 4, 5}, DType::f32, 9));
  expect_close(gpu().gemm(a, b, false, false, 1, acc), acc, {0.0}, "k = 0 with accumulate");
}

TEST(CudaGemm, BadInputs) {
  ZT_REQUIRE_GPU();
  Tensor a = to_gpu(randn_cpu({1, 4, 5}, DType::f32, 1));
  expect_error([&] { gpu().gemm(a, to_gpu(randn_cpu({1, 6, 3}, DType::f32, 2)), false, false, 1, Tensor()); },
               {"[gemm]", "inner dimensions differ"});
  expect_error([&] { gpu().gemm(a, to_gpu(randn_cpu({1, 5, 3}, DType::bf16, 2)), false, false, 1, Tensor()); },
               {"[gemm]", "one floating dtype"});
  expect_error([&] { gpu().gemm(a, to_gpu(randn_cpu({2, 5, 3}, DType::f32, 2)), false, false, 3, Tensor()); },
               {"[gemm]", "batch 3"});
}

// The GeLU of core/ops.h (tanh approximation), in f64.
double gelu(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

TEST(CudaGemm, LinearEpiloguesMatchUnfusedReference) {
  ZT_REQUIRE_GPU();
  const int64_t rows = 77, in = 96, out = 200;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = randn_cpu({rows, in}, dtype, 1), w = randn_cpu({out, in}, dtype, 2, 0.1), bias = randn_cpu({out}, dtype, 3);
    Tensor xg = to_gpu(x), wg = to_gpu(w), bg = to_gpu(bias);
    // Reference in f64 from the same (rounded) inputs.
    const std::vector<double> xv = as_doubles(x), wv = as_doubles(w), bv = as_doubles(bias);
    std::vector<double> pre(static_cast<size_t>(rows * out));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = bv[static_cast<size_t>(o)];
        for (int64_t i = 0; i < in; ++i) s += xv[static_cast<size_t>(r * in + i)] * wv[static_cast<size_t>(o * in + i)];
        pre[static_cast<size_t>(r * out + o)] = s;
      }
    Tensor want_pre = make_cpu({rows, out}, DType::f64, [&](int64_t i) { return pre[static_cast<size_t>(i)]; });
    Tensor want_gelu = make_cpu({rows, out}, DType::f64, [&](int64_t i) { return gelu(pre[static_cast<size_t>(i)]); });
    Tol t = gemm_tol(dtype);
    if (dtype == DType::f32) t.rel = 1e-4;  // the epilogue's GeLU is cuBLASLt's own (fast tanh)
    expect_close(cuda::linear_forward(xg, wg, bg, cuda::GemmEpilogue::bias), want_pre, t, "bias epilogue");
    Tensor pre_gelu;
    Tensor y = cuda::linear_forward(xg, wg, bg, cuda::GemmEpilogue::bias_gelu, &pre_gelu);
    expect_close(y, want_gelu, t, std::string("bias+gelu epilogue ") + dtype_name(dtype));
    expect_close(pre_gelu, want_pre, t, std::string("pre-gelu output ") + dtype_name(dtype));
    expect_close(cuda::linear_forward(xg, wg, bg, cuda::GemmEpilogue::bias_gelu), want_gelu, t, "bias+gelu, no aux");
    Tensor plain = gpu().gemm(make_view(xg, {1, rows, in}, {rows * in, in, 1}, 0),
                              make_view(wg, {1, out, in}, {out * in, in, 1}, 0), false, true, 1, Tensor());
    // The same product through both entry points: the same algorithm, so the same bits, unless
    // autotuning (Note [GEMM autotuning]) timed the two problems apart; then to rounding.
    const char* tune = std::getenv("ZT_GEMM_AUTOTUNE");
    const bool autotuned = tune != nullptr && std::string(tune) == "1";
    expect_close(cuda::linear_forward(xg, wg, Tensor(), cuda::GemmEpilogue::none),
                 make_view(plain, {rows, out}, {out, 1}, 0), autotuned ? gemm_tol(dtype) : Tol{0.0, 0.0},
                 "no epilogue equals gemm");
  }
  Tensor x = to_gpu(randn_cpu({4, 8}, DType::f32, 1)), w = to_gpu(randn_cpu({6, 8}, DType::f32, 2));
  expect_error([&] { cuda::linear_forward(x, w, Tensor(), cuda::GemmEpilogue::bias); }, {"[linear_forward]", "needs bias [6]"});
}

// Backend::linear, the entry the linear and linear_gelu ops use: the CUDA backend's fused epilogues
// against the CPU backend's unfused default, with and without bias, aux output and GeLU.
TEST(CudaGemm, BackendLinearMatchesCpu) {
  ZT_REQUIRE_GPU();
  const int64_t rows = 130, in = 72, out = 264;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = randn_cpu({rows, in}, dtype, 11), w = randn_cpu({out, in}, dtype, 12, 0.1);
    Tensor bias = randn_cpu({out}, dtype, 13);
    Tol t = gemm_tol(dtype);
    if (dtype == DType::f32) t.rel = 1e-4;  // cuBLASLt's GeLU epilogue uses a fast tanh
    for (bool with_bias : {true, false}) {
      for (bool gelu : {false, true}) {
        const Tensor b = with_bias ? bias : Tensor();
        Tensor pre_cpu, pre_gpu;
        Tensor want = cpu().linear(x, w, b, gelu, gelu ? &pre_cpu : nullptr);
        Tensor got = gpu().linear(to_gpu(x), to_gpu(w), with_bias ? to_gpu(bias) : Tensor(), gelu,
                                  gelu ? &pre_gpu : nullptr);
        const std::string what = std::string(dtype_name(dtype)) + (with_bias ? " bias" : "") + (gelu ? " gelu" : "");
        expect_close(got, want, t, what);
        if (gelu) expect_close(pre_gpu, pre_cpu, t, what + " pre-activation");
      }
    }
  }
}

// The backward halves of a linear layer (Backend::linear_weight_grads, linear_input_grad): the
// CUDA backend's BGRADB epilogue against the CPU backend's product and reduction, and the mlp op
// end to end against the CPU.
TEST(CudaGemm, LinearBackwardEpiloguesMatchCpu) {
  ZT_REQUIRE_GPU();
  struct Case {
    int64_t rows, in, out;
  };
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tol t = gemm_tol(dtype);
    for (const Case& cs : {Case{130, 72, 264}, Case{512, 256, 1024}}) {
      const std::string what = std::string(dtype_name(dtype)) + " rows=" + std::to_string(cs.rows) +
                               " in=" + std::to_string(cs.in) + " out=" + std::to_string(cs.out);
      Tensor dy = randn_cpu({cs.rows, cs.out}, dtype, ++seed), x = randn_cpu({cs.rows, cs.in}, dtype, ++seed);
      Tensor w = randn_cpu({cs.out, cs.in}, dtype, ++seed, 0.1), pre = randn_cpu({cs.rows, cs.in}, dtype, ++seed);
      for (bool bias : {true, false}) {
        LinearWeightGrads want = cpu().linear_weight_grads(dy, x, bias);
        LinearWeightGrads got = gpu().linear_weight_grads(to_gpu(dy), to_gpu(x), bias);
        expect_close(got.dweight, want.dweight, t, what + " dw", dot_scale(cs.rows));
        if (bias) expect_close(got.dbias, want.dbias, t, what + " db", dot_scale(cs.rows));
        EXPECT_EQ(got.dbias.defined(), bias) << what;
      }
      for (bool gelu : {false, true}) {
        Tensor want = cpu().linear_input_grad(dy, w, gelu ? pre : Tensor());
        Tensor got = gpu().linear_input_grad(to_gpu(dy), to_gpu(w), gelu ? to_gpu(pre) : Tensor());
        Tol tg = t;
        if (gelu && dtype == DType::f32) tg.rel = 1e-4;  // the product's error, then the GeLU derivative's
        expect_close(got, want, tg, what + (gelu ? " dgelu" : " dx"));
      }
    }
  }
}

TEST(CudaGemm, MlpOpMatchesCpu) {
  ZT_REQUIRE_GPU();
  const int64_t B = 2, T = 65, C = 64, F = 256;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = randn_cpu({B, T, C}, dtype, 1), w1 = randn_cpu({F, C}, dtype, 2, 0.1), b1 = randn_cpu({F}, dtype, 3);
    Tensor w2 = randn_cpu({C, F}, dtype, 4, 0.1), b2 = randn_cpu({C}, dtype, 5), dy = randn_cpu({B, T, C}, dtype, 6);
    std::vector<Tensor> cpu_leaves{x, w1, b1, w2, b2}, gpu_leaves;
    for (Tensor& l : cpu_leaves) {
      gpu_leaves.push_back(to_gpu(l));
      gpu_leaves.back().set_requires_grad(true);
      l.set_requires_grad(true);
    }
    auto run = [](const std::vector<Tensor>& v) { return mlp(v[0], v[1], v[2], v[3], v[4]); };
    Tensor y_cpu = run(cpu_leaves), y_gpu = run(gpu_leaves);
    Tol t = gemm_tol(dtype);
    if (dtype == DType::f32) t.rel = 1e-4;
    const std::string what = dtype_name(dtype);
    expect_close(y_gpu, y_cpu, t, what + " y");
    std::vector<Tensor> g_cpu = grad({y_cpu}, cpu_leaves, {dy}), g_gpu = grad({y_gpu}, gpu_leaves, {to_gpu(dy)});
    const char* names[] = {"dx", "dw1", "db1", "dw2", "db2"};
    for (size_t i = 0; i < g_cpu.size(); ++i) expect_close(g_gpu[i], g_cpu[i], t, what + " " + names[i]);
  }
}

}  // namespace
}  // namespace zt

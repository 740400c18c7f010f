// CUDA attention (kernels/cuda/attention*.cuh) against a naive float64 reference computed here on
// the CPU from the very same bf16/f16 inputs: forward output, lse, and the gradients dq, dk, dv of
// the backward, for short and long sequences, partial tiles, both head dims, causal and not.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/ops.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/cuda_backend.h"

namespace zt {
namespace {

// Both attention paths are held to the reference: the default backend (cuDNN's SDPA where the build
// has it and cuDNN takes the problem) and zerotrain's own kernels alone.
struct Path {
  const char* name;
  const Backend* backend;
  bool deterministic;  // Note [Deterministic attention]: the same bits on every call
};
std::vector<Path> attention_paths() {
  static const CudaBackend kernels_only(CudaBackend::AttentionImpl::kernels);
  std::vector<Path> paths{{"zerotrain kernels", &kernels_only, true}};
  static const CudaBackend nondeterministic(CudaBackend::AttentionImpl::automatic_nondeterministic);
  if (cuda::cudnn_sdpa_compiled()) {
    static const CudaBackend deterministic(CudaBackend::AttentionImpl::automatic);
    paths.push_back({"default (cuDNN where it accepts)", &deterministic, true});
    paths.push_back({"cuDNN, non-deterministic backward", &nondeterministic, false});
  }
  return paths;
}

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"

struct Case {
  int64_t B, H, T, D;
  bool causal;
  DType dtype = DType::bf16;
  double input_scale = 1.0;  // larger inputs give peaky softmax rows (exercises the running max)
  double scale = 0;          // 0: 1/sqrt(D)
};

std::string case_name(const Case& c) {
  // fmt rather than chained string +: g++ 12 reports a false -Wrestrict on "literal" + std::string.
  return fmt::format("B{} H{} T{} D{} {} {} x{}", c.B, c.H, c.T, c.D, c.causal ? "causal" : "full",
                     dtype_name(c.dtype), c.input_scale);
}

double round_to(DType dtype, double x) {
  return dtype == DType::bf16 ? bf16_to_float(float_to_bf16(static_cast<float>(x)))
                              : f16_to_float(float_to_f16(static_cast<float>(x)));
}

// Random values already rounded to the element type, so the reference sees exactly what the GPU sees.
std::vector<double> random_values(int64_t n, DType dtype, double scale, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = round_to(dtype, normal(gen));
  return v;
}

std::vector<double> read_back(const Tensor& t) {
  std::vector<double> out;
  if (t.dtype() == DType::bf16) {
    for (bf16 x : t.to_vector<bf16>()) out.push_back(bf16_to_float(x));
  } else if (t.dtype() == DType::f16) {
    for (f16 x : t.to_vector<f16>()) out.push_back(f16_to_float(x));
  } else {
    for (float x : t.to_vector<float>()) out.push_back(x);
  }
  return out;
}

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive attention and its gradient in float64, one (batch, head) at a time, row by row.
// The backward takes Delta = rowsum(dout * out) from `out_given`, the rounded output the kernel is
// handed (the backward contract's input), not from the exact f64 output: for peaky softmax rows
// dS = P (dP - Delta) cancels, and the bf16 rounding of the forward's output would otherwise be
// charged to the backward kernel.
Reference reference_attention(const Case& c, double scale, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, const std::vector<double>& dout,
                              const std::vector<double>& out_given) {
  const int64_t T = c.T, D = c.D, n = c.B * c.H * T * D;
  Reference r;
  r.out.assign(n, 0.0);
  r.dq.assign(n, 0.0);
  r.dk.assign(n, 0.0);
  r.dv.assign(n, 0.0);
  r.lse.assign(c.B * c.H * T, 0.0);
  std::vector<double> p(T), dp(T);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh) {
    const int64_t base = bh * T * D;
    auto at = [&](const std::vector<double>& x, int64_t row, int64_t d) { return x[base + row * D + d]; };
    for (int64_t i = 0; i < T; ++i) {
      const int64_t keys = c.causal ? i + 1 : T;
      double mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += at(q, i, d) * at(k, j, d);
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < keys; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t j = 0; j < keys; ++j) p[j] /= sum;
      r.lse[bh * T + i] = mx + std::log(sum);
      for (int64_t j = 0; j < keys; ++j)
        for (int64_t d = 0; d < D; ++d) r.out[base + i * D + d] += p[j] * at(v, j, d);
      // Backward of row i: dP = dO v^T, dS = P (dP - Delta), Delta = dO . O.
      double delta = 0;
      for (int64_t d = 0; d < D; ++d) delta += at(dout, i, d) * out_given[base + i * D + d];
      for (int64_t j = 0; j < keys; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += at(dout, i, d) * at(v, j, d);
        dp[j] = p[j] * (s - delta);
      }
      for (int64_t j = 0; j < keys; ++j) {
        for (int64_t d = 0; d < D; ++d) {
          r.dq[base + i * D + d] += scale * dp[j] * at(k, j, d);
          r.dk[base + j * D + d] += scale * dp[j] * at(q, i, d);
          r.dv[base + j * D + d] += p[j] * at(dout, i, d);
        }
      }
    }
  }
  return r;
}

// ||got - want|| / ||want||, with a floor on the denominator for (near-)zero references (T = 1
// gives dq = dk = 0 exactly); also checks every element for NaN and against a per-element bound.
void expect_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                  double tolerance) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff2 += (got[i] - want[i]) * (got[i] - want[i]);
    ref2 += want[i] * want[i];
  }
  const double n = static_cast<double>(got.size());
  const double rms = std::sqrt(ref2 / n);
  const double rel = std::sqrt(diff2) / std::max(std::sqrt(ref2), 1e-3 * std::sqrt(n));
  EXPECT_LT(rel, tolerance) << what << ": relative error " << rel;
  int64_t bad = 0;
  size_t first_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    // Elementwise: bf16 output rounding is 2^-9 relative; the bound leaves room for accumulation order.
    const bool ok = std::isfinite(got[i]) && std::abs(got[i] - want[i]) <= 0.05 * std::abs(want[i]) + 0.05 * rms + 1e-4;
    if (!ok && bad++ == 0) first_bad = i;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " elements off, first at " << first_bad << ": got " << got[first_bad]
                    << ", want " << want[first_bad];
}

void run_case_on(const Case& c, uint64_t seed, const Path& path);

void run_case(const Case& c, uint64_t seed) {
  for (const Path& path : attention_paths()) {
    SCOPED_TRACE(path.name);
    run_case_on(c, seed, path);
  }
}

void run_case_on(const Case& c, uint64_t seed, const Path& path) {
  SCOPED_TRACE(case_name(c));
  const Backend& backend = *path.backend;
  const Shape shape{c.B, c.H, c.T, c.D};
  const int64_t n = c.B * c.H * c.T * c.D;
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.D));
  const Device gpu = Device::cuda(0);
  const std::vector<double> q = random_values(n, c.dtype, c.input_scale, seed);
  const std::vector<double> k = random_values(n, c.dtype, c.input_scale, seed + 1);
  const std::vector<double> v = random_values(n, c.dtype, 1.0, seed + 2);
  const std::vector<double> dout = random_values(n, c.dtype, 1.0, seed + 3);
  const Tensor tq = from_vector_as(q, shape, c.dtype, gpu), tk = from_vector_as(k, shape, c.dtype, gpu),
               tv = from_vector_as(v, shape, c.dtype, gpu), tdout = from_vector_as(dout, shape, c.dtype, gpu);

  const AttentionResult fwd = backend.attention(tq, tk, tv, c.causal, scale);
  ASSERT_EQ(fwd.out.shape(), shape);
  ASSERT_EQ(fwd.out.dtype(), c.dtype);
  ASSERT_EQ(fwd.lse.shape(), Shape({c.B, c.H, c.T}));
  ASSERT_EQ(fwd.lse.dtype(), DType::f32);
  const AttentionGrads grads = backend.attention_backward(tdout, tq, tk, tv, fwd.out, fwd.lse, c.causal, scale);

  const std::vector<double> out = read_back(fwd.out);
  const Reference ref = reference_attention(c, scale, q, k, v, dout, out);
  const double tol = 2e-2;
  expect_close("out", out, ref.out, tol);
  const std::vector<double> lse = read_back(fwd.lse);
  for (size_t i = 0; i < lse.size(); ++i) {
    ASSERT_NEAR(lse[i], ref.lse[i], 1e-3 * (1 + std::abs(ref.lse[i]))) << "lse element " << i;
  }
  expect_close("dq", read_back(grads.dq), ref.dq, tol);
  expect_close("dk", read_back(grads.dk), ref.dk, tol);
  expect_close("dv", read_back(grads.dv), ref.dv, tol);

  // Deterministic: dq is written once per element, never accumulated with atomics.
  if (!path.deterministic) return;
  const AttentionGrads again = backend.attention_backward(tdout, tq, tk, tv, fwd.out, fwd.lse, c.causal, scale);
  EXPECT_EQ(read_back(again.dq), read_back(grads.dq));
  EXPECT_EQ(read_back(again.dk), read_back(grads.dk));
  EXPECT_EQ(read_back(again.dv), read_back(grads.dv));
}

// Note [Attention layouts]: q, k and v read straight out of a packed [B, T, 3, H, D] buffer (as the
// qkv projection writes it), the output as [B, T, H, D] memory, and the gradients written back in
// the packed layout, against the same reference as the contiguous case.
TEST(AttentionCuda, PackedQkvViewsAndHeadsLastOutput) {
  SKIP_WITHOUT_GPU();
  const Case c{2, 3, 200, 64, true};
  const int64_t B = c.B, H = c.H, T = c.T, D = c.D, C = H * D, n = B * H * T * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const std::vector<double> packed = random_values(B * T * 3 * C, c.dtype, 1.0, 501);
  const std::vector<double> dout_btc = random_values(n, c.dtype, 1.0, 502);
  // The same values in [B, H, T, D] order for the reference.
  std::vector<double> q(n), k(n), v(n), dout(n);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d) {
          const size_t bhtd = static_cast<size_t>(((b * H + h) * T + t) * D + d);
          const size_t row = static_cast<size_t>((b * T + t) * 3 * C + h * D + d);
          q[bhtd] = packed[row];
          k[bhtd] = packed[row + C];
          v[bhtd] = packed[row + 2 * C];
          dout[bhtd] = dout_btc[static_cast<size_t>((b * T + t) * C + h * D + d)];
        }
  const Device gpu = Device::cuda(0);
  Tensor qkv = from_vector_as(packed, {B, T, 3 * C}, c.dtype, gpu);
  const Shape heads{B, H, T, D}, strides{T * 3 * C, D, 3 * C, 1};
  Tensor tq = make_view(qkv, heads, strides, 0), tk = make_view(qkv, heads, strides, C),
         tv = make_view(qkv, heads, strides, 2 * C);
  Tensor g_btc = from_vector_as(dout_btc, {B, T, C}, c.dtype, gpu);
  Tensor tdout = make_view(g_btc, heads, {T * C, D, C, 1}, 0);
  for (const Path& path : attention_paths()) {
    SCOPED_TRACE(path.name);
    const Backend& backend = *path.backend;
    ASSERT_TRUE(backend.attention_accepts_layout(tq));
    const AttentionResult fwd = backend.attention(tq, tk, tv, true, scale);
    EXPECT_EQ(fwd.out.strides(), Shape({T * C, D, C, 1})) << "output is [B, T, H, D] memory";
    const std::vector<double> out = read_back(fwd.out);
    const Reference ref = reference_attention(c, scale, q, k, v, dout, out);
    expect_close("out", out, ref.out, 2e-2);
    const AttentionGrads g = backend.attention_backward(tdout, tq, tk, tv, fwd.out, fwd.lse, true, scale);
    EXPECT_EQ(g.dq.strides(), strides) << "gradients take the packed layout";
    EXPECT_EQ(g.dk.storage(), g.dq.storage());
    EXPECT_EQ(g.dk.offset(), g.dq.offset() + C);
    EXPECT_EQ(g.dv.offset(), g.dq.offset() + 2 * C);
    expect_close("dq", read_back(g.dq), ref.dq, 2e-2);
    expect_close("dk", read_back(g.dk), ref.dk, 2e-2);
    expect_close("dv", read_back(g.dv), ref.dv, 2e-2);
    // A misaligned view (rows of 3C + 1 elements) is refused with the layout rule.
    Tensor odd = from_vector_as(random_values(B * T * (3 * C + 1), c.dtype, 1.0, 503), {B, T, 3 * C + 1}, c.dtype, gpu);
    Tensor bad = make_view(odd, heads, {T * (3 * C + 1), D, 3 * C + 1, 1}, 0);
    EXPECT_FALSE(backend.attention_accepts_layout(bad));
    EXPECT_THROW(backend.attention(bad, bad, bad, true, scale), Error);
  }
}

TEST(AttentionCuda, ShortSequencesAndPartialTiles) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (int64_t T : {1, 17, 64, 200}) {
    for (int64_t D : {64, 128}) {
      for (bool causal : {false, true}) run_case({2, 3, T, D, causal}, seed += 10);
    }
  }
}

TEST(AttentionCuda, LongSequence) {
  SKIP_WITHOUT_GPU();
  run_case({1, 2, 1024, 64, true}, 7);
  run_case({1, 1, 1024, 64, false}, 8);
  run_case({1, 1, 1024, 128, true}, 9);
  run_case({1, 1, 1024, 128, false}, 10);
}

TEST(AttentionCuda, HalfPrecisionAndOddShapes) {
  SKIP_WITHOUT_GPU();
  run_case({1, 2, 200, 64, true, DType::f16}, 21);
  run_case({2, 1, 130, 128, false, DType::f16}, 22);
  run_case({3, 1, 333, 64, true}, 23);
  run_case({1, 3, 65, 128, true}, 24);
}

TEST(AttentionCuda, PeakySoftmaxAndCustomScale) {
  SKIP_WITHOUT_GPU();
  // Scores with standard deviation ~9: each row's max changes often across key tiles.
  run_case({1, 2, 300, 64, true, DType::bf16, 3.0}, 31);
  run_case({1, 2, 150, 128, false, DType::bf16, 1.0, 0.3}, 32);
}

TEST(AttentionCuda, RejectsBadInputs) {
  SKIP_WITHOUT_GPU();
  const Backend& backend = cuda::backend();
  const Device gpu = Device::cuda(0);
  auto rand = [&](const Shape& s, DType dtype) {
    return from_vector_as(random_values(shape_numel(s), DType::bf16, 1.0, 5), s, dtype, gpu);
  };
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const Shape s{1, 2, 16, 64};
  const Tensor q = rand(s, DType::bf16);
  expect_error([&] { backend.attention(rand(s, DType::f32), rand(s, DType::f32), rand(s, DType::f32), true, 0.125); },
               "bf16 or f16");
  const Shape s32{1, 2, 16, 32};
  expect_error([&] { backend.attention(rand(s32, DType::bf16), rand(s32, DType::bf16), rand(s32, DType::bf16), true, 0.2); },
               "head dim D must be 64 or 128");
  expect_error([&] { backend.attention(q, rand({1, 2, 8, 64}, DType::bf16), q, true, 0.125); }, "k has shape");
  expect_error([&] { backend.attention(q, rand(s, DType::f16), q, true, 0.125); }, "k is f16");
  expect_error([&] { backend.attention(q, q, q, true, -1.0); }, "scale must be positive");
  const Tensor cpu_k = from_vector_as(random_values(shape_numel(s), DType::bf16, 1.0, 6), s, DType::bf16);
  expect_error([&] { backend.attention(q, cpu_k, q, true, 0.125); }, "CUDA device");
  // Strided rows are fine (Note [Attention layouts]); a non-unit stride in D is not.
  const Tensor strided = transpose(rand({1, 16, 2, 64}, DType::bf16), 1, 2);  // [1, 2, 16, 64], not contiguous
  EXPECT_NO_THROW(backend.attention(q, strided, q, true, 0.125));
  const Tensor d_strided = transpose(rand({1, 2, 64, 16}, DType::bf16), 2, 3);  // [1, 2, 16, 64], D stride 16
  expect_error([&] { backend.attention(q, d_strided, q, true, 0.125); }, "unit stride in D");
  const AttentionResult fwd = backend.attention(q, q, q, true, 0.125);
  const Tensor bad_lse = rand({1, 2, 15}, DType::f32);
  expect_error([&] { backend.attention_backward(q, q, q, q, fwd.out, bad_lse, true, 0.125); }, "lse must be");
}

}  // namespace
}  // namespace zt

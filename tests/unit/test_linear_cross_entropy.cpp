// linear_cross_entropy (Note [Chunked loss]) against the unchunked head, cross_entropy(x W^T), with
// ignored rows and vocabulary padding, for chunk sizes that do and do not divide the rows; its
// gradients against f64 finite differences; and the backend's gemm_into it is built on.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

using testing::relative_error;

struct Head {
  Tensor loss, dx, dw;
};

Tensor targets_for(int64_t rows, int64_t valid, uint64_t seed, int64_t ignore_every = 4) {
  std::vector<int64_t> t = randint({rows}, valid, seed).to_vector<int64_t>();
  for (size_t i = 1; i < t.size(); i += static_cast<size_t>(ignore_every)) t[i] = -100;
  return from_vector(t, {rows});
}

// chunk_rows 0: the unchunked reference, cross_entropy over matmul's logits.
Head run(const Tensor& x0, const Tensor& w0, const Tensor& targets, int64_t chunk_rows, int64_t valid,
         double seed_grad = 1.0) {
  Tensor x = clone(x0).set_requires_grad(true), w = clone(w0).set_requires_grad(true);
  Tensor loss = chunk_rows > 0 ? linear_cross_entropy(x, w, targets, chunk_rows, -100, valid)
                               : cross_entropy(matmul(x, w, false, true), targets, -100, valid);
  backward(mul_scalar(loss, seed_grad));
  return {loss, x.grad(), w.grad()};
}

TEST(LinearCrossEntropy, MatchesTheUnchunkedHeadInF64) {
  const int64_t N = 13, C = 6, V = 11, valid = 9;
  Tensor x = randn({N, C}, 1, 0, DType::f64), w = mul_scalar(randn({V, C}, 2, 0, DType::f64), 0.7);
  Tensor t = targets_for(N, valid, 3);
  const Head want = run(x, w, t, 0, valid, 3.0);
  for (int64_t chunk : {1, 3, 5, 13, 40}) {
    const Head got = run(x, w, t, chunk, valid, 3.0);
    EXPECT_EQ(got.loss.dtype(), DType::f64);
    EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-13) << "chunk " << chunk;
    EXPECT_LT(relative_error(got.dx, want.dx), 1e-13) << "chunk " << chunk;
    EXPECT_LT(relative_error(got.dw, want.dw), 1e-13) << "chunk " << chunk;
  }
}

TEST(LinearCrossEntropy, GradientsMatchFiniteDifferences) {
  const int64_t valid = 5;
  Tensor t = from_vector(std::vector<int64_t>{4, -100, 0, 2, 1, 3, -100}, {7});
  testing::gradcheck(
      [&](const std::vector<Tensor>& in) { return linear_cross_entropy(in[0], in[1], t, 3, -100, valid); },
      {testing::random_f64({7, 4}, 5).set_requires_grad(true),
       testing::random_f64({6, 4}, 6, 0.8).set_requires_grad(true)});
}

TEST(LinearCrossEntropy, BatchedInputsAndEveryFloatType) {
  // x [B, T, C] as the model passes it; 16-bit types against the unchunked head in the same type
  // (both round logits and dlogits to 16 bits) and both against f64.
  const int64_t B = 3, T = 10, C = 16, V = 40, valid = 37;
  Tensor x64 = randn({B, T, C}, 7, 0, DType::f64), w64 = mul_scalar(randn({V, C}, 8, 0, DType::f64), 0.3);
  Tensor t = reshape(targets_for(B * T, valid, 9), {B, T});
  const Head exact = run(x64, w64, t, 0, valid);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    const double tol = dtype == DType::f32 ? 1e-5 : 3e-2;
    Tensor x = to(x64, dtype), w = to(w64, dtype);
    const Head want = run(x, w, t, 0, valid);
    const Head got = run(x, w, t, 7, valid);
    EXPECT_EQ(got.loss.dtype(), DType::f32);
    EXPECT_EQ(got.dx.dtype(), dtype);
    EXPECT_EQ(got.dx.shape(), (Shape{B, T, C}));
    EXPECT_EQ(got.dw.dtype(), dtype);
    EXPECT_NEAR(got.loss.item(), want.loss.item(), tol) << dtype_name(dtype);
    EXPECT_NEAR(got.loss.item(), exact.loss.item(), tol) << dtype_name(dtype);
    EXPECT_LT(relative_error(got.dx, want.dx), tol) << dtype_name(dtype);
    EXPECT_LT(relative_error(got.dw, want.dw), tol) << dtype_name(dtype);
    EXPECT_LT(relative_error(got.dx, exact.dx), tol) << dtype_name(dtype);
    EXPECT_LT(relative_error(got.dw, exact.dw), tol) << dtype_name(dtype);
  }
}

TEST(LinearCrossEntropy, AllIgnoredGivesZeroLossAndGradients) {
  Tensor x = randn({5, 3}, 11), w = randn({4, 3}, 12);
  Tensor t = from_vector(std::vector<int64_t>(5, -100), {5});
  const Head got = run(x, w, t, 2, 4);
  EXPECT_EQ(got.loss.item(), 0.0);
  EXPECT_EQ(norm(got.dx), 0.0);
  EXPECT_EQ(norm(got.dw), 0.0);
}

TEST(LinearCrossEntropy, OnlyWhatRequiresGradGetsAGradient) {
  Tensor x0 = randn({6, 3}, 13), w0 = randn({5, 3}, 14);
  Tensor t = targets_for(6, 5, 15);
  const Head want = run(x0, w0, t, 0, 5);
  Tensor x = clone(x0).set_requires_grad(true);
  backward(linear_cross_entropy(x, w0, t, 4));
  EXPECT_LT(relative_error(x.grad(), want.dx), 1e-6);
  Tensor w = clone(w0).set_requires_grad(true);
  backward(linear_cross_entropy(x0, w, t, 4));
  EXPECT_LT(relative_error(w.grad(), want.dw), 1e-6);
  {
    NoGradGuard no_grad;
    Tensor loss = linear_cross_entropy(x, w, t, 4);
    EXPECT_FALSE(loss.requires_grad());
    EXPECT_NEAR(loss.item(), want.loss.item(), 1e-6);
  }
}

TEST(LinearCrossEntropy, BadInputsAreNamed) {
  Tensor x = randn({4, 3}, 16), w = randn({5, 3}, 17), t = from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4});
  auto expect_error = [](const std::function<void()>& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error([&] { linear_cross_entropy(x, w, t, 0); }, "[linear_cross_entropy] chunk_rows must be >= 1, got 0");
  expect_error([&] { linear_cross_entropy(x, randn({5, 2}, 18), t, 2); }, "weight [V, C]");
  expect_error([&] { linear_cross_entropy(x, w, narrow(t, 0, 0, 3), 2); }, "targets must have x's shape");
  expect_error([&] { linear_cross_entropy(x, w, t, 2, -100, 6); }, "valid_vocab 6 must be in [1, 5]");
  expect_error([&] { linear_cross_entropy(x, to(w, DType::f64), t, 2); }, "[linear_cross_entropy]");
}

TEST(GemmInto, SixteenBitOperandsAccumulateInF32) {
  // Two products summed into one f32 out, against the f64 product of the rounded operands.
  for (DType dtype : {DType::bf16, DType::f16}) {
    Tensor a1 = to(randn({9, 7}, 21), dtype), b1 = to(randn({9, 5}, 22), dtype);
    Tensor a2 = to(randn({9, 7}, 23), dtype), b2 = to(randn({9, 5}, 24), dtype);
    Tensor out = empty({7, 5}, DType::f32, Device::cpu());
    cpu_backend().gemm_into(a1, b1, true, false, out, false);
    cpu_backend().gemm_into(a2, b2, true, false, out, true);
    Tensor want = add(matmul(to(a1, DType::f64), to(b1, DType::f64), true, false),
                      matmul(to(a2, DType::f64), to(b2, DType::f64), true, false));
    EXPECT_LT(relative_error(out, want), 1e-6) << dtype_name(dtype);
    // Into the operands' own dtype, transposed b.
    Tensor same = empty({9, 9}, dtype, Device::cpu());
    cpu_backend().gemm_into(a1, a2, false, true, same, false);
    EXPECT_LT(relative_error(same, matmul(to(a1, DType::f64), to(a2, DType::f64), false, true)), 1e-2);
  }
  Tensor a = randn({3, 4}, 25), b = randn({4, 2}, 26), bad = empty({3, 3}, DType::f32, Device::cpu());
  EXPECT_THROW(cpu_backend().gemm_into(a, b, false, false, bad, false), Error);
  Tensor wide = empty({3, 2}, DType::f64, Device::cpu());
  EXPECT_THROW(cpu_backend().gemm_into(a, b, false, false, wide, false), Error);
}

TEST(InverseTargetCount, CountsTargetsThatAreNotIgnored) {
  Tensor t = from_vector(std::vector<int32_t>{3, -100, 0, -100, 2}, {5});
  EXPECT_FLOAT_EQ(cpu_backend().inverse_target_count(t, -100, 4, DType::f32).item(), 1.0f / 3.0f);
  EXPECT_DOUBLE_EQ(cpu_backend().inverse_target_count(t, -100, 4, DType::f64).item(), 1.0 / 3.0);
  Tensor none = from_vector(std::vector<int64_t>{-100, -100}, {2});
  EXPECT_EQ(cpu_backend().inverse_target_count(none, -100, 4, DType::f32).item(), 0.0);
  EXPECT_THROW(cpu_backend().inverse_target_count(t, -100, 3, DType::f32), Error);  // 3 is out of range
}

}  // namespace
}  // namespace zt

// Reductions and softmax on the GPU against the CPU backend.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"

namespace zt {
namespace {

using namespace zt::test;

std::string mask_str(const std::vector<bool>& mask) {
  std::string s;
  for (bool b : mask) s += b ? '1' : '0';
  return s;
}

TEST(CudaReduce, SumAndMaxOverAnyDimsMatchCpu) {
  ZT_REQUIRE_GPU();
  struct Case {
    Shape shape;
    std::vector<std::vector<bool>> masks;
  };
  const std::vector<Case> cases = {
      {{3, 4, 5}, {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}, {1, 0, 1}, {0, 1, 1}, {1, 1, 1}}},
      {{4096, 96}, {{1, 0}, {0, 1}}},    // a bias gradient (columns, chunked) and row sums
      {{3, 100003}, {{0, 1}, {1, 1}}},   // long rows (chunked) and everything
      {{2, 3, 4, 5, 6}, {{1, 0, 1, 0, 1}, {0, 1, 0, 1, 0}}},
      {{1}, {{1}}},
  };
  uint64_t seed = 40;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (const Case& cs : cases) {
      Tensor x = randn_cpu(cs.shape, dtype, ++seed);
      Tensor xg = to_gpu(x);
      for (const auto& mask : cs.masks) {
        int64_t reduced = 1;
        for (size_t d = 0; d < mask.size(); ++d) reduced *= mask[d] ? cs.shape[d] : 1;
        const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(cs.shape) + " mask " + mask_str(mask);
        // Sums of n unit normals are O(sqrt n); the error of a float sum grows like sqrt(n) roundings.
        Tol t = tol_for(dtype);
        expect_close(gpu().reduce(ReduceOp::sum, xg, mask), cpu().reduce(ReduceOp::sum, x, mask), t, "sum " + what,
                     std::sqrt(static_cast<double>(reduced)) * 4.0);
        expect_close(gpu().reduce(ReduceOp::max, xg, mask), cpu().reduce(ReduceOp::max, x, mask), {0.0}, "max " + what);
      }
    }
  }
}

TEST(CudaReduce, SumIsBitwiseReproducible) {
  ZT_REQUIRE_GPU();
  Tensor x = to_gpu(randn_cpu({16384, 768}, DType::bf16, 3));
  for (const std::vector<bool>& mask : {std::vector<bool>{1, 0}, std::vector<bool>{0, 1}, std::vector<bool>{1, 1}})
    expect_same_bits(gpu().reduce(ReduceOp::sum, x, mask), gpu().reduce(ReduceOp::sum, x, mask), "repeat " + mask_str(mask));
}

TEST(CudaReduce, MaxLastDimFindsTheFirstMaximum) {
  ZT_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
    // Coarse values (integers in [0, 20)) make ties common: the index must be the first one.
    for (const Shape& shape : {Shape{7, 13}, Shape{5, 1000}, Shape{2, 3, 33}, Shape{50000}}) {
      Tensor x = randint_cpu(shape, dtype, 9, 0, 20);
      auto [want_v, want_i] = cpu().max_last_dim(x);
      auto [got_v, got_i] = gpu().max_last_dim(to_gpu(x));
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape);
      expect_close(got_v, want_v, {0.0}, "max values " + what);
      expect_same_bits(got_i, want_i, "argmax " + what);
    }
  }
  // A NaN is the maximum (the first one), as on the CPU; max over dims propagates it too.
  Tensor x = make_cpu({3, 70}, DType::f32, [](int64_t i) { return i == 75 || i == 90 ? NAN : static_cast<double>(i % 7); });
  auto [want_v, want_i] = cpu().max_last_dim(x);
  auto [got_v, got_i] = gpu().max_last_dim(to_gpu(x));
  expect_close(got_v, want_v, {0.0}, "max values with NaN");
  expect_same_bits(got_i, want_i, "argmax with NaN");
  expect_close(gpu().reduce(ReduceOp::max, to_gpu(x), {false, true}), cpu().reduce(ReduceOp::max, x, {false, true}),
               {0.0}, "max over a dim with NaN");
}

TEST(CudaReduce, IntegerReductions) {
  ZT_REQUIRE_GPU();
  // The GPU also reduces i32/i64 (the CPU backend does not): checked against exact host sums.
  Tensor x = randint_cpu({37, 1001}, DType::i64, 5, -1000, 1000);
  const std::vector<double> xv = as_doubles(x);
  const std::vector<double> rows = as_doubles(gpu().reduce(ReduceOp::sum, to_gpu(x), {false, true}));
  const std::vector<double> cols = as_doubles(gpu().reduce(ReduceOp::max, to_gpu(x), {true, false}));
  for (int64_t r = 0; r < 37; ++r) {
    double s = 0;
    for (int64_t c = 0; c < 1001; ++c) s += xv[static_cast<size_t>(r * 1001 + c)];
    EXPECT_EQ(rows[static_cast<size_t>(r)], s) << r;
  }
  for (int64_t c = 0; c < 1001; ++c) {
    double m = -1e300;
    for (int64_t r = 0; r < 37; ++r) m = std::max(m, xv[static_cast<size_t>(r * 1001 + c)]);
    EXPECT_EQ(cols[static_cast<size_t>(c)], m) << c;
  }
}

TEST(CudaReduce, SumSquaresAndFiniteness) {
  ZT_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
    for (int64_t n : {1, 1000, 1234567}) {
      Tensor x = randn_cpu({n}, dtype, static_cast<uint64_t>(n));
      const double want = cpu().sum_squares(x), got = gpu().sum_squares(to_gpu(x));
      EXPECT_NEAR(got, want, 1e-12 * want + 1e-300) << dtype_name(dtype) << " n=" << n;
      EXPECT_TRUE(gpu().all_finite(to_gpu(x)));
    }
  }
  for (double bad : {INFINITY, -INFINITY, NAN}) {
    Tensor x = make_cpu({10007}, DType::bf16, [&](int64_t i) { return i == 9001 ? bad : 1.0; });
    EXPECT_FALSE(gpu().all_finite(to_gpu(x))) << bad;
  }
  EXPECT_EQ(gpu().sum_squares(empty({0}, DType::f32, gpu_device())), 0.0);
}

// The gradient norm's device-side accumulation: acc += sum of squares, several tensors into one
// f64 on each backend, equal to the sum of the host-returned values.
TEST(CudaReduce, SumSquaresIntoAccumulatesOnTheDevice) {
  ZT_REQUIRE_GPU();
  Tensor acc_cpu = make_cpu({1}, DType::f64, [](int64_t) { return 0.5; });
  Tensor acc_gpu = to_gpu(acc_cpu);
  double want = 0.5;
  for (int64_t n : {7, 4096, 300001}) {
    Tensor x = randn_cpu({n}, DType::bf16, static_cast<uint64_t>(n) + 11);
    want += cpu().sum_squares(x);
    cpu().sum_squares_into(x, acc_cpu);
    gpu().sum_squares_into(to_gpu(x), acc_gpu);
  }
  gpu().sum_squares_into(empty({0}, DType::bf16, gpu_device()), acc_gpu);  // adds nothing
  EXPECT_NEAR(acc_cpu.item(), want, 1e-12 * want);
  EXPECT_NEAR(acc_gpu.item(), want, 1e-12 * want);
}

TEST(CudaSoftmax, ForwardAndBackwardMatchCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 1000;
  // Odd widths (element by element), short rows of whole 16-byte packs (one warp per row, 1, 2 or
  // 4 packs per lane), long ones (one block per row), and GPT-2 vocabulary rows.
  for (const Shape& shape : {Shape{7, 13}, Shape{4, 64}, Shape{9, 256}, Shape{33, 1000}, Shape{11, 1024},
                             Shape{3, 50304}, Shape{5, 50257}, Shape{1, 1}}) {
    for (DType dtype : float_types()) {
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape);
      Tensor x = randn_cpu(shape, dtype, ++seed, 3.0), g = randn_cpu(shape, dtype, ++seed);
      Tensor xg = to_gpu(x), gg = to_gpu(g);
      Tol t = tol_for(dtype);
      // f32 is checked against the CPU in f64: its f32 sums over 50k columns are the less exact side.
      Tensor yg = gpu().softmax(xg), lyg = gpu().log_softmax(xg);
      expect_close(yg, cpu().softmax(reference(x)), t, "softmax " + what);
      expect_close(lyg, cpu().log_softmax(reference(x)), t, "log_softmax " + what);
      // The backward passes both start from the GPU's forward output.
      expect_close(gpu().softmax_backward(gg, yg), cpu().softmax_backward(reference(g), reference(to_cpu(yg))), t,
                   "softmax backward " + what);
      expect_close(gpu().log_softmax_backward(gg, lyg), cpu().log_softmax_backward(reference(g), reference(to_cpu(lyg))),
                   t, "log_softmax backward " + what);
    }
  }
  expect_error([] { gpu().softmax(to_gpu(randn_cpu({2, 3}, DType::f64, 1))); }, {"[softmax]", "f64"});
}

}  // namespace
}  // namespace zt

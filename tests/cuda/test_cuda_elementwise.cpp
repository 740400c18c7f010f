// Elementwise kernels on the GPU against the CPU backend: broadcast binary ops, the unary family
// and its derivatives, axpy/scale, and dropout (whose mask must match the CPU's exactly).
#include <gtest/gtest.h>

#include "cuda_test_util.h"

namespace zt {
namespace {

using namespace zt::test;

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "?";
}

// a broadcast view of x at `shape` (stride 0 on its size-1 dims), as the ops layer passes.
Tensor expanded(const Tensor& x, const Shape& shape) {
  Shape strides = x.strides();
  for (size_t d = 0; d < shape.size(); ++d)
    if (x.shape()[d] == 1 && shape[d] != 1) strides[d] = 0;
  return make_view(x, shape, strides, x.offset());
}

TEST(CudaElementwise, BinaryBroadcastMatchesCpu) {
  ZT_REQUIRE_GPU();
  struct Case {
    Shape a, b, out;
  };
  const std::vector<Case> cases = {
      {{1000}, {1000}, {1000}},
      {{3, 333}, {3, 333}, {3, 333}},
      {{5, 1, 7}, {1, 6, 7}, {5, 6, 7}},
      {{64, 768}, {1, 768}, {64, 768}},  // a bias
      {{17, 1}, {17, 129}, {17, 129}},
  };
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i32, DType::i64}) {
    for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
      const bool integer = !is_floating(dtype);
      if (integer && op == BinaryOp::div) continue;  // the ops layer allows no integer division
      for (const Case& cs : cases) {
        Tensor a = integer ? randint_cpu(cs.a, dtype, ++seed, -1000, 1000) : randn_cpu(cs.a, dtype, ++seed);
        // Divisors kept away from zero.
        Tensor b = integer ? randint_cpu(cs.b, dtype, ++seed, -1000, 1000)
                           : (op == BinaryOp::div ? uniform_cpu(cs.b, dtype, ++seed, 0.5, 2.0) : randn_cpu(cs.b, dtype, ++seed));
        Tensor ag = to_gpu(a), bg = to_gpu(b);
        Tensor want = empty(cs.out, dtype, Device::cpu());
        cpu().binary(op, expanded(a, cs.out), expanded(b, cs.out), want);
        Tensor got = empty(cs.out, dtype, gpu_device());
        gpu().binary(op, expanded(ag, cs.out), expanded(bg, cs.out), got);
        expect_close(got, want, tol_for(dtype),
                     std::string(binary_name(op)) + " " + dtype_name(dtype) + " " + shape_str(cs.out));
      }
    }
  }
}

const std::vector<UnaryOp> kUnaryOps = {UnaryOp::neg,  UnaryOp::exp,  UnaryOp::log,        UnaryOp::sqrt,
                                        UnaryOp::tanh, UnaryOp::relu, UnaryOp::gelu,       UnaryOp::add_scalar,
                                        UnaryOp::mul_scalar, UnaryOp::pow_scalar};

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::relu: return "relu";
    case UnaryOp::gelu: return "gelu";
    case UnaryOp::add_scalar: return "add_scalar";
    case UnaryOp::mul_scalar: return "mul_scalar";
    case UnaryOp::pow_scalar: return "pow_scalar";
  }
  return "?";
}

Tensor unary_input(UnaryOp op, DType dtype, const Shape& shape, uint64_t seed) {
  const bool positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::pow_scalar;
  return positive ? uniform_cpu(shape, dtype, seed, 0.1, 3.0) : randn_cpu(shape, dtype, seed, 2.0);
}

double unary_scalar(UnaryOp op) { return op == UnaryOp::pow_scalar ? 1.7 : op == UnaryOp::add_scalar ? 0.375 : -1.25; }

TEST(CudaElementwise, UnaryAndBackwardMatchCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (UnaryOp op : kUnaryOps) {
      for (const Shape& shape : {Shape{1}, Shape{1000}, Shape{7, 131}}) {
        const std::string what = std::string(unary_name(op)) + " " + dtype_name(dtype) + " " + shape_str(shape);
        const double s = unary_scalar(op);
        Tensor x = unary_input(op, dtype, shape, ++seed);
        Tensor xg = to_gpu(x);
        Tensor want = cpu().unary(op, x, s);
        Tensor got = gpu().unary(op, xg, s);
        expect_close(got, want, tol_for(dtype), what);
        // The backward, given x and y as the ops layer does (both here), and with y recomputed.
        Tensor g = randn_cpu(shape, dtype, ++seed);
        Tensor dwant = cpu().unary_backward(op, g, x, want, s);
        Tensor dgot = gpu().unary_backward(op, to_gpu(g), xg, got, s);
        Tol t = tol_for(dtype);
        if (is_half(dtype)) t.rel *= 2;  // y itself was rounded to 16 bits before the derivative used it
        expect_close(dgot, dwant, t, what + " backward");
        Tensor drecomputed = gpu().unary_backward(op, to_gpu(g), xg, Tensor(), s);
        expect_close(drecomputed, dwant, t, what + " backward, y recomputed");
      }
    }
  }
}

TEST(CudaElementwise, AxpyAndScaleMatchCpu) {
  ZT_REQUIRE_GPU();
  for (DType dst_type : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    Tensor dst = randn_cpu({4097}, dst_type, 1), src = randn_cpu({4097}, dst_type, 2);
    Tensor dst_g = to_gpu(dst);
    cpu().axpy(dst, src, -0.7);
    gpu().axpy(dst_g, to_gpu(src), -0.7);
    expect_close(dst_g, dst, tol_for(dst_type), std::string("axpy ") + dtype_name(dst_type));
    Tensor x = randn_cpu({333}, dst_type, 3);
    Tensor xg = to_gpu(x);
    cpu().scale(x, 0.3);
    gpu().scale(xg, 0.3);
    expect_close(xg, x, tol_for(dst_type), std::string("scale ") + dtype_name(dst_type));
  }
  // The GPU also adds a bf16 source into an f32 destination directly (gradient accumulation).
  Tensor dst = randn_cpu({1001}, DType::f32, 3), src = randn_cpu({1001}, DType::bf16, 4);
  Tensor dst_g = to_gpu(dst);
  gpu().axpy(dst_g, to_gpu(src), 0.25);
  Tensor src_f32 = empty({1001}, DType::f32, Device::cpu());
  cpu().copy_strided(src, src_f32);
  cpu().axpy(dst, src_f32, 0.25);
  expect_close(dst_g, dst, tol_for(DType::f32), "axpy f32 += bf16");
}

TEST(CudaElementwise, DropoutMaskMatchesCpuExactly) {
  ZT_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (double p : {0.1, 0.5, 0.9}) {
      for (uint64_t offset : {uint64_t{0}, uint64_t{5}, uint64_t{1} << 40}) {
        // Inputs with no zeros, so a zero output means a dropped element.
        Tensor x = uniform_cpu({3, 1001}, dtype, 77, 0.5, 1.5);
        Tensor want = cpu().dropout(x, p, 1234, offset);
        Tensor got = gpu().dropout(to_gpu(x), p, 1234, offset);
        const std::vector<double> w = as_doubles(want), g = as_doubles(got);
        int64_t dropped = 0, mismatched = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          dropped += w[i] == 0.0;
          mismatched += (w[i] == 0.0) != (g[i] == 0.0);
        }
        EXPECT_EQ(mismatched, 0) << "dropout masks differ, p=" << p << " offset=" << offset;
        EXPECT_NEAR(static_cast<double>(dropped) / static_cast<double>(w.size()), p, 0.05);
        expect_close(got, want, tol_for(dtype), "dropout values");
      }
    }
  }
  Tensor x = to_gpu(randn_cpu({100}, DType::f32, 1));
  for (double v : as_doubles(gpu().dropout(x, 1.0, 1, 0))) EXPECT_EQ(v, 0.0);
  expect_close(gpu().dropout(x, 0.0, 1, 0), x, {0.0}, "dropout p=0 is the identity");
}

TEST(CudaElementwise, BadInputs) {
  ZT_REQUIRE_GPU();
  Tensor a = to_gpu(randn_cpu({4}, DType::f32, 1));
  Tensor b = to_gpu(randn_cpu({4}, DType::bf16, 2));
  Tensor out = empty({4}, DType::f32, gpu_device());
  expect_error([&] { gpu().binary(BinaryOp::add, a, b, out); }, {"[binary]", "one dtype"});
  expect_error([&] { gpu().unary(UnaryOp::exp, randn_cpu({4}, DType::f32, 1), 0.0); }, {"[unary]", "cpu"});
  expect_error([&] { gpu().dropout(a, 1.5, 1, 0); }, {"[dropout]", "p must be in [0, 1]"});
}

}  // namespace
}  // namespace zt

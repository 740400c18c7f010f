// Test helpers: naive references and finite-difference gradient checks in f64.
//
// gradcheck(f, inputs) compares the autograd gradient of L = sum(f(inputs) * R), R a fixed random
// tensor, against central differences (L(x + h e_i) - L(x - h e_i)) / 2h for every element of every
// input that requires grad. Inputs must be f64 on the CPU (they may be non-contiguous views).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"

namespace zt::testing {

inline Tensor random_f64(const Shape& shape, uint64_t seed, double scale = 1.0) {
  return mul_scalar(randn(shape, seed, 0, DType::f64), scale);
}

// A non-contiguous f64 tensor of the given shape holding random values: a transposed view of a
// larger buffer, so kernels that ignore strides fail the checks.
inline Tensor random_noncontiguous_f64(const Shape& shape, uint64_t seed) {
  ZT_ASSERT(shape.size() >= 2, "random_noncontiguous_f64 needs at least 2 dims");
  Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  swapped.back() += 1;  // a padded last dim, then narrowed away
  Tensor base = randn(swapped, seed, 0, DType::f64);
  Tensor narrowed = narrow(base, -1, 0, swapped.back() - 1);
  return transpose(narrowed, -1, -2);
}

inline double relative_error(const Tensor& out, const Tensor& ref) {
  Tensor o = to(contiguous(out), DType::f64), r = to(contiguous(ref), DType::f64);
  double denom = norm(r);
  double diff = norm(sub(o, r));
  return denom == 0 ? diff : diff / denom;
}

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline void gradcheck(const TensorFn& f, std::vector<Tensor> inputs, double h = 1e-6, double tol = 1e-6,
                      uint64_t seed = 1234) {
  for (Tensor& x : inputs)
    ASSERT_TRUE(!x.defined() || !x.requires_grad() || x.dtype() == DType::f64) << "gradcheck wants f64 inputs";
  Tensor probe;
  {
    NoGradGuard no_grad;
    Tensor out = f(inputs);
    probe = randn(out.shape(), seed, 0, DType::f64);
  }
  auto loss_of = [&](const std::vector<Tensor>& xs) {
    NoGradGuard no_grad;
    return sum(mul(f(xs), probe)).item();
  };
  // Analytic gradients.
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) {
    if (!x.defined() || !x.requires_grad()) {
      leaves.push_back(x);
      continue;
    }
    Tensor leaf = x.detach();
    leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  Tensor loss = sum(mul(f(leaves), probe));
  backward(loss);
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].defined() || !inputs[k].requires_grad()) continue;
    Tensor analytic = leaves[k].grad();
    ASSERT_TRUE(analytic.defined()) << "input " << k << " got no gradient";
    ASSERT_EQ(analytic.shape(), inputs[k].shape());
    std::vector<double> a = to(contiguous(analytic), DType::f64).to_vector<double>();
    // Numeric gradients: perturb a private contiguous copy element by element (never the caller's
    // storage, which another input may share).
    Tensor base = clone(inputs[k].detach());
    double* p = base.data<double>();
    std::vector<Tensor> xs = inputs;
    xs[k] = base;
    for (int64_t i = 0; i < base.numel(); ++i) {
      double saved = p[i];
      p[i] = saved + h;
      double plus = loss_of(xs);
      p[i] = saved - h;
      double minus = loss_of(xs);
      p[i] = saved;
      double numeric = (plus - minus) / (2 * h);
      double err = std::abs(numeric - a[static_cast<size_t>(i)]);
      ASSERT_LE(err, tol * std::max(1.0, std::abs(numeric)))
          << "input " << k << " element " << i << ": analytic " << a[static_cast<size_t>(i)] << ", numeric "
          << numeric;
    }
  }
}

// Expect `statement` to throw zt::Error whose message contains every one of `parts`.
#define EXPECT_ZT_ERROR(statement, ...)                                                     \
  do {                                                                                      \
    try {                                                                                   \
      statement;                                                                            \
      ADD_FAILURE() << "expected zt::Error from " #statement;                               \
    } catch (const ::zt::Error& e) {                                                        \
      for (const std::string& part : std::vector<std::string>{__VA_ARGS__})                 \
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos)                      \
            << "message '" << e.what() << "' lacks '" << part << "'";                       \
    }                                                                                       \
  } while (0)

}  // namespace zt::testing

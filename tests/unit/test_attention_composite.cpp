// The attention fallback built from ops (used where a backend's fused kernel does not take the
// dtype or head dim, e.g. f32 or D = 16 on CUDA) against the fused CPU kernel, and its gradients
// against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops/op_helpers.h"
#include "gradcheck.h"

namespace zt {
namespace {

TEST(CompositeAttention, MatchesTheFusedKernel) {
  for (bool causal : {true, false}) {
    Tensor q = randn({2, 3, 7, 5}, 1), k = randn({2, 3, 7, 5}, 2), v = randn({2, 3, 7, 5}, 3);
    const double scale = 1.0 / std::sqrt(5.0);
    Tensor want = scaled_dot_product_attention(q, k, v, causal);
    Tensor got = ops::composite_attention(q, k, v, causal, scale);
    EXPECT_LT(testing::relative_error(got, want), 1e-6) << "causal " << causal;
  }
}

TEST(CompositeAttention, GradientsMatchFiniteDifferences) {
  std::vector<Tensor> in = {testing::random_f64({1, 2, 5, 3}, 4), testing::random_f64({1, 2, 5, 3}, 5),
                            testing::random_f64({1, 2, 5, 3}, 6)};
  for (Tensor& t : in) t.set_requires_grad(true);
  testing::gradcheck([](const std::vector<Tensor>& x) { return ops::composite_attention(x[0], x[1], x[2], true, 0.6); },
                     in);
}

}  // namespace
}  // namespace zt

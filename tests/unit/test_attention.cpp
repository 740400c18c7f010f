// scaled_dot_product_attention against a naive f64 softmax(q k^T * scale + mask) v with the full
// T x T matrix, causal and not, T not a multiple of anything; gradients of q, k and v against f64
// finite differences; f32/bf16 backward against the f64 backward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

using testing::gradcheck;

std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(t.detach(), DType::f64).to_vector<double>();
}

struct NaiveAttention {
  std::vector<double> out, lse;
};

NaiveAttention naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  const std::vector<double> qv = host(q), kv = host(k), vv = host(v);
  const int64_t heads = q.size(0) * q.size(1), t_len = q.size(2), d = q.size(3);
  NaiveAttention r;
  r.out.assign(qv.size(), 0.0);
  for (int64_t h = 0; h < heads; ++h) {
    const size_t base = static_cast<size_t>(h * t_len * d);
    std::vector<double> s(static_cast<size_t>(t_len * t_len));
    for (int64_t i = 0; i < t_len; ++i) {
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < t_len; ++j) {
        double x = 0;
        for (int64_t c = 0; c < d; ++c) x += qv[base + static_cast<size_t>(i * d + c)] * kv[base + static_cast<size_t>(j * d + c)];
        x = causal && j > i ? -std::numeric_limits<double>::infinity() : x * scale;
        s[static_cast<size_t>(i * t_len + j)] = x;
        m = std::max(m, x);
      }
      double l = 0;
      for (int64_t j = 0; j < t_len; ++j) l += std::exp(s[static_cast<size_t>(i * t_len + j)] - m);
      r.lse.push_back(m + std::log(l));
      for (int64_t j = 0; j < t_len; ++j) {
        const double p = std::exp(s[static_cast<size_t>(i * t_len + j)] - m) / l;
        for (int64_t c = 0; c < d; ++c) r.out[base + static_cast<size_t>(i * d + c)] += p * vv[base + static_cast<size_t>(j * d + c)];
      }
    }
  }
  return r;
}

void expect_close(const Tensor& out, const std::vector<double>& ref, double tol, const std::string& what) {
  std::vector<double> o = host(out);
  ASSERT_EQ(o.size(), ref.size()) << what;
  for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], ref[i], tol * (1 + std::abs(ref[i]))) << what << " element " << i;
}

// [B, H, T, D] as a non-contiguous view of a [B, T, H, D] buffer, as a model produces it.
Tensor heads_view(int64_t b, int64_t h, int64_t t, int64_t d, uint64_t seed, DType dtype) {
  return transpose(randn({b, t, h, d}, seed, 0, dtype), 1, 2);
}

TEST(Attention, ForwardMatchesNaiveSoftmaxCausalAndNot) {
  struct Case {
    int64_t b, h, t, d;
  };
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    // Odd T and D (partial row blocks, padded tiles); the last case is large enough for threads.
    for (const Case& c : {Case{2, 3, 13, 5}, Case{1, 2, 1, 4}, Case{2, 1, 7, 16}, Case{2, 4, 67, 24}}) {
      for (bool causal : {true, false}) {
        Tensor q = heads_view(c.b, c.h, c.t, c.d, seed++, dtype);
        Tensor k = randn({c.b, c.h, c.t, c.d}, seed++, 0, dtype);
        Tensor v = heads_view(c.b, c.h, c.t, c.d, seed++, dtype);
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
        NaiveAttention ref = naive_attention(q, k, v, causal, scale);
        const double tol = dtype == DType::f64 ? 1e-12 : is_half(dtype) ? 2e-2 : 1e-5;
        const std::string what = std::string(dtype_name(dtype)) + " " + q.describe() + (causal ? " causal" : "");
        Tensor out = scaled_dot_product_attention(q, k, v, causal);
        ASSERT_EQ(out.shape(), q.shape());
        expect_close(out, ref.out, tol, what);
        AttentionResult r = cpu_backend().attention(contiguous(q), k, contiguous(v), causal, scale);
        expect_close(r.lse, ref.lse, dtype == DType::f64 ? 1e-12 : 1e-5 + (is_half(dtype) ? 1e-2 : 0.0), what + " lse");
      }
    }
  }
}

TEST(Attention, ExplicitScale) {
  Tensor q = randn({1, 2, 9, 4}, 1), k = randn({1, 2, 9, 4}, 2), v = randn({1, 2, 9, 4}, 3);
  expect_close(scaled_dot_product_attention(q, k, v, true, 0.3), naive_attention(q, k, v, true, 0.3).out, 1e-5,
               "scale 0.3");
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  // D = 9 spans two register tiles; T = 9 spans three row blocks, the last one partial.
  for (bool causal : {true, false}) {
    Tensor q = randn({1, 1, 9, 9}, 40, 0, DType::f64), k = randn({1, 1, 9, 9}, 41, 0, DType::f64);
    Tensor v = randn({1, 1, 9, 9}, 42, 0, DType::f64);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    gradcheck([&](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal); },
              {q, k, v});
  }
  for (bool causal : {true, false}) {
    Tensor q = heads_view(2, 2, 5, 3, 10, DType::f64);
    Tensor k = randn({2, 2, 5, 3}, 11, 0, DType::f64);
    Tensor v = testing::random_noncontiguous_f64({2, 2, 5, 3}, 12);
    q.set_requires_grad(true);
    k.set_requires_grad(true);
    v.set_requires_grad(true);
    SCOPED_TRACE(causal ? "causal" : "not causal");
    gradcheck([&](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, 0.7); },
              {q, k, v});
  }
}

TEST(Attention, LowPrecisionBackwardMatchesF64Backward) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (bool causal : {true, false}) {
      std::vector<Tensor> grads[2];
      for (int pass = 0; pass < 2; ++pass) {
        const DType dt = pass == 0 ? DType::f64 : dtype;
        std::vector<Tensor> in;
        for (uint64_t s = 0; s < 3; ++s) {
          Tensor x = to(randn({2, 3, 45, 20}, 20 + s, 0, DType::f32), dt);  // takes the threaded path
          x.set_requires_grad(true);
          in.push_back(x);
        }
        Tensor probe = to(randn({2, 3, 45, 20}, 30, 0, DType::f32), dt);
        backward(sum(mul(scaled_dot_product_attention(in[0], in[1], in[2], causal), probe)));
        for (Tensor& x : in) grads[pass].push_back(x.grad());
      }
      for (size_t i = 0; i < 3; ++i)
        expect_close(grads[1][i], host(grads[0][i]), dtype == DType::f32 ? 1e-5 : 5e-2,
                     std::string(dtype_name(dtype)) + " grad " + std::to_string(i));
    }
  }
}

TEST(Attention, BadInputsNameTheOpAndOperands) {
  const char* api = "[scaled_dot_product_attention]";
  Tensor q = zeros({1, 2, 3, 4});
  EXPECT_ZT_ERROR(scaled_dot_product_attention(q, zeros({1, 2, 5, 4}), q), api, "same shape", "q is [1, 2, 3, 4] f32 cpu",
                  "k is [1, 2, 5, 4] f32 cpu");
  EXPECT_ZT_ERROR(scaled_dot_product_attention(zeros({2, 3, 4}), zeros({2, 3, 4}), zeros({2, 3, 4})), api,
                  "must be [B, H, T, D]", "q is [2, 3, 4] f32 cpu");
  EXPECT_ZT_ERROR(scaled_dot_product_attention(q, zeros({1, 2, 3, 4}, DType::bf16), q), api, "dtypes differ",
                  "[1, 2, 3, 4] bf16 cpu");
  EXPECT_ZT_ERROR(scaled_dot_product_attention(q, q, Tensor()), api, "b is an undefined tensor");
  EXPECT_ZT_ERROR(cpu_backend().attention_backward(q, q, q, q, q, zeros({1, 2, 4}), true, 1.0),
                  "[attention_backward] lse [1, 2, 4] f32 cpu does not match q [1, 2, 3, 4] f32 cpu");
}

}  // namespace
}  // namespace zt

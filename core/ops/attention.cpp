// Scaled dot-product attention: softmax(q k^T * scale + causal mask) v over q, k, v [B, H, T, D].
//
// The forward kernel returns the output and lse (the log-sum-exp of each row of scaled scores);
// nothing of size T x T is kept for backward. The backward kernel recomputes the probabilities
// from q, k and lse (as flash attention does), so attention's activation memory is O(T D) per head.
#include <cmath>

#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

class AttentionBackward final : public Node {
 public:
  AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool causal, double scale)
      : q_(std::move(q)), k_(std::move(k)), v_(std::move(v)), out_(std::move(out)), lse_(std::move(lse)),
        causal_(causal), scale_(scale) {}
  std::string name() const override { return "AttentionBackward"; }
  void release() override { q_ = k_ = v_ = out_ = lse_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Backend& backend = backend_for(grads[0].device());
    Tensor dout = backend.attention_accepts_layout(grads[0]) ? grads[0] : contiguous(grads[0]);
    AttentionGrads g = backend.attention_backward(dout, q_, k_, v_, out_, lse_, causal_, scale_);
    return {g.dq, g.dk, g.dv};
  }

 private:
  Tensor q_, k_, v_, out_, lse_;  // out_ is a detached handle: the node must not own its own output
  bool causal_;
  double scale_;
};

}  // namespace

namespace ops {

Tensor composite_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  const DType work = q.dtype() == DType::f64 ? DType::f64 : DType::f32;
  auto up = [&](const Tensor& t) { return t.dtype() == work ? t : to(t, work); };
  Tensor scores = mul_scalar(matmul(up(q), up(k), false, true), scale);
  if (causal) {
    const int64_t T = q.size(2);
    std::vector<double> mask(static_cast<size_t>(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = i + 1; j < T; ++j) mask[static_cast<size_t>(i * T + j)] = -1e30;  // exp() gives exactly 0
    scores = add(scores, from_vector_as(mask, {T, T}, work, q.device()));
  }
  Tensor out = matmul(softmax(scores, -1), up(v));
  return out.dtype() == q.dtype() ? out : to(out, q.dtype());
}

}  // namespace ops

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                    std::optional<double> scale) {
  const char* api = "scaled_dot_product_attention";
  ops::check_same_dtype_device(api, q, k);
  ops::check_same_dtype_device(api, q, v);
  ZT_CHECK(is_floating(q.dtype()), api, "needs floating inputs, got q ", q.describe());
  ZT_CHECK(q.dim() == 4, api, "q, k, v must be [B, H, T, D]: q is ", q.describe(), ", k is ", k.describe(),
           ", v is ", v.describe());
  ZT_CHECK(k.shape() == q.shape() && v.shape() == q.shape(), api, "q, k and v must have the same shape: q is ",
           q.describe(), ", k is ", k.describe(), ", v is ", v.describe());
  ZT_CHECK(q.size(3) > 0, api, "head dim D must be positive: q is ", q.describe());
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3))));
  ZT_CHECK(std::isfinite(s), api, "scale must be finite, got ", s);
  if (!backend_for(q.device()).fused_attention_supported(q.dtype(), q.size(3)))
    return ops::composite_attention(q, k, v, causal, s);
  // Views the backend reads as they are (on CUDA, q, k and v straight out of the packed qkv
  // projection) are not copied.
  const Backend& backend = backend_for(q.device());
  auto operand = [&](const Tensor& t) {
    return backend.attention_accepts_layout(t) ? t.detach() : contiguous(t.detach());
  };
  Tensor qc = operand(q), kc = operand(k), vc = operand(v);
  AttentionResult r = backend.attention(qc, kc, vc, causal, s);
  if (needs_grad({&q, &k, &v}))
    record(std::make_shared<AttentionBackward>(qc, kc, vc, r.out.detach(), r.lse, causal, s), {q, k, v}, {&r.out});
  return r.out;
}

}  // namespace zt

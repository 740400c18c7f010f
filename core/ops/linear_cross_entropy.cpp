// The classifier head and its loss in one op, a chunk of rows at a time, so that the [N, V] logits
// (a GPT's largest activation: 1.5 GiB at GPT-2 124M with 16 x 1024 tokens) never exist whole.
//
// Note [Chunked loss]
// For each chunk of `chunk_rows` rows the forward computes the chunk's logits (x_c W^T), its loss
// terms and, over the same memory, its gradient softmax - onehot (one fused pass), then at once the
// two products backward needs: dx_c = dlogits_c W into rows of an f32 dx, and dW += dlogits_c^T x_c
// into an f32 dW. Backward only scales them by (incoming gradient / target count) and rounds them
// to the inputs' dtypes. So the logits' gradient is computed during the forward (Liger-Kernel's
// fused linear cross-entropy, with Megatron-LM's accounting in mind), and what is kept between
// forward and backward is 4 N C + 4 V C bytes instead of e N V (e = 2 for bf16): a saving when N
// is more than about 2 C. The arithmetic is the unchunked head's (logits and dlogits rounded to
// the compute dtype, products accumulated in f32); what differs is the order of dW's sum over
// rows (chunk by chunk) and that the 1 / count and incoming-gradient factor is applied to dx and
// dW in f32 instead of to dlogits before rounding. dlogits are computed with scale 1 (not 1 /
// count): under f16 the mean's small factors would underflow there, while dx and dW are f32.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

// out *= s for a contiguous out and a 0-d s on its device, in place (each element is read before
// it is written, so out may be an operand).
void scale_in_place(Tensor& out, const Tensor& s) {
  const Tensor b = expand(s.dtype() == out.dtype() ? s : to(s, out.dtype()), out.shape());
  backend_for(out.device()).binary(BinaryOp::mul, out, b, out);
}

class LinearCrossEntropyBackward final : public Node {
 public:
  LinearCrossEntropyBackward(Tensor dx, Tensor dw, Tensor inv_count, DType x_dtype, Shape x_shape, DType w_dtype)
      : dx_(std::move(dx)), dw_(std::move(dw)), inv_count_(std::move(inv_count)), x_dtype_(x_dtype),
        x_shape_(std::move(x_shape)), w_dtype_(w_dtype) {}
  std::string name() const override { return "LinearCrossEntropyBackward"; }
  void release() override { dx_ = dw_ = inv_count_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    NoGradGuard no_grad;
    // On the device: no host synchronisation for the incoming gradient or the count.
    const Tensor s = mul(to(grads[0], inv_count_.dtype()), inv_count_);
    Tensor dx, dw;
    if (dx_.defined()) {
      scale_in_place(dx_, s);
      dx = reshape(to(dx_, x_dtype_), x_shape_);
    }
    if (dw_.defined()) {
      scale_in_place(dw_, s);
      dw = to(dw_, w_dtype_);
    }
    release();
    return {dx, dw};
  }

 private:
  Tensor dx_, dw_, inv_count_;
  DType x_dtype_;
  Shape x_shape_;
  DType w_dtype_;
};

}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t chunk_rows,
                            int64_t ignore_index, int64_t valid_vocab) {
  const char* api = "linear_cross_entropy";
  ops::check_defined(api, x, "x");
  ops::check_defined(api, weight, "weight");
  ops::check_defined(api, targets, "targets");
  ops::check_same_dtype_device(api, x, weight);
  ZT_CHECK(is_floating(x.dtype()) && x.dim() >= 1 && weight.dim() == 2 && weight.size(1) == x.size(-1), api,
           "needs floating x [..., C] and weight [V, C], got x ", x.describe(), ", weight ", weight.describe());
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, api, "targets must be i32 or i64, got ",
           targets.describe());
  ZT_CHECK(targets.device() == x.device(), api, "devices differ: x is ", x.describe(), ", targets are ",
           targets.describe());
  const Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  ZT_CHECK(targets.shape() == rows_shape, api, "targets must have x's shape without the last dim: x is ",
           x.describe(), ", targets are ", targets.describe());
  ZT_CHECK(chunk_rows >= 1, api, "chunk_rows must be >= 1, got ", chunk_rows);
  const int64_t C = x.size(-1), V = weight.size(0);
  const int64_t valid = valid_vocab < 0 ? V : valid_vocab;
  ZT_CHECK(valid >= 1 && valid <= V, api, "valid_vocab ", valid_vocab, " must be in [1, ", V,
           "] (or -1 for all rows of weight ", weight.describe(), ")");

  const Backend& be = backend_for(x.device());
  const bool grad_x = needs_grad({&x}), grad_w = needs_grad({&weight});
  // f64 keeps f64 throughout (the gradient checks); everything else accumulates in f32.
  const DType acc = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor loss, dx, dw, inv_count;
  {
    NoGradGuard no_grad;
    const Tensor x2 = contiguous(reshape(x.detach(), {-1, C}));
    const Tensor w = contiguous(weight.detach());
    const Tensor t = contiguous(reshape(targets.detach(), {x2.size(0)}));
    const int64_t N = x2.size(0);
    inv_count = be.inverse_target_count(t, ignore_index, valid, acc);
    if (grad_x) dx = empty({N, C}, acc, x.device());
    if (grad_w) dw = empty({V, C}, acc, x.device());
    Tensor loss_sum = zeros({}, acc, x.device());
    for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, N - r0);
      const Tensor xc = narrow(x2, 0, r0, rows);  // whole rows of a contiguous matrix: contiguous
      const Tensor tc = narrow(t, 0, r0, rows);
      Tensor logits = reshape(be.gemm(xc, w, false, true, 1, Tensor()), {rows, V});
      CrossEntropyResult r = grad_x || grad_w ? be.cross_entropy_with_grad(logits, tc, ignore_index, valid, 1.0)
                                              : be.cross_entropy(logits, tc, ignore_index, valid);
      if (grad_x) {
        Tensor dx_rows = narrow(dx, 0, r0, rows);
        be.gemm_into(logits, w, false, false, dx_rows, /*accumulate=*/false);
      }
      if (grad_w) be.gemm_into(logits, xc, true, false, dw, /*accumulate=*/r0 > 0);
      add_(loss_sum, to(sum(r.losses), acc));
    }
    if (N == 0 && grad_w) fill_(dw, 0.0);
    loss = mul(loss_sum, inv_count);
  }
  record_precomputed_head_gradients(x, weight, loss, dx, dw, inv_count);
  return loss;
}

void record_precomputed_head_gradients(const Tensor& x, const Tensor& weight, Tensor& loss, Tensor dx, Tensor dw,
                                       Tensor inv_count) {
  if (!dx.defined() && !dw.defined()) return;
  record(std::make_shared<LinearCrossEntropyBackward>(std::move(dx), std::move(dw), std::move(inv_count), x.dtype(),
                                                      x.shape(), weight.dtype()),
         {x, weight}, {&loss});
}

}  // namespace zt

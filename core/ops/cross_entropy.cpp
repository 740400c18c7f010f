// Cross-entropy loss: the mean over non-ignored targets of -log softmax(logits)[target], with
// vocabulary padding (columns >= valid_vocab) left out of the softmax.
//
// One fused kernel computes each row's lse and loss; the backward kernel writes
// (softmax - onehot) * grad / count straight from the logits and lse, so neither the softmax nor
// the log-probabilities ([N, V], the largest activation of a GPT) are ever stored.
//
// The count of non-ignored targets is taken on the host from the targets (N integers; the data
// loader produces them on the host anyway), and the incoming gradient of the loss is read as a
// scalar for the backward kernel's scale, so the [N, V] gradient is written in one pass.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

class CrossEntropyBackward final : public Node {
 public:
  CrossEntropyBackward(Tensor logits2, Tensor targets, Tensor lse, int64_t ignore_index, int64_t valid_vocab,
                       int64_t count, Shape logits_shape)
      : logits2_(std::move(logits2)), targets_(std::move(targets)), lse_(std::move(lse)), ignore_index_(ignore_index),
        valid_vocab_(valid_vocab), count_(count), logits_shape_(std::move(logits_shape)) {}
  std::string name() const override { return "CrossEntropyBackward"; }
  void release() override { logits2_ = targets_ = lse_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const double scale = count_ == 0 ? 0.0 : grads[0].item() / static_cast<double>(count_);
    Tensor d = backend_for(logits2_.device())
                   .cross_entropy_backward(logits2_, targets_, lse_, ignore_index_, valid_vocab_, scale);
    return {reshape(d, logits_shape_)};
  }

 private:
  Tensor logits2_, targets_, lse_;
  int64_t ignore_index_, valid_vocab_, count_;
  Shape logits_shape_;
};

int64_t count_targets(const Tensor& flat_targets, int64_t ignore_index) {
  int64_t count = 0;
  if (flat_targets.dtype() == DType::i32) {
    for (int32_t t : flat_targets.to_vector<int32_t>()) count += t != ignore_index;
  } else {
    for (int64_t t : flat_targets.to_vector<int64_t>()) count += t != ignore_index;
  }
  return count;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, int64_t valid_vocab) {
  const char* api = "cross_entropy";
  ops::check_defined(api, logits, "logits");
  ops::check_defined(api, targets, "targets");
  ZT_CHECK(is_floating(logits.dtype()) && logits.dim() >= 1, api, "logits must be a floating [..., V] tensor, got ",
           logits.describe(), " (targets ", targets.describe(), ")");
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, api, "targets must be i32 or i64, got ",
           targets.describe(), " (logits ", logits.describe(), ")");
  ZT_CHECK(targets.device() == logits.device(), api, "devices differ: logits are ", logits.describe(),
           ", targets are ", targets.describe());
  const Shape rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  ZT_CHECK(targets.shape() == rows_shape, api, "targets must have logits' shape without the last dim: logits are ",
           logits.describe(), ", targets are ", targets.describe());
  const int64_t vocab = logits.size(-1);
  const int64_t valid = valid_vocab < 0 ? vocab : valid_vocab;
  ZT_CHECK(valid >= 1 && valid <= vocab, api, "valid_vocab ", valid_vocab, " must be in [1, ", vocab,
           "] (or -1 for all columns) for logits ", logits.describe());

  Tensor logits2, flat_targets, loss;
  CrossEntropyResult r;
  int64_t count = 0;
  {
    NoGradGuard no_grad;
    logits2 = contiguous(reshape(logits.detach(), {-1, vocab}));
    flat_targets = contiguous(reshape(targets.detach(), {logits2.size(0)}));
    r = backend_for(logits.device()).cross_entropy(logits2, flat_targets, ignore_index, valid);
    count = count_targets(flat_targets, ignore_index);
    // No target counted: the loss is 0 (not 0/0), and so is its gradient.
    loss = mul_scalar(sum(r.losses), count == 0 ? 0.0 : 1.0 / static_cast<double>(count));
  }
  if (needs_grad({&logits}))
    record(std::make_shared<CrossEntropyBackward>(logits2, flat_targets, r.lse, ignore_index, valid, count,
                                                  logits.shape()),
           {logits}, {&loss});
  return loss;
}

}  // namespace zt

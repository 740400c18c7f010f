// Cross-entropy loss: the mean over non-ignored targets of -log softmax(logits)[target], with
// vocabulary padding (columns >= valid_vocab) left out of the softmax.
//
// One fused kernel computes each row's lse and loss; the backward kernel writes
// (softmax - onehot) * grad / count straight from the logits and lse, so neither the softmax nor
// the log-probabilities ([N, V], the largest activation of a GPT) are ever stored.
//
// The backend also gives 1 / (count of non-ignored targets) as a device scalar, and the backward
// kernel reads its scale (incoming gradient x that) on the device, so the loss and the [N, V]
// gradient (written in one pass) need no host synchronisation.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

class CrossEntropyBackward final : public Node {
 public:
  CrossEntropyBackward(Tensor logits2, Tensor targets, Tensor lse, Tensor inv_count, int64_t ignore_index,
                       int64_t valid_vocab, Shape logits_shape)
      : logits2_(std::move(logits2)), targets_(std::move(targets)), lse_(std::move(lse)),
        inv_count_(std::move(inv_count)), ignore_index_(ignore_index), valid_vocab_(valid_vocab),
        logits_shape_(std::move(logits_shape)) {}
  std::string name() const override { return "CrossEntropyBackward"; }
  void release() override { logits2_ = targets_ = lse_ = inv_count_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    // The scale (incoming gradient / count) stays on the device: no host synchronisation.
    Tensor scale = mul(to(grads[0], inv_count_.dtype()), inv_count_);
    // Note [Logits in place]: when this node holds the only reference to the logits' memory (the
    // usual case: nothing else keeps a GPT's logits once the loss is taken), dlogits overwrite them.
    const bool sole_owner = logits2_.storage().use_count() == 1;
    Tensor d = backend_for(logits2_.device())
                   .cross_entropy_backward(logits2_, targets_, lse_, ignore_index_, valid_vocab_, 1.0, scale,
                                           sole_owner);
    logits2_ = Tensor();
    return {reshape(d, logits_shape_)};
  }

 private:
  Tensor logits2_, targets_, lse_, inv_count_;
  int64_t ignore_index_, valid_vocab_;
  Shape logits_shape_;
};

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
  {
    NoGradGuard no_grad;
    logits2 = contiguous(reshape(logits.detach(), {-1, vocab}));
    flat_targets = contiguous(reshape(targets.detach(), {logits2.size(0)}));
    r = backend_for(logits.device()).cross_entropy(logits2, flat_targets, ignore_index, valid);
    // No target counted: inv_count is 0, so the loss is 0 (not 0/0), and so is its gradient.
    loss = mul(sum(r.losses), r.inv_count);
  }
  if (needs_grad({&logits}))
    record(std::make_shared<CrossEntropyBackward>(logits2, flat_targets, r.lse, r.inv_count, ignore_index, valid,
                                                  logits.shape()),
           {logits}, {&loss});
  return loss;
}

}  // namespace zt

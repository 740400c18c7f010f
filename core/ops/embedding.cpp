// Embedding lookup: rows of weight [V, C] picked by integer ids of any shape.
//
// The backward scatters gradient rows back onto the vocabulary. It is a dense [V, C] gradient (the
// optimizer and ZeRO treat every parameter as dense), computed by a deterministic kernel: repeated
// ids are summed in position order, never by racing atomics, so runs repeat bit for bit.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

class EmbeddingBackward final : public Node {
 public:
  EmbeddingBackward(Tensor flat_ids, int64_t vocab, int64_t cols)
      : flat_ids_(std::move(flat_ids)), vocab_(vocab), cols_(cols) {}
  std::string name() const override { return "EmbeddingBackward"; }
  void release() override { flat_ids_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor g = contiguous(reshape(grads[0], {flat_ids_.numel(), cols_}));
    return {backend_for(g.device()).embedding_backward(g, flat_ids_, vocab_)};
  }

 private:
  Tensor flat_ids_;
  int64_t vocab_, cols_;
};

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  ops::check_defined("embedding", weight, "weight");
  ops::check_defined("embedding", ids, "ids");
  ZT_CHECK(weight.dim() == 2 && is_floating(weight.dtype()), "embedding", "weight must be a floating [V, C], got ",
           weight.describe(), " (ids ", ids.describe(), ")");
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "embedding", "ids must be i32 or i64, got ",
           ids.describe(), " (weight ", weight.describe(), ")");
  ZT_CHECK(ids.device() == weight.device(), "embedding", "devices differ: weight is ", weight.describe(), ", ids are ",
           ids.describe());
  Tensor flat_ids, out;
  {
    NoGradGuard no_grad;
    flat_ids = contiguous(reshape(ids.detach(), {ids.numel()}));
    Tensor rows = backend_for(weight.device()).embedding(contiguous(weight.detach()), flat_ids);
    Shape shape = ids.shape();
    shape.push_back(weight.size(1));
    out = view(rows, shape);
  }
  if (needs_grad({&weight}))
    record(std::make_shared<EmbeddingBackward>(flat_ids, weight.size(0), weight.size(1)), {weight}, {&out});
  return out;
}

}  // namespace zt

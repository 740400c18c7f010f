// softmax and log_softmax over any dim, and counter-based dropout.
//
// The kernels work on the last dim of a [rows, C] tensor; another dim is moved last with a
// transpose (a differentiable view) and moved back afterwards, so the nodes here only know rows.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

// y = softmax(x): dx = y * (dy - sum(dy * y)); y = log_softmax(x): dx = dy - exp(y) * sum(dy).
class SoftmaxBackward final : public Node {
 public:
  SoftmaxBackward(Tensor y, bool log) : y_(std::move(y)), log_(log) {}
  std::string name() const override { return log_ ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  void release() override { y_ = Tensor(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const Backend& backend = backend_for(y_.device());
    Tensor grad = reshape(contiguous(g[0]), y_.shape());
    Tensor dx = log_ ? backend.log_softmax_backward(grad, y_) : backend.softmax_backward(grad, y_);
    return {reshape(dx, g[0].shape())};
  }

 private:
  Tensor y_;  // [rows, C], contiguous
  bool log_;
};

// The mask is a pure function of (seed, offset + i), so the backward redraws it instead of storing it.
class DropoutBackward final : public Node {
 public:
  DropoutBackward(double p, uint64_t seed, uint64_t offset) : p_(p), seed_(seed), offset_(offset) {}
  std::string name() const override { return "DropoutBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {backend_for(g[0].device()).dropout(contiguous(g[0]), p_, seed_, offset_)};
  }

 private:
  double p_;
  uint64_t seed_, offset_;
};

// Softmax family over the last dim.
Tensor softmax_last(const char* api, const Tensor& x, bool log) {
  const int64_t c = x.dim() == 0 ? 1 : x.shape().back();
  const int64_t rows = c == 0 ? 0 : x.numel() / c;
  Tensor x2 = reshape(contiguous(x.detach()), {rows, c});
  const Backend& backend = backend_for(x.device());
  Tensor y2 = log ? backend.log_softmax(x2) : backend.softmax(x2);
  Tensor out = reshape(y2, x.shape());
  if (needs_grad({&x})) record(std::make_shared<SoftmaxBackward>(y2, log), {x}, {&out});
  return out;
}

Tensor softmax_any_dim(const char* api, const Tensor& x, int64_t dim, bool log) {
  ops::check_defined(api, x);
  ZT_CHECK(is_floating(x.dtype()), api, "needs a floating tensor, got ", x.describe());
  if (x.dim() == 0) return softmax_last(api, x, log);
  int64_t d = ops::normalize_dim(api, dim, x);
  if (d == x.dim() - 1) return softmax_last(api, x, log);
  return transpose(softmax_last(api, transpose(x, d, -1), log), d, -1);
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_any_dim("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_any_dim("log_softmax", x, dim, true); }

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, bool training) {
  ops::check_defined("dropout", x);
  ZT_CHECK(p >= 0.0 && p <= 1.0, "dropout", "p must be in [0, 1], got ", p, " for ", x.describe());
  ZT_CHECK(is_floating(x.dtype()), "dropout", "needs a floating tensor, got ", x.describe());
  if (!training || p == 0.0) return x;
  Tensor out = backend_for(x.device()).dropout(contiguous(x.detach()), p, seed, offset);
  if (needs_grad({&x})) record(std::make_shared<DropoutBackward>(p, seed, offset), {x}, {&out});
  return out;
}

}  // namespace zt

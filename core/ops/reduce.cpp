// Reductions: sum, mean, max, argmax, and the comparisons tests and checks use (allclose,
// max_abs_diff, norm, all_finite).
#include <cmath>

#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

// Sorted, unique, non-negative dims; throws on repeats.
std::vector<bool> reduce_mask(const char* api, const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<bool> mask(static_cast<size_t>(x.dim()), false);
  for (int64_t dim : dims) {
    size_t d = static_cast<size_t>(ops::normalize_dim(api, dim, x));
    ZT_CHECK(!mask[d], api, "dim ", dim, " given twice for ", x.describe());
    mask[d] = true;
  }
  return mask;
}

Shape kept_shape(const Shape& shape, const std::vector<bool>& mask) {
  Shape out = shape;
  for (size_t d = 0; d < out.size(); ++d)
    if (mask[d]) out[d] = 1;
  return out;
}

Shape dropped_shape(const Shape& shape, const std::vector<bool>& mask) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d)
    if (!mask[d]) out.push_back(shape[d]);
  return out;
}

// The gradient of a sum is the output gradient broadcast back over the summed dims.
class SumBackward final : public Node {
 public:
  SumBackward(Shape in_shape, Shape keep_shape) : in_shape_(std::move(in_shape)), keep_shape_(std::move(keep_shape)) {}
  std::string name() const override { return "SumBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {contiguous(expand(reshape(g[0], keep_shape_), in_shape_))};
  }

 private:
  Shape in_shape_, keep_shape_;
};

// The gradient of max goes to the first maximum only (the index the forward found). The one-hot
// mask is built from public ops so it runs on any device: with positions p along the dim and the
// index i, 1 - (p - i)^2 is 1 at p == i and <= 0 elsewhere (exact for integers below 2^24 in f32),
// so relu of it is the one-hot.
class MaxBackward final : public Node {
 public:
  MaxBackward(Shape in_shape, int64_t dim, Tensor indices_keepdim)
      : in_shape_(std::move(in_shape)), dim_(dim), indices_(std::move(indices_keepdim)) {}
  std::string name() const override { return "MaxBackward"; }
  void release() override { indices_ = Tensor(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const Tensor& grad = g[0];
    Shape pos_shape(in_shape_.size(), 1);
    pos_shape[static_cast<size_t>(dim_)] = in_shape_[static_cast<size_t>(dim_)];
    Tensor positions = reshape(arange(in_shape_[static_cast<size_t>(dim_)], DType::f32, grad.device()), pos_shape);
    Tensor diff = sub(positions, to(indices_, DType::f32));
    Tensor one_hot = to(relu(add_scalar(neg(mul(diff, diff)), 1.0)), grad.dtype());
    Shape keep = in_shape_;
    keep[static_cast<size_t>(dim_)] = 1;
    return {mul(one_hot, reshape(grad, keep))};
  }

 private:
  Shape in_shape_;
  int64_t dim_;
  Tensor indices_;
};

// Values and indices of the maximum over `dim`, keeping the dim (size 1).
std::pair<Tensor, Tensor> max_keepdim(const char* api, const Tensor& x, int64_t d) {
  ZT_CHECK(x.size(d) > 0, api, "cannot take the maximum over an empty dim ", d, " of ", x.describe());
  Tensor moved = contiguous(transpose(x.detach(), d, -1));
  auto [values, indices] = backend_for(x.device()).max_last_dim(moved);
  Shape moved_keep = moved.shape();
  moved_keep.back() = 1;
  values = contiguous(transpose(reshape(values, moved_keep), d, -1));
  indices = contiguous(transpose(reshape(indices, moved_keep), d, -1));
  return {values, indices};
}

// Host copies in f64 of two same-shaped tensors, for the comparison helpers.
std::pair<std::vector<double>, std::vector<double>> host_f64_pair(const char* api, const Tensor& a, const Tensor& b) {
  ops::check_defined(api, a, "a");
  ops::check_defined(api, b, "b");
  ZT_CHECK(a.shape() == b.shape(), api, "shapes differ: a is ", a.describe(), ", b is ", b.describe());
  NoGradGuard no_grad;
  auto host = [](const Tensor& t) { return to(to(t.detach(), Device::cpu()), DType::f64).to_vector<double>(); };
  return {host(a), host(b)};
}

}  // namespace

namespace ops {

Tensor sum_to_shape(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  ZT_ASSERT(lead >= 0, "sum_to_shape: ", grad.describe(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < grad.dim(); ++d) {
    if (d < lead || (shape[static_cast<size_t>(d - lead)] == 1 && grad.shape()[static_cast<size_t>(d)] != 1))
      dims.push_back(d);
  }
  return reshape(sum(grad, dims, true), shape);
}

}  // namespace ops

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  ops::check_defined("sum", x);
  ZT_CHECK(is_floating(x.dtype()), "sum", "needs a floating tensor, got ", x.describe());
  std::vector<bool> mask = reduce_mask("sum", x, dims);
  Tensor out = backend_for(x.device()).reduce(ReduceOp::sum, contiguous(x.detach()), mask);
  Shape keep = kept_shape(x.shape(), mask);
  if (!keepdim) out = reshape(out, dropped_shape(x.shape(), mask));
  if (needs_grad({&x})) record(std::make_shared<SumBackward>(x.shape(), keep), {x}, {&out});
  return out;
}

Tensor sum(const Tensor& x) {
  ops::check_defined("sum", x);
  std::vector<int64_t> all(static_cast<size_t>(x.dim()));
  for (int64_t d = 0; d < x.dim(); ++d) all[static_cast<size_t>(d)] = d;
  return sum(x, all, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  ops::check_defined("mean", x);
  std::vector<bool> mask = reduce_mask("mean", x, dims);
  int64_t count = 1;
  for (size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) count *= x.shape()[d];
  ZT_CHECK(count > 0, "mean", "mean over no elements of ", x.describe());
  return mul_scalar(sum(x, dims, keepdim), 1.0 / static_cast<double>(count));
}

Tensor mean(const Tensor& x) {
  ops::check_defined("mean", x);
  ZT_CHECK(x.numel() > 0, "mean", "mean over no elements of ", x.describe());
  return mul_scalar(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  ops::check_defined("max", x);
  ZT_CHECK(is_floating(x.dtype()), "max", "needs a floating tensor, got ", x.describe());
  int64_t d = ops::normalize_dim("max", dim, x);
  auto [values, indices] = max_keepdim("max", x, d);
  Tensor out = keepdim ? values : squeeze(values, d);
  if (needs_grad({&x})) record(std::make_shared<MaxBackward>(x.shape(), d, indices), {x}, {&out});
  return out;
}

Tensor max(const Tensor& x) {
  ops::check_defined("max", x);
  ZT_CHECK(x.numel() > 0, "max", "maximum of an empty tensor ", x.describe());
  return reshape(max(reshape(x, {-1}), 0, false), {});
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  ops::check_defined("argmax", x);
  ZT_CHECK(is_floating(x.dtype()), "argmax", "needs a floating tensor, got ", x.describe());
  int64_t d = ops::normalize_dim("argmax", dim, x);
  Tensor indices = max_keepdim("argmax", x, d).second;
  return keepdim ? indices : squeeze(indices, d);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  auto [va, vb] = host_f64_pair("allclose", a, b);
  for (size_t i = 0; i < va.size(); ++i) {
    double diff = std::abs(va[i] - vb[i]);
    if (va[i] == vb[i]) continue;  // equal infinities
    if (!(diff <= atol + rtol * std::abs(vb[i]))) return false;  // NaN compares false
  }
  return true;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto [va, vb] = host_f64_pair("max_abs_diff", a, b);
  double worst = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (va[i] == vb[i]) continue;
    double diff = std::abs(va[i] - vb[i]);
    if (std::isnan(diff)) return diff;
    worst = std::max(worst, diff);
  }
  return worst;
}

double norm(const Tensor& x) {
  ops::check_defined("norm", x);
  ZT_CHECK(is_floating(x.dtype()), "norm", "needs a floating tensor, got ", x.describe());
  return std::sqrt(backend_for(x.device()).sum_squares(contiguous(x.detach())));
}

bool all_finite(const Tensor& x) {
  ops::check_defined("all_finite", x);
  ZT_CHECK(is_floating(x.dtype()), "all_finite", "needs a floating tensor, got ", x.describe());
  return backend_for(x.device()).all_finite(contiguous(x.detach()));
}

}  // namespace zt

// Elementwise ops: broadcasting binary ops (add, sub, mul, div), unary ops and scalar ops, their
// operators, and the in-place add_/mul_ used by optimizers and communication.
//
// Note [Unary backward inputs]: a unary node keeps only what its derivative needs, and passes an
// undefined tensor for the rest to Backend::unary_backward: y = f(x) for exp, sqrt and tanh; x for
// log, relu, gelu and pow_scalar; neither for neg, add_scalar and mul_scalar.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace ops {

Shape broadcast_shapes(const char* api, const Tensor& a, const Tensor& b) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  size_t n = std::max(sa.size(), sb.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - sa.size() ? 1 : sa[i - (n - sa.size())];
    int64_t db = i < n - sb.size() ? 1 : sb[i - (n - sb.size())];
    ZT_CHECK(da == db || da == 1 || db == 1, api, "shapes ", a.describe(), " and ", b.describe(), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace ops

namespace {

// Both gradients of a broadcasting binary op are reduced back to their operand's shape.
class AddBackward final : public Node {
 public:
  AddBackward(Shape a, Shape b, bool subtract) : a_(std::move(a)), b_(std::move(b)), subtract_(subtract) {}
  std::string name() const override { return subtract_ ? "SubBackward" : "AddBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out(2);
    if (next[0].node) out[0] = ops::sum_to_shape(g[0], a_);
    if (next[1].node) out[1] = ops::sum_to_shape(subtract_ ? neg(g[0]) : g[0], b_);
    return out;
  }

 private:
  Shape a_, b_;
  bool subtract_;
};

class MulBackward final : public Node {
 public:
  // Each saved operand is needed only for the other operand's gradient (undefined otherwise).
  MulBackward(Tensor a, Tensor b, Shape a_shape, Shape b_shape)
      : a_(std::move(a)), b_(std::move(b)), a_shape_(std::move(a_shape)), b_shape_(std::move(b_shape)) {}
  std::string name() const override { return "MulBackward"; }
  void release() override { a_ = b_ = Tensor(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out(2);
    if (next[0].node) out[0] = ops::sum_to_shape(mul(g[0], b_), a_shape_);
    if (next[1].node) out[1] = ops::sum_to_shape(mul(g[0], a_), b_shape_);
    return out;
  }

 private:
  Tensor a_, b_;
  Shape a_shape_, b_shape_;
};

// d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -(g/b) * (a/b).
class DivBackward final : public Node {
 public:
  DivBackward(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  std::string name() const override { return "DivBackward"; }
  void release() override { a_ = b_ = Tensor(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out(2);
    Tensor g_over_b = div(g[0], b_);
    if (next[0].node) out[0] = ops::sum_to_shape(g_over_b, a_.shape());
    if (next[1].node) out[1] = ops::sum_to_shape(neg(mul(g_over_b, div(a_, b_))), b_.shape());
    return out;
  }

 private:
  Tensor a_, b_;
};

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::relu: return "relu";
    case UnaryOp::gelu: return "gelu";
    case UnaryOp::add_scalar: return "add_scalar";
    case UnaryOp::mul_scalar: return "mul_scalar";
    case UnaryOp::pow_scalar: return "pow_scalar";
  }
  return "unary";
}

bool backward_uses_x(UnaryOp op) {
  return op == UnaryOp::log || op == UnaryOp::relu || op == UnaryOp::gelu || op == UnaryOp::pow_scalar;
}
bool backward_uses_y(UnaryOp op) { return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh; }

// One node class for the unary family: each primitive's derivative lives in the backend's
// unary_backward kernel, so it runs wherever the forward ran. Note [Unary backward inputs].
class UnaryBackward final : public Node {
 public:
  UnaryBackward(UnaryOp op, double scalar, Tensor x, Tensor y) : op_(op), scalar_(scalar), x_(std::move(x)), y_(std::move(y)) {}
  std::string name() const override {
    static const char* const names[] = {"NegBackward",  "ExpBackward",  "LogBackward",       "SqrtBackward",
                                        "TanhBackward", "ReluBackward", "GeluBackward",      "AddScalarBackward",
                                        "MulScalarBackward", "PowScalarBackward"};
    return names[static_cast<int>(op_)];
  }
  void release() override { x_ = y_ = Tensor(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor grad = contiguous(g[0]);
    if (op_ == UnaryOp::add_scalar) return {grad};
    if (op_ == UnaryOp::neg) return {neg(grad)};
    if (op_ == UnaryOp::mul_scalar) return {mul_scalar(grad, scalar_)};
    return {backend_for(grad.device()).unary_backward(op_, grad, x_, y_, scalar_)};
  }

 private:
  UnaryOp op_;
  double scalar_;
  Tensor x_, y_;
};

Tensor binary_op(BinaryOp op, const char* api, const Tensor& a, const Tensor& b) {
  ops::check_same_dtype_device(api, a, b);
  const DType t = a.dtype();
  ZT_CHECK(is_floating(t) || ((t == DType::i32 || t == DType::i64) && op != BinaryOp::div), api,
           "needs floating tensors (or i32/i64 for add, sub and mul), got a ", a.describe(), ", b ", b.describe());
  Shape shape = ops::broadcast_shapes(api, a, b);
  Tensor out = empty(shape, a.dtype(), a.device());
  // Stride-0 views of the operands at the output's shape (detached: no nodes for these views).
  Tensor ae = expand(a.detach(), shape), be = expand(b.detach(), shape);
  backend_for(a.device()).binary(op, ae, be, out);
  if (needs_grad({&a, &b})) {
    std::shared_ptr<Node> node;
    switch (op) {
      case BinaryOp::add: node = std::make_shared<AddBackward>(a.shape(), b.shape(), false); break;
      case BinaryOp::sub: node = std::make_shared<AddBackward>(a.shape(), b.shape(), true); break;
      case BinaryOp::mul:
        node = std::make_shared<MulBackward>(b.requires_grad() ? a.detach() : Tensor(),
                                             a.requires_grad() ? b.detach() : Tensor(), a.shape(), b.shape());
        break;
      case BinaryOp::div: node = std::make_shared<DivBackward>(a.detach(), b.detach()); break;
    }
    record(node, {a, b}, {&out});
  }
  return out;
}

Tensor unary_op(UnaryOp op, const Tensor& x, double scalar = 0.0) {
  const char* api = unary_name(op);
  ops::check_defined(api, x);
  ZT_CHECK(is_floating(x.dtype()), api, "needs a floating tensor, got ", x.describe());
  Tensor xc = contiguous(x.detach());
  Tensor out = backend_for(x.device()).unary(op, xc, scalar);
  if (needs_grad({&x})) {
    auto node = std::make_shared<UnaryBackward>(op, scalar, backward_uses_x(op) ? xc : Tensor(),
                                                backward_uses_y(op) ? out.detach() : Tensor());
    record(node, {x}, {&out});
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::div, "div", a, b); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }

Tensor add_scalar(const Tensor& x, double s) { return unary_op(UnaryOp::add_scalar, x, s); }
Tensor mul_scalar(const Tensor& x, double s) { return unary_op(UnaryOp::mul_scalar, x, s); }
Tensor pow_scalar(const Tensor& x, double exponent) { return unary_op(UnaryOp::pow_scalar, x, exponent); }
Tensor neg(const Tensor& x) { return unary_op(UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::sqrt, x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::tanh, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::relu, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::gelu, x); }

namespace {
// Runs an in-place kernel on dst, through a contiguous copy when dst is a strided view.
template <typename F>
void in_place(Tensor& dst, F&& kernel) {
  if (dst.is_contiguous()) {
    kernel(dst);
    return;
  }
  Tensor dense = contiguous(dst.detach());
  kernel(dense);
  backend_for(dst.device()).copy_strided(dense, dst);
}
}  // namespace

void add_(Tensor& dst, const Tensor& src, double alpha) {
  ops::check_defined("add_", dst, "dst");
  ops::check_defined("add_", src, "src");
  ZT_CHECK(dst.shape() == src.shape(), "add_", "shapes differ: dst is ", dst.describe(), ", src is ", src.describe());
  ZT_CHECK(dst.device() == src.device(), "add_", "devices differ: dst is ", dst.describe(), ", src is ",
           src.describe(), " (move with to())");
  ZT_CHECK(is_floating(dst.dtype()) && is_floating(src.dtype()), "add_", "needs floating tensors, got dst ",
           dst.describe(), ", src ", src.describe());
  NoGradGuard no_grad;
  // A 16-bit src into an f32 dst (bf16 gradients into an f32 buffer) is widened on the fly by the
  // backend's axpy; other dtype pairs are converted first.
  const bool widen_in_axpy = dst.dtype() == DType::f32 && is_half(src.dtype());
  Tensor s = contiguous(widen_in_axpy ? src.detach() : to(src.detach(), dst.dtype()));
  const Backend& backend = backend_for(dst.device());
  in_place(dst, [&](Tensor& d) { backend.axpy(d, s, alpha); });
}

void mul_(Tensor& dst, double s) {
  ops::check_defined("mul_", dst, "dst");
  ZT_CHECK(is_floating(dst.dtype()), "mul_", "needs a floating tensor, got ", dst.describe());
  NoGradGuard no_grad;
  const Backend& backend = backend_for(dst.device());
  in_place(dst, [&](Tensor& d) { backend.scale(d, s); });
}

}  // namespace zt

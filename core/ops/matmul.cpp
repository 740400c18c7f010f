// Matrix products: matmul (batch dims broadcast, transpose flags on the last two dims) and linear.
//
// Note [Matmul operands]: Backend::gemm takes contiguous [batch_x, rows, cols] operands whose batch
// is either the full batch or 1 (shared). An operand whose batch dims are all 1 (weights, above
// all) is passed once as a shared matrix, never copied per batch; the CPU and CUDA kernels turn
// "a batched, b shared, a not transposed" into one GEMM [batch * M, K] x [K, N]. An operand that
// is a transposed view of a contiguous matrix (transpose(x, -1, -2), as backward passes produce)
// is passed as that matrix with its transpose flag flipped, not copied. Only a broadcast that is
// neither full nor shared (a [2, 1, M, K] with b [1, 3, K, N]) materialises an expanded copy.
//
// Backward, with A = op_a(a) and B = op_b(b), C = A B:  dA = dC B^T,  dB = A^T dC, written as
// matmuls with transpose flags so no transposed copy is made, then summed over broadcast batch
// dims. For a shared 2-D b and an untransposed a, dB = a_flat^T dC_flat is one GEMM over all
// rows instead of a batched product followed by a sum.
#include <algorithm>

#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

struct GemmOperand {
  Tensor matrix;  // contiguous [batch_x, rows, cols], batch_x = batch or 1
  bool transpose = false;
};

Shape batch_dims(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 2); }

// x (detached) [..., R, C] as a gemm operand for a product with batch shape `batch`.
// Note [Matmul operands].
GemmOperand prepare_operand(const Tensor& x, bool transposed, const Shape& batch) {
  NoGradGuard no_grad;
  const int64_t rows = x.size(-2), cols = x.size(-1);
  const bool shared = shape_numel(batch_dims(x)) == 1;
  Tensor m = x;
  if (!shared) {
    Shape full = batch;
    full.push_back(rows);
    full.push_back(cols);
    if (x.shape() != full) m = expand(x, full);  // rare: a partial broadcast, materialised below
  }
  const int64_t nb = shared ? 1 : shape_numel(batch);
  if (!m.is_contiguous()) {
    Tensor flipped = transpose(m, -1, -2);
    if (flipped.is_contiguous()) return {view(flipped, {nb, cols, rows}), !transposed};
    m = contiguous(m);
  }
  return {view(m, {nb, rows, cols}), transposed};
}

Shape broadcast_batch(const Tensor& a, const Tensor& b) {
  const Shape sa = batch_dims(a), sb = batch_dims(b);
  const size_t n = std::max(sa.size(), sb.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - sa.size() ? 1 : sa[i - (n - sa.size())];
    const int64_t db = i < n - sb.size() ? 1 : sb[i - (n - sb.size())];
    ZT_CHECK(da == db || da == 1 || db == 1, "matmul", "batch dims do not broadcast: a is ", a.describe(), ", b is ",
             b.describe());
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// The product of detached operands, no autograd.
Tensor matmul_forward(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  const Shape batch = broadcast_batch(a, b);
  GemmOperand ga = prepare_operand(a, transpose_a, batch), gb = prepare_operand(b, transpose_b, batch);
  Tensor out = backend_for(a.device()).gemm(ga.matrix, gb.matrix, ga.transpose, gb.transpose,
                                            shape_numel(batch), Tensor());
  Shape shape = batch;
  shape.push_back(out.size(-2));
  shape.push_back(out.size(-1));
  NoGradGuard no_grad;
  return view(out, shape);
}

class MatmulBackward final : public Node {
 public:
  MatmulBackward(Tensor a, Tensor b, bool transpose_a, bool transpose_b)
      : a_(std::move(a)), b_(std::move(b)), transpose_a_(transpose_a), transpose_b_(transpose_b) {}
  std::string name() const override { return "MatmulBackward"; }
  void release() override { a_ = b_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    std::vector<Tensor> out(2);
    if (next[0].node) {
      // dA = dC B^T; for a stored transposed, da = dA^T = B dC^T.
      Tensor da = transpose_a_ ? matmul(b_, g, transpose_b_, true) : matmul(g, b_, false, !transpose_b_);
      out[0] = ops::sum_to_shape(da, a_.shape());
    }
    if (next[1].node) {
      Tensor db;
      if (b_.dim() == 2 && !transpose_a_ && a_.dim() > 2) {
        Tensor a2 = reshape(a_, {-1, a_.size(-1)}), g2 = reshape(g, {-1, g.size(-1)});
        db = transpose_b_ ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
      } else {
        // dB = A^T dC; for b stored transposed, db = dB^T = dC^T A.
        db = transpose_b_ ? matmul(g, a_, true, transpose_a_) : matmul(a_, g, !transpose_a_, false);
      }
      out[1] = ops::sum_to_shape(db, b_.shape());
    }
    return out;
  }

 private:
  Tensor a_, b_;
  bool transpose_a_, transpose_b_;
};

// A linear layer's dw (when want_weight) and db (when want_bias) from its dy and input x, both
// [rows, features]: one product with the bias reduction in its epilogue where the backend can.
void weight_and_bias_grads(const Backend& be, const Tensor& dy, const Tensor& x, bool want_weight, bool want_bias,
                           Tensor& dweight, Tensor& dbias) {
  if (want_weight) {
    LinearWeightGrads g = be.linear_weight_grads(dy, x, want_bias);
    dweight = g.dweight;
    dbias = g.dbias;
  } else if (want_bias) {
    dbias = sum(dy, {0});
  }
}

// y = x w^T + bias over rows of x; see linear() for the shapes. With pre_activation given, y was
// gelu(pre_activation) (linear_gelu) and the GeLU's derivative is applied first.
class LinearBackward final : public Node {
 public:
  LinearBackward(Tensor x, Tensor weight, bool has_bias, Tensor pre_activation = Tensor())
      : x_(std::move(x)), weight_(std::move(weight)), pre_(std::move(pre_activation)), has_bias_(has_bias) {}
  std::string name() const override { return pre_.defined() ? "LinearGeluBackward" : "LinearBackward"; }
  void release() override { x_ = weight_ = pre_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Backend& be = backend_for(weight_.device());
    const int64_t out_features = weight_.size(0);
    Tensor g2 = contiguous(reshape(grads[0], {-1, out_features}));
    if (pre_.defined()) g2 = be.unary_backward(UnaryOp::gelu, g2, pre_, Tensor(), 0.0);
    std::vector<Tensor> out(3);
    if (next[0].node) out[0] = reshape(be.linear_input_grad(g2, weight_, Tensor()), x_.shape());
    weight_and_bias_grads(be, g2, contiguous(reshape(x_, {-1, x_.size(-1)})), next[1].node != nullptr,
                          has_bias_ && next[2].node, out[1], out[2]);
    return out;
  }

 private:
  Tensor x_, weight_, pre_;
  bool has_bias_;
};

// y = gelu(x w1^T + b1) w2^T + b2 (mlp): saves x, the pre-activation and the hidden activation,
// as linear_gelu followed by linear would, and runs the backward as four backend products, the
// weight-gradient ones carrying the bias gradients in their epilogues (Backend::linear_weight_grads).
class MlpBackward final : public Node {
 public:
  MlpBackward(Shape x_shape, Tensor x, Tensor w1, Tensor pre, Tensor hidden, Tensor w2, bool has_b1, bool has_b2)
      : x_shape_(std::move(x_shape)), x_(std::move(x)), w1_(std::move(w1)), pre_(std::move(pre)),
        hidden_(std::move(hidden)), w2_(std::move(w2)), has_b1_(has_b1), has_b2_(has_b2) {}
  std::string name() const override { return "MlpBackward"; }
  void release() override { x_ = w1_ = pre_ = hidden_ = w2_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Backend& be = backend_for(w1_.device());
    Tensor dy = contiguous(reshape(grads[0], {-1, w2_.size(0)}));
    std::vector<Tensor> out(5);  // x, w1, b1, w2, b2
    weight_and_bias_grads(be, dy, hidden_, next[3].node != nullptr, has_b2_ && next[4].node, out[3], out[4]);
    const bool want_b1 = has_b1_ && next[2].node;
    if (!next[0].node && !next[1].node && !want_b1) return out;
    Tensor dpre = be.linear_input_grad(dy, w2_, pre_);  // d(x w1^T + b1)
    weight_and_bias_grads(be, dpre, x_, next[1].node != nullptr, want_b1, out[1], out[2]);
    if (next[0].node) out[0] = reshape(be.linear_input_grad(dpre, w1_, Tensor()), x_shape_);
    return out;
  }

 private:
  Shape x_shape_;
  Tensor x_, w1_, pre_, hidden_, w2_;  // x_ is [rows, in]
  bool has_b1_, has_b2_;
};

void check_matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  ops::check_same_dtype_device("matmul", a, b);
  ZT_CHECK(is_floating(a.dtype()), "matmul", "needs floating operands: a is ", a.describe(), ", b is ",
           b.describe());
  ZT_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul", "operands need at least 2 dims ([..., rows, cols]): a is ",
           a.describe(), ", b is ", b.describe());
  const int64_t ka = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t kb = transpose_b ? b.size(-1) : b.size(-2);
  ZT_CHECK(ka == kb, "matmul", "inner dimensions differ: a is ", a.describe(), transpose_a ? " (transposed)" : "",
           ", b is ", b.describe(), transpose_b ? " (transposed)" : "");
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  check_matmul(a, b, transpose_a, transpose_b);
  Tensor out = matmul_forward(a.detach(), b.detach(), transpose_a, transpose_b);
  if (needs_grad({&a, &b}))
    record(std::make_shared<MatmulBackward>(a.detach(), b.detach(), transpose_a, transpose_b), {a, b}, {&out});
  return out;
}

namespace {

void check_linear(const char* api, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  ops::check_same_dtype_device(api, x, weight);
  ZT_CHECK(is_floating(x.dtype()), api, "needs floating tensors: x is ", x.describe(), ", weight is ",
           weight.describe());
  ZT_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), api,
           "x [..., in] and weight [out, in] do not match: x is ", x.describe(), ", weight is ", weight.describe());
  if (bias.defined()) {
    ops::check_same_dtype_device(api, weight, bias);
    ZT_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), api, "bias must be [out]: weight is ",
             weight.describe(), ", bias is ", bias.describe());
  }
}

// The forward of linear and linear_gelu: rows of x through Backend::linear (which fuses the bias
// and the GeLU into the product where it can), then the backward node.
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, bool gelu) {
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  Tensor out, pre;
  {
    NoGradGuard no_grad;
    Tensor x2 = contiguous(reshape(x.detach(), {-1, in_features}));
    const Tensor b = bias.defined() ? contiguous(bias.detach()) : Tensor();
    out = backend_for(x.device()).linear(x2, contiguous(weight.detach()), b, gelu, gelu ? &pre : nullptr);
    Shape shape(x.shape().begin(), x.shape().end() - 1);
    shape.push_back(out_features);
    out = view(out, shape);
  }
  if (needs_grad({&x, &weight, &bias}))
    record(std::make_shared<LinearBackward>(x.detach(), weight.detach(), bias.defined(), pre), {x, weight, bias},
           {&out});
  return out;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear("linear", x, weight, bias);
  return linear_forward(x, weight, bias, /*gelu=*/false);
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear("linear_gelu", x, weight, bias);
  return linear_forward(x, weight, bias, /*gelu=*/true);
}

Tensor mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  check_linear("mlp", x, w1, b1);
  ZT_CHECK(w2.dim() == 2 && w2.size(1) == w1.size(0), "mlp", "w2 must be [out, ", w1.size(0),
           "] to follow w1 ", w1.describe(), ", got ", w2.describe());
  ops::check_same_dtype_device("mlp", x, w2);
  if (b2.defined()) {
    ops::check_same_dtype_device("mlp", x, b2);
    ZT_CHECK(b2.dim() == 1 && b2.size(0) == w2.size(0), "mlp", "b2 must be [", w2.size(0), "], got ",
             b2.describe());
  }
  const int64_t in_features = w1.size(1), out_features = w2.size(0);
  Tensor x2, w1c, w2c, pre, hidden, y;
  {
    NoGradGuard no_grad;
    const Backend& be = backend_for(x.device());
    x2 = contiguous(reshape(x.detach(), {-1, in_features}));
    w1c = contiguous(w1.detach());
    w2c = contiguous(w2.detach());
    const Tensor bias1 = b1.defined() ? contiguous(b1.detach()) : Tensor();
    const Tensor bias2 = b2.defined() ? contiguous(b2.detach()) : Tensor();
    hidden = be.linear(x2, w1c, bias1, /*gelu=*/true, &pre);
    ZT_ASSERT(pre.defined(), "mlp: Backend::linear with gelu did not return the pre-activation");
    y = be.linear(hidden, w2c, bias2, /*gelu=*/false, nullptr);
    Shape shape(x.shape().begin(), x.shape().end() - 1);
    shape.push_back(out_features);
    y = view(y, shape);
  }
  if (needs_grad({&x, &w1, &b1, &w2, &b2}))
    record(std::make_shared<MlpBackward>(x.shape(), x2, w1c, pre, hidden, w2c, b1.defined(), b2.defined()),
           {x, w1, b1, w2, b2}, {&y});
  return y;
}

}  // namespace zt

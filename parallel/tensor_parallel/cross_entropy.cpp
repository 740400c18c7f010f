#include "parallel/tensor_parallel/cross_entropy.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/ops.h"

namespace zt::tp {

namespace {

constexpr const char* kApi = "vocab_parallel_cross_entropy";

// What the rows need from the host-side targets.
struct TargetPlan {
  std::vector<int64_t> positions;  // flat index row * Vl + local column of the target (0 if not here)
  std::vector<double> on_rank;     // 1 where the target column is one of this rank's
  std::vector<double> counted;     // 1 where the target is not ignored
  int64_t count = 0, on_rank_count = 0;
};

TargetPlan plan_targets(const Tensor& flat_targets, int64_t ignore_index, int64_t valid, int64_t begin, int64_t width) {
  std::vector<int64_t> t;
  if (flat_targets.dtype() == DType::i64) {
    t = flat_targets.to_vector<int64_t>();
  } else {
    for (int32_t v : flat_targets.to_vector<int32_t>()) t.push_back(v);
  }
  TargetPlan plan;
  const size_t n = t.size();
  plan.positions.assign(n, 0);
  plan.on_rank.assign(n, 0.0);
  plan.counted.assign(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    ZT_CHECK(t[i] >= 0 && t[i] < valid, kApi, "target ", t[i], " at row ", i, " is out of range [0, ", valid,
             ") and is not ignore_index ", ignore_index);
    plan.counted[i] = 1.0;
    ++plan.count;
    if (t[i] >= begin && t[i] < begin + width) {
      plan.positions[i] = static_cast<int64_t>(i) * width + (t[i] - begin);
      plan.on_rank[i] = 1.0;
      ++plan.on_rank_count;
    }
  }
  return plan;
}

// Rows [r0, r0 + rows) of a plan, with positions counted from the chunk's first row.
TargetPlan chunk_of(const TargetPlan& whole, int64_t r0, int64_t rows, int64_t width) {
  TargetPlan c;
  const auto first = static_cast<size_t>(r0), last = static_cast<size_t>(r0 + rows);
  c.positions.assign(whole.positions.begin() + first, whole.positions.begin() + last);
  c.on_rank.assign(whole.on_rank.begin() + first, whole.on_rank.begin() + last);
  c.counted.assign(whole.counted.begin() + first, whole.counted.begin() + last);
  for (size_t i = 0; i < c.positions.size(); ++i) {
    if (c.on_rank[i] != 0) c.positions[i] -= r0 * width, ++c.on_rank_count;
    if (c.counted[i] != 0) ++c.count;
  }
  return c;
}

// targets: i32/i64 of `rows_of`'s shape without its last dim (`name` in the message).
void check_targets(const char* api, const Tensor& targets, const Tensor& rows_of, const char* name) {
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, api, "targets must be i32 or i64, got ",
           targets.describe());
  const Shape rows_shape(rows_of.shape().begin(), rows_of.shape().end() - 1);
  ZT_CHECK(targets.shape() == rows_shape, api, "targets must have the shape of ", name, " without its last dim: ",
           name, " is ", rows_of.describe(), ", targets are ", targets.describe());
}

// This rank's place in the split vocabulary: `width` columns from `begin`, the first `valid_local` of
// them inside valid_vocab (-1: all), checked against the whole vocabulary of width x tp.size().
struct VocabShard {
  int64_t width = 0, begin = 0, valid = 0, valid_local = 0;
};

VocabShard vocab_shard(const char* api, int64_t width, const comm::Communicator& tp, int64_t valid_vocab,
                       const Tensor& shard) {
  const int64_t vocab = width * tp.size();
  VocabShard v;
  v.width = width;
  v.valid = valid_vocab < 0 ? vocab : valid_vocab;
  ZT_CHECK(v.valid >= 1 && v.valid <= vocab, api, "valid_vocab ", valid_vocab, " must be in [1, ", vocab,
           "] (or -1 for all of them) for vocabulary shards ", shard.describe(), " over ", tp.size(), " ranks");
  v.begin = tp.rank() * width;
  v.valid_local = std::clamp<int64_t>(v.valid - v.begin, 0, width);
  return v;
}

// exp(logits[:, :valid_local] - shift) as a fresh [rows, valid_local] buffer of `acc`, through one
// more buffer its size (a widened copy, shifted in place): the logits stay in their dtype.
Tensor shifted_exp(const Tensor& logits, int64_t valid_local, const Tensor& shift, DType acc) {
  Tensor shifted = empty({logits.size(0), valid_local}, acc, logits.device());
  copy_(shifted, narrow(logits, 1, 0, valid_local));
  backend_for(logits.device()).binary(BinaryOp::sub, shifted, expand(unsqueeze(shift, 1), shifted.shape()), shifted);
  return exp(shifted);
}

// The logits' gradient over this rank's `width` columns of `rows` rows from p = exp(x - shift) of
// its valid ones (undefined: it has none): p * row_factor (in place; padding columns get zero),
// plus minus_at_target [rows] at the target positions this rank holds (undefined: none here).
Tensor local_logits_gradient(Tensor p, const Tensor& row_factor, int64_t rows, int64_t width, const Tensor& positions,
                             const Tensor& minus_at_target) {
  const Backend& be = backend_for(row_factor.device());
  if (p.defined()) be.binary(BinaryOp::mul, p, expand(unsqueeze(row_factor, 1), p.shape()), p);
  Tensor d = p;
  if (!p.defined() || p.size(1) != width) {  // padding columns: zero gradient
    d = zeros({rows, width}, row_factor.dtype(), row_factor.device());
    if (p.defined()) {
      Tensor window = narrow(d, 1, 0, p.size(1));
      copy_(window, p);
      p = Tensor();  // before the scatter below: two buffers, not three
    }
  }
  if (minus_at_target.defined()) {  // a scatter-add of one value per row
    Tensor onehot = be.embedding_backward(contiguous(unsqueeze(minus_at_target, 1)), positions, rows * width);
    Tensor flat = view(d, {rows * width, 1});
    add_(flat, onehot);
  }
  return d;
}

class VocabParallelCrossEntropyBackward final : public Node {
 public:
  VocabParallelCrossEntropyBackward(Tensor logits2, Tensor lse, Tensor positions, Tensor on_rank, Tensor counted,
                                    int64_t valid_local, int64_t count, bool any_on_rank, DType compute,
                                    Shape logits_shape)
      : logits2_(std::move(logits2)), lse_(std::move(lse)), positions_(std::move(positions)),
        on_rank_(std::move(on_rank)), counted_(std::move(counted)), valid_local_(valid_local), count_(count),
        any_on_rank_(any_on_rank), compute_(compute), logits_shape_(std::move(logits_shape)) {}
  std::string name() const override { return "VocabParallelCrossEntropyBackward"; }
  void release() override { logits2_ = lse_ = positions_ = on_rank_ = counted_ = Tensor(); }

  // At most two f32 buffers the size of this rank's logits at a time (shifted_exp), the second of
  // which becomes the gradient.
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const double scale = count_ == 0 ? 0.0 : grads[0].item() / static_cast<double>(count_);
    const int64_t rows = logits2_.size(0), width = logits2_.size(1);
    const Tensor minus = any_on_rank_ ? mul_scalar(on_rank_, -scale) : Tensor();
    Tensor d = local_logits_gradient(valid_local_ > 0 ? shifted_exp(logits2_, valid_local_, lse_, compute_) : Tensor(),
                                     mul_scalar(counted_, scale), rows, width, positions_, minus);
    if (d.dtype() != logits2_.dtype()) d = to(d, logits2_.dtype());
    return {reshape(d, logits_shape_)};
  }

 private:
  Tensor logits2_, lse_, positions_, on_rank_, counted_;
  int64_t valid_local_, count_;
  bool any_on_rank_;
  DType compute_;
  Shape logits_shape_;
};

}  // namespace

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, comm::Communicator& tp,
                                    int64_t ignore_index, int64_t valid_vocab) {
  ZT_CHECK(logits.defined() && targets.defined(), kApi, "logits and targets must be defined");
  ZT_CHECK(is_floating(logits.dtype()) && logits.dim() >= 1, kApi, "logits must be a floating [..., V/tp] tensor, got ",
           logits.describe());
  check_targets(kApi, targets, logits, "logits");
  ZT_CHECK(logits.device() == tp.device() && targets.device() == tp.device(), kApi, "logits ", logits.describe(),
           " and targets ", targets.describe(), " must be on the tensor-parallel group's device ", tp.device().str());
  if (tp.size() == 1) return cross_entropy(logits, targets, ignore_index, valid_vocab);

  const VocabShard shard = vocab_shard(kApi, logits.size(-1), tp, valid_vocab, logits);
  const int64_t width = shard.width, valid = shard.valid, begin = shard.begin, valid_local = shard.valid_local;
  const DType compute = logits.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Device dev = logits.device();

  Tensor logits2, lse, loss, positions, on_rank, counted;
  TargetPlan plan;
  {
    NoGradGuard no_grad;
    logits2 = contiguous(reshape(logits.detach(), {-1, width}));
    const int64_t rows = logits2.size(0);
    plan = plan_targets(contiguous(reshape(targets.detach(), {rows})), ignore_index, valid, begin, width);
    positions = from_vector(plan.positions, {rows}, dev);
    on_rank = from_vector_as(plan.on_rank, {rows}, compute, dev);
    counted = from_vector_as(plan.counted, {rows}, compute, dev);

    // Two f32 buffers the size of this rank's logits at most (shifted_exp); the max and the
    // target's logit read the logits as they are.
    Tensor valid_x = valid_local > 0 ? narrow(logits2, 1, 0, valid_local) : Tensor();
    Tensor row_max = valid_local > 0 ? to(contiguous(max(valid_x, 1)), compute)
                                     : full({rows}, -std::numeric_limits<double>::infinity(), compute, dev);
    tp.all_reduce(row_max, comm::ReduceOp::max)->wait();
    Tensor sum_exp = valid_local > 0 ? sum(shifted_exp(logits2, valid_local, row_max, compute), {1})
                                     : zeros({rows}, compute, dev);
    Tensor target_logit = zeros({rows}, compute, dev);
    if (plan.on_rank_count > 0)
      target_logit = mul(to(reshape(embedding(view(logits2, {rows * width, 1}), positions), {rows}), compute), on_rank);
    Tensor stats = cat({sum_exp, target_logit}, 0);  // one all-reduce for both
    tp.all_reduce(stats, comm::ReduceOp::sum)->wait();
    lse = add(log(narrow(stats, 0, 0, rows)), row_max);
    Tensor losses = mul(sub(lse, narrow(stats, 0, rows, rows)), counted);
    loss = mul_scalar(sum(losses), plan.count == 0 ? 0.0 : 1.0 / static_cast<double>(plan.count));
  }
  if (needs_grad({&logits}))
    record(std::make_shared<VocabParallelCrossEntropyBackward>(logits2, contiguous(lse), positions, on_rank, counted,
                                                               valid_local, plan.count, plan.on_rank_count > 0,
                                                               compute, logits.shape()),
           {logits}, {&loss});
  return loss;
}

Tensor vocab_parallel_linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                                           int64_t chunk_rows, comm::Communicator& tp, int64_t ignore_index,
                                           int64_t valid_vocab) {
  const char* api = "vocab_parallel_linear_cross_entropy";
  ZT_CHECK(x.defined() && weight.defined() && targets.defined(), api, "x, weight and targets must be defined");
  ZT_CHECK(is_floating(x.dtype()) && x.dim() >= 1 && weight.dim() == 2 && weight.size(1) == x.size(-1) &&
               weight.dtype() == x.dtype(),
           api, "needs floating x [..., C] and weight [V/tp, C] of one dtype, got x ", x.describe(), ", weight ",
           weight.describe());
  check_targets(api, targets, x, "x");
  ZT_CHECK(x.device() == tp.device() && weight.device() == tp.device() && targets.device() == tp.device(), api,
           "x ", x.describe(), ", weight ", weight.describe(), " and targets ", targets.describe(),
           " must be on the tensor-parallel group's device ", tp.device().str());
  ZT_CHECK(chunk_rows >= 1, api, "chunk_rows must be >= 1, got ", chunk_rows);
  if (tp.size() == 1) return linear_cross_entropy(x, weight, targets, chunk_rows, ignore_index, valid_vocab);

  const int64_t C = x.size(-1);
  const VocabShard shard = vocab_shard(api, weight.size(0), tp, valid_vocab, weight);
  const int64_t width = shard.width, valid = shard.valid, begin = shard.begin, valid_local = shard.valid_local;
  const DType acc = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Device dev = x.device();
  const Backend& be = backend_for(dev);
  const bool grad_x = needs_grad({&x}), grad_w = needs_grad({&weight});

  Tensor loss, dx, dw, inv_count;
  {
    NoGradGuard no_grad;
    const Tensor x2 = contiguous(reshape(x.detach(), {-1, C}));
    const Tensor w = contiguous(weight.detach());
    const int64_t N = x2.size(0);
    const Tensor t = contiguous(reshape(targets.detach(), {N}));
    if (grad_x) dx = empty({N, C}, acc, dev);
    if (grad_w) dw = zeros({width, C}, acc, dev);
    Tensor loss_sum = zeros({}, acc, dev);
    // The targets cross to the host once (as the unchunked loss reads them), not once per chunk.
    const TargetPlan whole_plan = plan_targets(t, ignore_index, valid, begin, width);
    const int64_t count = whole_plan.count;
    for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, N - r0);
      const Tensor xc = narrow(x2, 0, r0, rows);
      const TargetPlan plan = chunk_of(whole_plan, r0, rows, width);
      const Tensor counted = from_vector_as(plan.counted, {rows}, acc, dev);
      // The chunk's logits in the compute dtype and two f32 buffers of them (shifted_exp), the
      // second kept as the gradient: 2 e + 8 bytes a local logit with the rounded gradient.
      Tensor logits = reshape(be.gemm(xc, w, false, true, 1, Tensor()), {rows, width});
      Tensor row_max = valid_local > 0 ? to(contiguous(max(narrow(logits, 1, 0, valid_local), 1)), acc)
                                       : full({rows}, -std::numeric_limits<double>::infinity(), acc, dev);
      tp.all_reduce(row_max, comm::ReduceOp::max)->wait();
      Tensor p = valid_local > 0 ? shifted_exp(logits, valid_local, row_max, acc) : Tensor();
      const Tensor positions = from_vector(plan.positions, {rows}, dev);
      const Tensor on_rank = from_vector_as(plan.on_rank, {rows}, acc, dev);
      Tensor target_logit = zeros({rows}, acc, dev);
      if (plan.on_rank_count > 0)
        target_logit = mul(to(reshape(embedding(view(logits, {rows * width, 1}), positions), {rows}), acc), on_rank);
      logits = Tensor();
      Tensor stats = cat({p.defined() ? sum(p, {1}) : zeros({rows}, acc, dev), target_logit}, 0);
      tp.all_reduce(stats, comm::ReduceOp::sum)->wait();
      const Tensor lse = add(log(narrow(stats, 0, 0, rows)), row_max);
      add_(loss_sum, sum(mul(sub(lse, narrow(stats, 0, rows, rows)), counted)));
      if (!grad_x && !grad_w) continue;
      // The chunk's logits' gradient at scale 1 (Note [Chunked loss]): softmax = p exp(max - lse)
      // over this rank's valid columns, minus one at the target columns it holds; ignored rows none.
      const Tensor d = local_logits_gradient(std::move(p), mul(exp(sub(row_max, lse)), counted), rows, width, positions,
                                             plan.on_rank_count > 0 ? mul_scalar(on_rank, -1.0) : Tensor());
      const Tensor dc = d.dtype() == x.dtype() ? d : to(d, x.dtype());  // rounded as the logits were
      if (grad_x) {
        Tensor dx_rows = narrow(dx, 0, r0, rows);
        be.gemm_into(dc, w, false, false, dx_rows, /*accumulate=*/false);
      }
      if (grad_w) be.gemm_into(dc, xc, true, false, dw, /*accumulate=*/true);
    }
    inv_count = full({}, count == 0 ? 0.0 : 1.0 / static_cast<double>(count), acc, dev);
    loss = mul(loss_sum, inv_count);
  }
  record_precomputed_head_gradients(x, weight, loss, dx, dw, inv_count);
  return loss;
}

}  // namespace zt::tp

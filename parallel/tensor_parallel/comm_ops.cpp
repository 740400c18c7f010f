#include "parallel/tensor_parallel/comm_ops.h"

#include <string>
#include <utility>

#include "core/autograd.h"
#include "core/ops.h"

namespace zt::tp {

namespace detail {

namespace {

int64_t normalize(const char* api, const Tensor& x, int64_t dim) {
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  ZT_CHECK(d >= 0 && d < x.dim(), api, "dim ", dim, " is out of range for ", x.describe());
  return d;
}

void check_device(const char* api, const Tensor& x, comm::Communicator& tp) {
  ZT_CHECK(x.defined(), api, "input is undefined");
  ZT_CHECK(x.device() == tp.device(), api, "tensor ", x.describe(), " is not on the tensor-parallel group's device ",
           tp.device().str());
}

}  // namespace

Tensor all_reduce_copy(const Tensor& x, comm::Communicator& tp) {
  check_device("tensor_parallel.all_reduce", x, tp);
  NoGradGuard no_grad;
  Tensor y = clone(x.detach());
  tp.all_reduce(y, comm::ReduceOp::sum)->wait();
  return y;
}

Tensor all_gather_along(const Tensor& x, int64_t dim, comm::Communicator& tp) {
  const char* api = "tensor_parallel.all_gather";
  check_device(api, x, tp);
  const int64_t d = normalize(api, x, dim);
  NoGradGuard no_grad;
  const int size = tp.size();
  Tensor src = contiguous(x.detach());
  Tensor stacked = empty({size * src.numel()}, src.dtype(), src.device());
  tp.all_gather(view(src, {src.numel()}), stacked)->wait();
  // stacked is [size, *x.shape]; bring the rank axis next to dim, then merge the two.
  Shape shape = x.shape();
  Shape with_ranks = shape;
  with_ranks.insert(with_ranks.begin(), size);
  Tensor t = view(stacked, with_ranks);
  if (d > 0) {
    std::vector<int64_t> perm;
    for (int64_t i = 1; i <= d; ++i) perm.push_back(i);
    perm.push_back(0);
    for (int64_t i = d + 1; i <= x.dim(); ++i) perm.push_back(i);
    t = contiguous(permute(t, perm));
  }
  shape[static_cast<size_t>(d)] *= size;
  return view(t, shape);
}

Tensor reduce_scatter_along(const Tensor& x, int64_t dim, comm::Communicator& tp) {
  const char* api = "tensor_parallel.reduce_scatter";
  check_device(api, x, tp);
  const int64_t d = normalize(api, x, dim);
  const int size = tp.size();
  ZT_CHECK(x.size(d) % size == 0, api, "dim ", d, " of ", x.describe(),
           " is not divisible by the tensor-parallel size ", size);
  NoGradGuard no_grad;
  Shape local = x.shape();
  local[static_cast<size_t>(d)] /= size;
  Shape split = local;
  split.insert(split.begin() + d, size);  // [..., size, n, ...]
  Tensor t = reshape(x.detach(), split);
  if (d > 0) {
    std::vector<int64_t> perm{d};
    for (int64_t i = 0; i < static_cast<int64_t>(split.size()); ++i)
      if (i != d) perm.push_back(i);
    t = permute(t, perm);  // [size, ...local]
  }
  t = contiguous(t);
  Tensor out = empty(local, x.dtype(), x.device());
  tp.reduce_scatter(view(t, {t.numel()}), view(out, {out.numel()}), comm::ReduceOp::sum)->wait();
  return out;
}

Tensor chunk_along(const Tensor& x, int64_t dim, comm::Communicator& tp) {
  const char* api = "tensor_parallel.scatter";
  check_device(api, x, tp);
  const int64_t d = normalize(api, x, dim);
  ZT_CHECK(x.size(d) % tp.size() == 0, api, "dim ", d, " of ", x.describe(),
           " is not divisible by the tensor-parallel size ", tp.size());
  NoGradGuard no_grad;
  const int64_t n = x.size(d) / tp.size();
  return contiguous(narrow(x.detach(), d, tp.rank() * n, n));
}

}  // namespace detail

namespace {

enum class Collective : uint8_t { identity, all_reduce, all_gather, reduce_scatter, chunk };

Tensor apply(Collective c, const Tensor& x, int64_t dim, comm::Communicator& tp) {
  switch (c) {
    case Collective::identity: return x;
    case Collective::all_reduce: return detail::all_reduce_copy(x, tp);
    case Collective::all_gather: return detail::all_gather_along(x, dim, tp);
    case Collective::reduce_scatter: return detail::reduce_scatter_along(x, dim, tp);
    case Collective::chunk: return detail::chunk_along(x, dim, tp);
  }
  return x;
}

// One node for all six ops: the backward is the collective adjoint to the forward's.
class TpCommBackward final : public Node {
 public:
  TpCommBackward(std::string name, Collective backward, int64_t dim, comm::Communicator& tp)
      : name_(std::move(name)), backward_(backward), dim_(dim), tp_(tp) {}
  std::string name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!grads[0].defined()) return {Tensor()};
    return {apply(backward_, grads[0], dim_, tp_)};
  }

 private:
  std::string name_;
  Collective backward_;
  int64_t dim_;
  comm::Communicator& tp_;
};

Tensor run(const char* name, Collective forward, Collective backward, const Tensor& x, int64_t dim,
           comm::Communicator& tp) {
  ZT_CHECK(x.defined(), name, "input is undefined");
  if (tp.size() == 1) return x;
  const int64_t d = dim < 0 ? dim + x.dim() : dim;  // fixed now: the gradient has x's rank
  Tensor y;
  {
    NoGradGuard no_grad;
    y = forward == Collective::identity ? x.detach() : apply(forward, x, d, tp);
  }
  if (needs_grad({&x})) record(std::make_shared<TpCommBackward>(name, backward, d, tp), {x}, {&y});
  return y;
}

}  // namespace

Tensor copy_to_tp(const Tensor& x, comm::Communicator& tp) {
  return run("copy_to_tp", Collective::identity, Collective::all_reduce, x, 0, tp);
}

Tensor reduce_from_tp(const Tensor& x, comm::Communicator& tp) {
  return run("reduce_from_tp", Collective::all_reduce, Collective::identity, x, 0, tp);
}

Tensor gather_from_tp(const Tensor& x, comm::Communicator& tp, int64_t dim) {
  return run("gather_from_tp", Collective::all_gather, Collective::chunk, x, dim, tp);
}

Tensor scatter_to_tp(const Tensor& x, comm::Communicator& tp, int64_t dim) {
  return run("scatter_to_tp", Collective::chunk, Collective::all_gather, x, dim, tp);
}

Tensor gather_from_sequence_parallel(const Tensor& x, comm::Communicator& tp, int64_t dim) {
  return run("gather_from_sequence_parallel", Collective::all_gather, Collective::reduce_scatter, x, dim, tp);
}

Tensor reduce_scatter_to_sequence_parallel(const Tensor& x, comm::Communicator& tp, int64_t dim) {
  return run("reduce_scatter_to_sequence_parallel", Collective::reduce_scatter, Collective::all_gather, x, dim, tp);
}

}  // namespace zt::tp

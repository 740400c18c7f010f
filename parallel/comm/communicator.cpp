// Argument checks shared by every backend: the public verbs check, then call the backend's do_*.
#include "parallel/comm/communicator.h"

#include <string>

#include "core/backend.h"

namespace zt::comm {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
  }
  return "?";
}

namespace {

void check_buffer(const char* api, const Communicator& comm, const Tensor& t, const char* role) {
  ZT_CHECK(t.defined(), api, role, " is undefined");
  ZT_CHECK(t.is_contiguous(), api, role, " must be contiguous, got ", t.describe(), " with strides ",
           shape_str(t.strides()));
  ZT_CHECK(t.device() == comm.device(), api, "the ", comm.backend(), " communicator works on ", comm.device().str(),
           " tensors, but ", role, " is ", t.describe());
}

// Note [One rank]: a group of one rank reduces, gathers and broadcasts nothing, so the collectives
// return at once (all_reduce and broadcast leave the tensor as it is; reduce_scatter and
// all_gather copy input to output, on the compute stream, when they are not the same memory).
// A single-GPU run thus launches no NCCL kernels for its gradients at all.
WorkPtr copy_on_one_rank(const Tensor& input, const Tensor& output) {
  if (input.raw_data() != output.raw_data() && input.nbytes() > 0)
    backend_for(output.device())
        .copy_bytes(const_cast<void*>(output.raw_data()), output.device(), input.raw_data(), input.device(),
                    input.nbytes());
  return completed_work();
}

void check_reduce_dtype(const char* api, DType dtype, ReduceOp op) {
  if (op == ReduceOp::avg) {
    ZT_CHECK(is_floating(dtype), api, "avg needs a floating dtype (f32, f64, bf16, f16), got ", dtype_name(dtype));
  }
  if (dtype == DType::boolean) {
    ZT_CHECK(op == ReduceOp::max, api, "bool tensors accept only max (logical or), got ", reduce_op_name(op));
  }
}

void check_same_dtype(const char* api, const Tensor& input, const Tensor& output) {
  ZT_CHECK(input.dtype() == output.dtype(), api, "input and output dtypes differ: input is ", input.describe(),
           ", output is ", output.describe());
}

const char* byte_ptr(const Tensor& t) { return static_cast<const char*>(t.raw_data()); }

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  return byte_ptr(a) < byte_ptr(b) + b.nbytes() && byte_ptr(b) < byte_ptr(a) + a.nbytes();
}

// `small` may overlap `big` only as exactly the rank's slice of it.
void check_alias(const char* api, const Tensor& small, const char* small_role, const Tensor& big,
                 const char* big_role, int rank) {
  if (!overlaps(small, big)) return;
  const char* own_slice = byte_ptr(big) + static_cast<size_t>(rank) * small.nbytes();
  ZT_CHECK(byte_ptr(small) == own_slice, api, small_role, " overlaps ", big_role,
           " but is not this rank's slice of it (rank ", rank, ", elements [", rank * small.numel(), ", ",
           (rank + 1) * small.numel(), ")); only that overlap is supported");
}

void check_peer(const char* api, int peer, int size, const char* role) {
  ZT_CHECK(peer >= 0 && peer < size, api, role, " ", peer, " is not a rank of this group of ", size, " (0 to ",
           size - 1, ")");
}

}  // namespace

WorkPtr Communicator::all_reduce(const Tensor& tensor, ReduceOp op) {
  const char* api = "comm.all_reduce";
  check_buffer(api, *this, tensor, "tensor");
  check_reduce_dtype(api, tensor.dtype(), op);
  if (size() == 1) return completed_work();  // Note [One rank]
  return do_all_reduce(tensor, op);
}

WorkPtr Communicator::reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) {
  const char* api = "comm.reduce_scatter";
  check_buffer(api, *this, input, "input");
  check_buffer(api, *this, output, "output");
  check_same_dtype(api, input, output);
  check_reduce_dtype(api, input.dtype(), op);
  ZT_CHECK(input.numel() == size() * output.numel(), api, "input has ", input.numel(), " elements, needs size (",
           size(), ") x output (", output.numel(), ") = ", size() * output.numel());
  check_alias(api, output, "output", input, "input", rank());
  if (size() == 1) return copy_on_one_rank(input, output);
  return do_reduce_scatter(input, output, op);
}

WorkPtr Communicator::all_gather(const Tensor& input, const Tensor& output) {
  const char* api = "comm.all_gather";
  check_buffer(api, *this, input, "input");
  check_buffer(api, *this, output, "output");
  check_same_dtype(api, input, output);
  ZT_CHECK(output.numel() == size() * input.numel(), api, "output has ", output.numel(), " elements, needs size (",
           size(), ") x input (", input.numel(), ") = ", size() * input.numel());
  check_alias(api, input, "input", output, "output", rank());
  if (size() == 1) return copy_on_one_rank(input, output);
  return do_all_gather(input, output);
}

WorkPtr Communicator::broadcast(const Tensor& tensor, int root) {
  const char* api = "comm.broadcast";
  check_buffer(api, *this, tensor, "tensor");
  check_peer(api, root, size(), "root");
  if (size() == 1) return completed_work();  // Note [One rank]
  return do_broadcast(tensor, root);
}

WorkPtr Communicator::send(const Tensor& tensor, int peer, int tag) {
  return batch_send_recv({PeerOp::send(tensor, peer, tag)});
}

WorkPtr Communicator::recv(const Tensor& tensor, int peer, int tag) {
  return batch_send_recv({PeerOp::recv(tensor, peer, tag)});
}

WorkPtr Communicator::batch_send_recv(const std::vector<PeerOp>& ops) {
  const char* api = "comm.send_recv";
  for (const PeerOp& op : ops) {
    const bool is_send = op.kind == PeerOp::Kind::send;
    check_buffer(api, *this, op.tensor, is_send ? "sent tensor" : "received tensor");
    check_peer(api, op.peer, size(), is_send ? "destination" : "source");
    ZT_CHECK(op.tag >= 0, api, "tags must be non-negative, got ", op.tag);
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != PeerOp::Kind::recv) continue;
    for (size_t j = 0; j < ops.size(); ++j) {
      ZT_CHECK(i == j || !overlaps(ops[i].tensor, ops[j].tensor), api, "received tensor ", i,
               " overlaps tensor ", j, " of the same batch");
    }
  }
  return do_batch_send_recv(ops);
}

WorkPtr Communicator::barrier() { return do_barrier(); }

std::unique_ptr<Communicator> Communicator::split(int color, int key) { return do_split(color, key); }

namespace {
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};
}  // namespace

WorkPtr completed_work() { return std::make_unique<CompletedWork>(); }

}  // namespace zt::comm

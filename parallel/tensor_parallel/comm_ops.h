// The differentiable communication of Megatron-style tensor and sequence parallelism: each op is
// one collective forward and its adjoint backward, recorded as one autograd node.
//
//   op                                     forward                    backward
//   copy_to_tp                             identity                   all-reduce (sum)
//   reduce_from_tp                         all-reduce (sum)           identity
//   gather_from_tp(dim)                    all-gather along dim       keep own chunk of dim
//   scatter_to_tp(dim)                     keep own chunk of dim      all-gather along dim
//   gather_from_sequence_parallel(dim)     all-gather along dim       reduce-scatter along dim
//   reduce_scatter_to_sequence_parallel    reduce-scatter along dim   all-gather along dim
//
// copy_to_tp / reduce_from_tp bracket the tensor-parallel region when the activations outside it
// are replicated; the sequence-parallel pair replaces them when the activations outside are split
// along the sequence (Korthikanti et al. 2022): the all-reduce becomes a reduce-scatter plus an
// all-gather of the same total volume, and the layernorms and dropouts in between work on T/tp.
//
// Chunk r of dim is [r*n, (r+1)*n), n = size(dim) / tp.size(), in rank order. Groups of one rank
// return the input unchanged. Tensors must be on the group's device.
//
// Note [TP comm overlap]: every collective is waited for right after it starts (MPI: the host
// blocks; NCCL: only the compute stream waits). Overlap can come later at these places: the
// all-gather of the sequence-parallel input with the first GEMM's chunks (Megatron's
// "tp-comm-overlap"), the backward all-reduce of copy_to_tp with the weight-gradient GEMM, and the
// replicated parameters' gradient all-reduces (one per use today) batched into one after backward.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "parallel/comm/communicator.h"

namespace zt::tp {

Tensor copy_to_tp(const Tensor& x, comm::Communicator& tp);
Tensor reduce_from_tp(const Tensor& x, comm::Communicator& tp);
Tensor gather_from_tp(const Tensor& x, comm::Communicator& tp, int64_t dim = -1);
Tensor scatter_to_tp(const Tensor& x, comm::Communicator& tp, int64_t dim = -1);
Tensor gather_from_sequence_parallel(const Tensor& x, comm::Communicator& tp, int64_t dim = 1);
Tensor reduce_scatter_to_sequence_parallel(const Tensor& x, comm::Communicator& tp, int64_t dim = 1);

// The collectives themselves, without autograd (used by the nodes above and by fused ops).
namespace detail {
Tensor all_reduce_copy(const Tensor& x, comm::Communicator& tp);       // a fresh sum over ranks
Tensor all_gather_along(const Tensor& x, int64_t dim, comm::Communicator& tp);
Tensor reduce_scatter_along(const Tensor& x, int64_t dim, comm::Communicator& tp);
Tensor chunk_along(const Tensor& x, int64_t dim, comm::Communicator& tp);  // own chunk, contiguous
}  // namespace detail

}  // namespace zt::tp

// Megatron-style tensor-parallel layers as functions over the rank's weight shards
// (Note [TP shards] in sharding.h), built from the differentiable collectives of comm_ops.h.
//
// With a TpGroup of one rank (or none) every function is exactly its single-process op, so a model
// written with them runs unchanged without tensor parallelism.
//
// Activations around the layers are either replicated on every tp rank ([B, T, C] everywhere) or,
// with sequence_parallel, split along the sequence ([B, T/tp, C], rank r holding positions
// [r*T/tp, (r+1)*T/tp)). A column-parallel linear takes that layout in and gives features split
// across ranks out; a row-parallel linear takes split features in and gives that layout out.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "parallel/comm/communicator.h"

namespace zt::tp {

struct TpGroup {
  comm::Communicator* comm = nullptr;  // null: no tensor parallelism
  bool sequence_parallel = false;      // activations outside the tp regions split along dim 1

  int size() const { return comm ? comm->size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
  bool active() const { return size() > 1; }
  bool splits_sequence() const { return active() && sequence_parallel; }
};

// Into and out of a tensor-parallel region: copy_to_tp / reduce_from_tp, or under sequence
// parallelism the sequence all-gather / reduce-scatter along dim 1.
Tensor enter_tp_region(const Tensor& x, const TpGroup& tp);
Tensor leave_tp_region(const Tensor& partial, const TpGroup& tp);

// y = x weight^T + bias with weight [out/tp, in] and bias [out/tp] (may be undefined): the rank's
// output features. gather_output all-gathers them to [..., out] (replicated).
Tensor column_parallel_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const TpGroup& tp,
                              bool gather_output = false);

// y = x weight^T + bias with x [..., in/tp] (this rank's input features), weight [out, in/tp] and the
// whole bias [out] (replicated; may be undefined), added after the reduction so it is added once.
Tensor row_parallel_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const TpGroup& tp);

// The transformer MLP, gelu(x w1^T + b1) w2^T + b2, as column- then row-parallel linears: w1 [F/tp,
// C] and b1 [F/tp] are this rank's hidden features, w2 [C, F/tp] their columns of the projection,
// b2 [C] whole. One mlp() node per rank (fused GeLU and bias-gradient epilogues on the GPU); the
// input enters and the output leaves the tensor-parallel region as in the two linears.
Tensor parallel_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                    const TpGroup& tp);

// Rows of the vocabulary-parallel embedding: weight [V/tp, C] holds rows [rank*V/tp, (rank+1)*V/tp)
// of the whole [V, C]. Ids outside the rank's range give zero rows; the partial results are summed
// over ranks (all-reduce, or reduce-scatter along dim 1 under sequence parallelism). ids [B, T]
// i32/i64, each in [0, V). The ids are read on the host (as cross_entropy counts its targets).
Tensor vocab_parallel_embedding(const Tensor& weight, const Tensor& ids, const TpGroup& tp);

// Dropout of the rank's sequence shard x [B, T/tp, ...] that draws exactly the mask the whole
// [B, T, ...] tensor would get from dropout(whole, p, seed, 0): row b of the shard starts at
// element (b*T + seq_start) * inner of the whole.
Tensor sequence_shard_dropout(const Tensor& x, double p, uint64_t seed, int64_t full_seq_len, int64_t seq_start);

}  // namespace zt::tp

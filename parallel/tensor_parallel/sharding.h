// How a parameter is cut across the ranks of a tensor-parallel group (Megatron layout), and the
// arithmetic to go between the whole tensor and one rank's shard.
//
// Note [TP shards]: rank r of a group of size n holds
//   replicated  the whole tensor (layernorms, row-parallel biases, wpe)
//   rows        rows [r*R/n, (r+1)*R/n) of dim 0 (column-parallel weights and biases, the
//               vocabulary rows of wte)
//   columns     columns [r*K/n, (r+1)*K/n) of dim 1 (row-parallel weights)
//   qkv_rows    dim 0 is three equal sections [q; k; v] (GPT-2's fused c_attn); the rank holds the
//               rows-split of each section, concatenated: [q_r; k_r; v_r], so that its rows are the
//               q, k and v of its own attention heads.
// Shards are plain contiguous tensors; nothing here keeps a view of the whole.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "parallel/comm/communicator.h"

namespace zt::tp {

enum class TpSplit : uint8_t { replicated, rows, columns, qkv_rows };
const char* tp_split_name(TpSplit split);

// The shard's shape; throws "[tensor_parallel] ..." naming `what` when the split dim is not
// divisible by size (by 3 * size for qkv_rows).
Shape shard_shape(const Shape& full, TpSplit split, int size, const char* what = "tensor");

// Rank `rank`'s shard of `full` (a contiguous copy, no autograd).
Tensor take_shard(const Tensor& full, TpSplit split, int rank, int size);

// The whole tensor from every rank's shard, in rank order (no autograd).
Tensor join_shards(const std::vector<Tensor>& shards, TpSplit split);

// Collective over tp: every rank's shard all-gathered and joined (tests, export).
Tensor gather_shards(const Tensor& shard, TpSplit split, comm::Communicator& tp);

// Rank `rank`'s shard of randn(full, seed) (core/ops.h's counter-based draw), without drawing more
// than needed where the shard is a contiguous range of the whole (rows, each qkv section): the
// values equal take_shard(randn(full, seed), ...), so a tensor-parallel model starts from exactly
// the single-process initialisation.
Tensor randn_shard(const Shape& full, TpSplit split, int rank, int size, uint64_t seed, Device device);

}  // namespace zt::tp

// Vocabulary-parallel cross-entropy (Megatron): the loss over logits whose vocabulary dim is split
// across the tensor-parallel group, without ever gathering the [N, V] logits.
//
// Rank r holds columns [r*Vl, (r+1)*Vl) of the logits (Vl = the local width, the same on every rank).
// Per row: the max over the valid vocabulary is all-reduced (max); then the sum of exp(logit - max)
// and the target's logit (non-zero on the one rank that holds the target column) are all-reduced
// together (sum); lse = max + log(sum) and loss = lse - target logit, the same on every rank.
// Columns at or past valid_vocab (global index: vocabulary padding) take no part and get zero
// gradient; a rank whose columns are all padding contributes nothing. Rows whose target is
// ignore_index count for nothing. The result is the mean over counted rows, an f32 (f64 for f64
// logits) 0-d tensor equal on every rank.
//
// Backward writes the rank's shard of (softmax - onehot) * grad / count directly, from the saved
// logits and lse; no communication (the loss's gradient is the same on every rank). Its peak is the
// saved logits plus two f32 buffers their size (the estimator counts e + 8 bytes per local logit).
//
// Targets are read on the host (N integers), as core's cross_entropy does for its count.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "parallel/comm/communicator.h"

namespace zt::tp {

// logits [..., Vl] (floating), targets [...] (i32/i64, each ignore_index or in [0, valid_vocab)),
// valid_vocab in [1, Vl * tp.size()] (-1: every column).
Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, comm::Communicator& tp,
                                    int64_t ignore_index = -100, int64_t valid_vocab = -1);

// Note [Chunked vocabulary-parallel loss]: the tied head and this loss in one op, chunk_rows rows
// at a time, as linear_cross_entropy does in one process (Note [Chunked loss] in
// core/ops/linear_cross_entropy.cpp): for each chunk this rank's logits x_c W_r^T [rows, V/tp],
// the row statistics all-reduced as above (two small all-reduces per chunk), the chunk's loss terms
// and its logits' gradient (softmax - onehot over this rank's columns), then at once this rank's
// part of dx_c (f32) and its dW_r (f32, summed over chunks). Backward only scales them by
// (incoming gradient / target count). x is the head's input inside the tensor-parallel region (the
// caller's enter_tp_region sums the ranks' parts of dx in its backward); weight is this rank's
// [V/tp, C] rows of the vocabulary. Same arguments and result as vocab_parallel_cross_entropy on
// x weight^T. A chunk's transient memory: its logits and two f32 buffers of them. The targets are
// read on the host once for all chunks.
Tensor vocab_parallel_linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                                           int64_t chunk_rows, comm::Communicator& tp, int64_t ignore_index = -100,
                                           int64_t valid_vocab = -1);

}  // namespace zt::tp

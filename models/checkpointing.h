// Activation checkpointing for the GPT blocks: what backward keeps, and what it recomputes.
//
// Note [Checkpointing modes] (the estimator's Note [Activation memory] counts the same tensors):
//   none       every op keeps what its backward needs (about 17 e B T C bytes per block here).
//   full       blocks are grouped into segments of `every_k_blocks` consecutive blocks; each segment
//              runs under zt::checkpoint (Note [Checkpoint] in core/autograd.h), so forward keeps only
//              each segment's input, and backward re-runs one segment at a time with the tape on.
//   selective  Korthikanti et al. 2022: only the cheap, wide parts are recomputed. The attention core
//              (heads split, softmax(q k^T) v, heads merged) keeps its qkv input and nothing else, and
//              the MLP's gelu(linear) keeps its input, so the 4C-wide pre-GeLU tensor and the attention
//              output and log-sum-exp in head layout are dropped (about 12 e B T C per block).
// Recomputation is exact: the replay runs the same kernels on the same inputs and dropout draws
// from counter-based (seed, offset) pairs (StepRng::site_seed), so gradients are bit-identical to
// those of a run without checkpointing.
//
// ZeRO-3 (Note [ZeRO-3 gather and release]): a recomputed block acquires its unit again inside the
// replay; the engine keeps that gathered copy for the unit's backward instead of releasing it.
//
// How the model uses these (models/gpt.cpp, Gpt::block and Gpt::forward_loss):
//   attention:  a = attention_core(qkv, H, selective);           (replaces split/heads/sdpa/merge)
//   MLP:        m = gelu_linear(layernorm(x1, ...), p[kFcW], p[kFcB], selective);
//   blocks:     x = run_blocks(0, n_layer, x, [&](int l, const Tensor& h) { return block(src, l, h, rng, training); },
//                              policy, training);
#pragma once

#include <cstdint>
#include <functional>

#include "core/ops.h"
#include "models/gpt.h"

namespace zt {

enum class Recompute : uint8_t { none, full, selective };

struct CheckpointPolicy {
  Recompute mode = Recompute::none;
  int every_k_blocks = 1;  // full: blocks per checkpointed segment
  bool selective() const { return mode == Recompute::selective; }
  void validate() const;   // throws naming the field
};

// Multi-head causal self-attention core: qkv [B, T, 3C] (q, k, v concatenated on the last dim, as
// GPT-2's c_attn produces) -> [B, T, C] with the heads merged back. With recompute, backward
// re-runs it from qkv (Note [Checkpointing modes]).
Tensor attention_core(const Tensor& qkv, int64_t n_head, bool recompute);

// gelu(linear(x, weight, bias)). With recompute, only x (which the linear keeps anyway) and the
// GeLU output (which the next linear keeps) stay alive; the pre-GeLU tensor is recomputed.
Tensor gelu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool recompute);

// Runs `count` blocks from `first` on x: block(first, x), block(first + 1, ...), ... With
// mode == full and training, consecutive runs of every_k_blocks blocks are one checkpointed segment
// (the last one may be shorter). `block` is copied into each segment's node, so whatever it refers
// to (the parameter source) must outlive backward.
using BlockFn = std::function<Tensor(int layer, const Tensor& x)>;
Tensor run_blocks(int first, int count, const Tensor& x, const BlockFn& block, const CheckpointPolicy& policy,
                  bool training);

// Gpt::forward_loss with a policy. `block` defaults to Gpt::block; selective recomputation needs a
// block that calls attention_core and gelu_linear with recompute on (Gpt::block once it does).
Tensor forward_loss_checkpointed(Gpt& model, ParameterSource& src, const Tensor& ids, const Tensor& targets,
                                 const StepRng& rng, bool training, const CheckpointPolicy& policy,
                                 BlockFn block = {});

}  // namespace zt

// Activation checkpointing for the GPT blocks: what backward keeps, and what it recomputes.
//
// Note [Checkpointing modes] (the estimator's Note [Activation memory] counts the same tensors):
//   none       every op keeps what its backward needs (about 17 e B T C bytes per block here).
//   full       blocks are grouped into segments of `every_k_blocks` consecutive blocks; each segment
//              runs under zt::checkpoint (Note [Checkpoint] in core/autograd.h), so forward keeps only
//              each segment's input, and backward re-runs one segment at a time with the tape on.
//              With num_blocks = N > 0 only the first N blocks of a run (the model, or one pipeline
//              chunk: run_blocks' range) are segmented so, and the rest keep what `none` keeps:
//              Megatron-LM's "block" method (recompute_num_layers), between none and full in both
//              memory and recomputation. The first N and not the last: backward reaches the plain
//              blocks first and frees their tensors before it replays a segment, so the replay's
//              transient blocks do not come on top of them.
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
//   pipeline:   GptChunks::forward (launch/pipeline_step.cpp) calls run_blocks on each chunk's blocks.
#pragma once

#include <cstdint>
#include <functional>

#include "core/ops.h"
#include "models/checkpoint_policy.h"
#include "models/gpt.h"

namespace zt {

// Multi-head causal self-attention core: qkv [B, T, 3C] (q, k, v concatenated on the last dim, as
// GPT-2's c_attn produces) -> [B, T, C] with the heads merged back. With recompute, backward
// re-runs it from qkv (Note [Checkpointing modes]).
Tensor attention_core(const Tensor& qkv, int64_t n_head, bool recompute);

// gelu(linear(x, weight, bias)). With recompute, only x (which the linear keeps anyway) and the
// GeLU output (which the next linear keeps) stay alive; the pre-GeLU tensor is recomputed.
Tensor gelu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool recompute);

// Runs `count` blocks from `first` on x: block(first, x), block(first + 1, ...), ... With
// mode == full and training, the first policy.checkpointed_blocks(count) of them are cut into
// checkpointed segments of every_k_blocks consecutive blocks (the last one may be shorter); the rest
// run plainly. `block` is copied into each segment's node, so whatever it refers to (the parameter
// source) must outlive backward.
using BlockFn = std::function<Tensor(int layer, const Tensor& x)>;
Tensor run_blocks(int first, int count, const Tensor& x, const BlockFn& block, const CheckpointPolicy& policy,
                  bool training);

// Gpt::forward_loss with a policy. `block` defaults to Gpt::block; selective recomputation needs a
// block that calls attention_core and gelu_linear with recompute on (Gpt::block once it does).
Tensor forward_loss_checkpointed(Gpt& model, ParameterSource& src, const Tensor& ids, const Tensor& targets,
                                 const StepRng& rng, bool training, const CheckpointPolicy& policy,
                                 BlockFn block = {});

}  // namespace zt

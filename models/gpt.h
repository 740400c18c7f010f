// GPT-2 (Radford et al. 2019): pre-LayerNorm blocks, learned position embeddings, tanh GeLU, the
// token embedding tied to the output head. The vocabulary is padded to a multiple of 128 for fast
// matrix products; padded rows are never targets and are kept out of the softmax (valid_vocab).
//
// Parameters are grouped into units (Note [Units]): unit 0 holds the embeddings (wte, wpe), units
// 1..n_layer the blocks, unit n_layer+1 the final norm. Data parallel buckets, ZeRO shards and
// pipeline stages are all made of units. The model never owns how a unit's parameters reach the
// computation: a ParameterSource hands them over (cast to the compute dtype in one process,
// all-gathered under ZeRO-3, tensor-parallel shards under TP).
//
// Tensor parallelism (Megatron; Note [TP shards] in parallel/tensor_parallel/sharding.h): with a
// TpGroup of size tp, each rank holds its shard of every parameter, under the same Hugging Face
// name: attention heads and MLP features are split (c_attn, c_fc column-parallel; the two c_proj
// row-parallel, their biases replicated), wte by vocabulary rows (the tied head gives
// vocabulary-sharded logits to a vocabulary-parallel cross-entropy), layernorms and wpe replicated.
// With sequence_parallel the residual stream, layernorms and dropouts work on the rank's T/tp
// positions; the replicated parameters used there then get partial gradients, so each is passed
// through copy_to_tp (its gradient all-reduced across tp) before use. Initial values equal the
// single-process model's, cut to the shard, so a TP run trains the same model as one process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/checkpoint_policy.h"
#include "models/presets.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/sharding.h"

namespace zt {

struct GptConfig {
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 128;
  int64_t vocab_size = 256;    // the tokenizer's vocabulary
  int64_t padded_vocab = 256;  // vocab_size rounded up to a multiple of 128 (or 1 for tiny vocabularies)
  int64_t seq_len = 128;       // maximum context (rows of wpe)
  double dropout = 0.0;
  DType compute_dtype = DType::f32;  // f32, bf16 or f16; parameters stay f32 masters
  // > 0: the head and loss run this many rows at a time and the [N, Vp] logits never exist whole
  // (linear_cross_entropy, Note [Chunked loss]; without tensor parallelism only). 0: whole logits.
  int64_t loss_chunk_rows = 0;

  int64_t head_dim() const { return d_model / n_head; }
  void validate() const;  // throws naming the field: heads divide d_model, sizes positive, ...
  static GptConfig from_dims(const GptDims& dims, DType compute_dtype, double dropout = 0.0);
};

struct Parameter {
  std::string name;  // Hugging Face GPT-2 naming: wte.weight, h.3.attn.c_attn.weight, ...
  Tensor tensor;     // f32 master (leaf, requires grad); [out, in] for linear weights
  int unit = 0;      // Note [Units]
  bool decay = true;           // AdamW weight decay: matrices (and embeddings) yes, biases and norms no
  bool tp_replicated = false;  // the same on every tensor-parallel rank (norms, row-parallel biases)
  tp::TpSplit tp_split = tp::TpSplit::replicated;  // how the whole tensor is cut across tp ranks
};

// Note [Units]. Where a unit's compute parameters come from.
class ParameterSource {
 public:
  virtual ~ParameterSource() = default;
  // The unit's parameters, in the model's order for that unit, ready for compute (compute dtype,
  // on the compute device, differentiable back to whatever the source keeps).
  virtual std::vector<Tensor> acquire(int unit) = 0;
  // The forward of the unit is done with them (ZeRO-3 frees the gathered copy here).
  virtual void release(int unit) {}
  // The model passes each unit's output through here. ZeRO-3 attaches a node whose backward runs
  // before any of the unit's own backward nodes, and gathers the unit's parameters again there.
  virtual Tensor unit_output(int unit, const Tensor& out) { return out; }
};

// Dropout randomness for one forward: sites draw from (seed, a distinct offset range), so a
// recomputation (activation checkpointing) with the same StepRng replays the same masks.
struct StepRng {
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t micro_batch = 0;
  uint64_t site_seed(int64_t unit, int64_t site) const;
};

class Gpt {
 public:
  // Creates f32 parameters on `device`, initialised as GPT-2: N(0, 0.02), residual projections
  // N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm weights 1. Deterministic in `seed`, and each
  // parameter's values do not depend on which others exist. `owned_units` (empty: all) limits the
  // parameters to those units, as a pipeline stage holds only its own. `tp` (default: none) makes
  // this rank's parameters its tensor-parallel shards; every rank of the group must build the model
  // with the same config and seed. Throws "[gpt] ..." when heads or the padded vocabulary do not
  // divide by the tensor-parallel size.
  Gpt(GptConfig config, Device device, uint64_t seed, std::vector<bool> owned_units = {}, tp::TpGroup tp = {});

  const GptConfig& config() const { return config_; }
  std::vector<Parameter>& parameters() { return params_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  int num_units() const { return static_cast<int>(config_.n_layer) + 2; }
  std::vector<int> unit_parameter_indices(int unit) const;
  int64_t num_parameters() const;  // held by this rank (its shards under tensor parallelism)
  const tp::TpGroup& tensor_parallel() const { return tp_; }
  Parameter& find(const std::string& name);

  // The default source: the f32 masters cast to compute_dtype (differentiable).
  std::unique_ptr<ParameterSource> local_source();

  // Unit-level forward pieces (pipeline stages run a range of them). Under sequence parallelism the
  // [B,T,C] activations between them are the rank's [B,T/tp,C] (T must divide by tp).
  Tensor embed(ParameterSource& src, const Tensor& ids, const StepRng& rng, bool training);        // [B,T] -> [B,T,C]
  Tensor block(ParameterSource& src, int layer, const Tensor& x, const StepRng& rng, bool training); // [B,T,C]
  Tensor final_norm(ParameterSource& src, const Tensor& x);                                         // [B,T,C]
  Tensor logits(ParameterSource& src, const Tensor& x_normed);  // [B,T,Vp] (all-gathered under TP)
  // Mean cross-entropy of the next-token targets [B,T] (i32/i64; -100 ignored) over the true vocabulary.
  Tensor loss_from_hidden(ParameterSource& src, const Tensor& x_normed, const Tensor& targets);

  // Whole model, one process. A full `checkpointing` policy recomputes its blocks in backward (Note
  // [Checkpointing modes] in models/checkpointing.h); selective recomputation is the model's own
  // switch (set_selective_recompute), so a selective or none policy checkpoints no blocks.
  Tensor forward_logits(ParameterSource& src, const Tensor& ids);
  Tensor forward_loss(ParameterSource& src, const Tensor& ids, const Tensor& targets, const StepRng& rng,
                      bool training, const CheckpointPolicy& checkpointing = {});

  // Autoregressive sampling (top-k, temperature) for progress output; no gradients. Under ZeRO-3
  // every rank must call it (the source gathers parameters); the draws are the same on every rank.
  // Selective recomputation (Note [Checkpointing modes]): the attention core and the MLP's
  // gelu(linear) keep only their inputs and are re-run in backward.
  void set_selective_recompute(bool on) { selective_recompute_ = on; }

  std::vector<int32_t> generate(ParameterSource& src, const std::vector<int32_t>& prompt, int64_t new_tokens, double temperature,
                                int64_t top_k, uint64_t seed);

 private:
  void add_param(const std::string& name, const Shape& shape, int unit, bool decay, tp::TpSplit split);
  // src.acquire(unit); under sequence parallelism replicated parameters go through copy_to_tp.
  std::vector<Tensor> acquire(ParameterSource& src, int unit);
  Tensor local_logits(ParameterSource& src, const Tensor& x_normed);  // [B,T,Vp/tp]
  Tensor residual_dropout(const Tensor& x, uint64_t seed) const;
  // 0 .. n-1 as i64 on `device`, made once per length: building it on the host each forward was a
  // host-to-device copy, which waits for the device's stream to drain, at the start of every step.
  const Tensor& position_ids(int64_t n, Device device);
  GptConfig config_;
  tp::TpGroup tp_;
  Device device_;
  std::vector<Parameter> params_;
  std::vector<bool> owned_units_;
  bool selective_recompute_ = false;
  Tensor position_ids_;  // position_ids()'s cache
};

}  // namespace zt

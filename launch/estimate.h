// zerotrain's memory estimator: bytes per GPU (parameters, gradients, optimizer states, activations,
// buffers) and per host (offloaded states) for a model and a parallel layout, before anything runs.
// `zerotrain estimate` prints it; the trainer can compare it with the allocator's measured peaks.
//
// Note [ZeRO units]
// ZeRO shards model states unit by unit. The units of a GPT-2 are the embeddings (wte + wpe), each
// transformer block, the final layernorm, and, on the last pipeline stage when pp > 1, that stage's
// copy of the tied head (wte). Each unit is one flat buffer padded up to a multiple of dp elements so
// that every data-parallel rank owns an equal, contiguous shard of shard_elements(numel, dp) =
// ceil(numel / dp) elements; the padding is zeros that never receive a gradient. Sharded states are
// therefore counted with the padded size, and so are the full parameters of stages 1-2 and the full
// gradients of stage 1, which live in that padded flat buffer (the all-gather and reduce-scatter
// work on it); only stage 0, which does not shard, keeps the true size.
//
// Note [Model-state bytes] (ZeRO paper, mixed-precision Adam): 2 bytes of bf16/fp16 parameters,
// 2 bytes of gradients and K = 12 bytes of optimizer state (f32 master weights, Adam m and v), so 16
// bytes per parameter unsharded. In f32: 4 + 4 + 8 (m, v; the parameters are their own master copy).
// Stage 1 shards the optimizer state, stage 2 also the gradients, stage 3 also the parameters.
// offload_optimizer moves the optimizer shard to host memory together with an f32 gradient shard
// (4 bytes per parameter; under stages 2-3 the GPU then keeps no gradient shard), offload_params
// (stage 3) the parameter shard. In f32 the master is stored on its own (12 bytes of optimizer
// state) when exactly one of the two is offloaded. parallel/zero/offload.h has the engine's side.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "launch/config.h"
#include "models/presets.h"

namespace zt {

// Elements one data-parallel rank owns of a unit of unit_numel elements: ceil(unit_numel / dp).
int64_t shard_elements(int64_t unit_numel, int64_t dp);
// The unit's flat buffer size once padded to a multiple of dp: shard_elements(unit_numel, dp) * dp.
int64_t padded_unit_elements(int64_t unit_numel, int64_t dp);

struct BytesPerParameter {
  int64_t parameter = 0;
  int64_t gradient = 0;
  int64_t optimizer = 0;
};
BytesPerParameter bytes_per_parameter(Precision precision);

struct MemoryEstimateInput {
  // With dims: exact per-unit accounting and activations. Without: parameter_count is split evenly
  // over tp x pp as one unit per rank, and only model states are counted.
  std::optional<GptDims> dims;
  int64_t parameter_count = 0;

  int dp = 1, tp = 1, pp = 1;
  int virtual_stages = 1;
  std::vector<int> blocks_per_chunk;  // pp * virtual_stages entries in pipeline order; empty: even split
  int zero_stage = 0;
  bool offload_optimizer = false;
  double offload_optimizer_fraction = 1.0;  // Note [Partial optimizer offload] (parallel/zero/flat_layout.h)
  bool offload_params = false;
  Precision precision = Precision::bf16;

  int64_t micro_batch_size = 1;
  int64_t seq_len = 0;            // 0: dims->seq_len
  int64_t micro_batches = 1;      // per optimizer step (grad accumulation; the pipeline's micro-batches)
  PipelineScheduleKind pipeline_schedule = PipelineScheduleKind::one_f_one_b;
  ActivationCheckpointing checkpointing = ActivationCheckpointing::none;
  int checkpoint_every_k_blocks = 1;
  int checkpoint_num_blocks = 0;  // full: checkpoint the first N blocks of each chunk; 0: all
  bool sequence_parallel = false;
  bool dropout = false;           // dropout > 0: 1-byte masks are kept for backward
  bool fused_attention = true;    // attention keeps its log-sum-exp, not the T x T probabilities
  int64_t loss_chunk_rows = -1;   // Note [Chunked loss]: -1 chosen by resolved_loss_chunk_rows, 0 whole logits

  double bucket_mb = 25;          // gradient bucket (MiB)
  int ranks_per_node = 8;         // for host bytes per node
};

// Reads a resolved, validated config. ranks_per_node <= 0: min(8, dp * tp * pp).
MemoryEstimateInput estimate_input_from_config(const TrainConfig& cfg, int ranks_per_node = 0);

// Bytes on one GPU of one pipeline stage (all GPUs of a stage hold the same amounts).
struct StageMemory {
  int stage = 0;
  int64_t local_parameters = 0;  // elements of this rank's tp/pp slice, before ZeRO sharding
  int64_t parameters = 0;
  int64_t gradients = 0;
  int64_t optimizer_states = 0;
  int64_t activations = 0;
  int64_t buffers = 0;  // gradient buckets, gathered ZeRO-3 units, pipeline send/receive buffers
  int64_t host = 0;     // pinned host memory this rank uses for offloaded states

  int64_t model_states() const { return parameters + gradients + optimizer_states; }
  int64_t gpu_total() const { return model_states() + activations + buffers; }
};

struct MemoryEstimate {
  std::vector<StageMemory> stages;  // one per pipeline stage
  int worst_stage = 0;              // the stage with the largest gpu_total
  int ranks_per_node = 1;
  int64_t host_per_node = 0;        // at most: the largest per-rank host bytes x ranks_per_node
  bool activations_counted = true;  // false without model dims

  const StageMemory& worst() const { return stages.at(static_cast<size_t>(worst_stage)); }
};

MemoryEstimate estimate_memory(const MemoryEstimateInput& in);

// The rows per chunk of the head and loss (Note [Chunked loss]; with tp > 1 Note [Chunked
// vocabulary-parallel loss]), 0 for whole logits: the requested count where one is given; else,
// when activation checkpointing or an offload is on, the largest power of two whose chunk takes at
// most 512 MiB of transient memory (at least 256 rows), when what the chunked head keeps (f32 dx
// and this rank's dW, one chunk) is at most three quarters of a micro-batch's whole logits.
int64_t resolved_loss_chunk_rows(const MemoryEstimateInput& in);
// The bytes per row of a micro-batch's whole logits at the loss's peak (with their gradient).
int64_t whole_logits_bytes_per_row(const MemoryEstimateInput& in);
// The transient bytes per row of one loss chunk (its logits and what the pass makes of them).
int64_t loss_chunk_bytes_per_row(const MemoryEstimateInput& in);

// Activation bytes of one transformer block for one micro-batch with no checkpointing (Note
// [Activation memory] in estimate.cpp), on one tensor-parallel rank.
int64_t block_activation_bytes(const MemoryEstimateInput& in, const GptDims& dims);

// "1.50 GiB", "237.4 MiB", "12.0 KiB", "17 B".
std::string format_bytes(int64_t bytes);
// A table for `zerotrain estimate` and run logs.
std::string format_memory_estimate(const MemoryEstimate& estimate, const MemoryEstimateInput& in);

// The smallest parallel.offload_optimizer_fraction, in steps of 0.01, whose worst stage needs at most
// gpu_bytes per GPU (Note [Partial optimizer offload]: fewer units offloaded keeps more host memory
// free and more of AdamW on the GPU); nullopt when even offloading all of it does not fit. `in`'s
// own offload settings are ignored: offload_optimizer is taken as on.
std::optional<double> smallest_offload_fraction(MemoryEstimateInput in, int64_t gpu_bytes);

// The parallel.checkpoint_num_blocks that recomputes the fewest blocks (of each model chunk, in
// segments of checkpoint_every_k_blocks) with full activation checkpointing and lets the worst stage
// need at most gpu_bytes per GPU, with `in`'s other settings (and the chunked loss that checkpointing
// turns on by default); 0 when it takes all blocks. nullopt without model dims or when even all
// blocks do not fit. `in`'s own checkpointing settings are ignored.
std::optional<int> fewest_checkpointed_blocks(MemoryEstimateInput in, int64_t gpu_bytes);

}  // namespace zt

// The memory estimator (launch/estimate.h). Model states follow Note [Model-state bytes] and
// Note [ZeRO units]; activations follow Note [Activation memory] below.
#include "launch/estimate.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/zero/flat_layout.h"

namespace zt {

int64_t shard_elements(int64_t unit_numel, int64_t dp) {
  ZT_CHECK(unit_numel >= 0, "estimate", "unit size must be >= 0, got ", unit_numel);
  ZT_CHECK(dp >= 1, "estimate", "dp must be >= 1, got ", dp);
  return (unit_numel + dp - 1) / dp;
}

int64_t padded_unit_elements(int64_t unit_numel, int64_t dp) { return shard_elements(unit_numel, dp) * dp; }

BytesPerParameter bytes_per_parameter(Precision precision) {
  if (precision == Precision::f32) return {4, 4, 8};
  return {2, 2, 12};
}

MemoryEstimateInput estimate_input_from_config(const TrainConfig& cfg, int ranks_per_node) {
  const auto& p = cfg.parallel();
  MemoryEstimateInput in;
  in.dims = model_dims(cfg);
  in.dp = p.dp();
  in.tp = p.tp();
  in.pp = p.pp();
  in.virtual_stages = p.virtual_stages();
  in.blocks_per_chunk = blocks_per_chunk(cfg);
  in.zero_stage = p.zero_stage();
  in.offload_optimizer = p.offload_optimizer();
  in.offload_optimizer_fraction = p.offload_optimizer_fraction();
  in.offload_params = p.offload_params();
  in.precision = precision(cfg);
  in.micro_batch_size = cfg.train().micro_batch_size();
  in.seq_len = cfg.model().seq_len();
  in.micro_batches = cfg.train().grad_accumulation();
  in.pipeline_schedule = pipeline_schedule(cfg);
  in.checkpointing = activation_checkpointing(cfg);
  in.checkpoint_every_k_blocks = p.checkpoint_every_k_blocks();
  in.checkpoint_num_blocks = p.checkpoint_num_blocks();
  in.loss_chunk_rows = p.loss_chunk_rows();
  in.sequence_parallel = p.sequence_parallel();
  in.dropout = cfg.model().dropout() > 0;
  in.bucket_mb = p.bucket_mb();
  in.ranks_per_node = ranks_per_node > 0 ? ranks_per_node : std::min(8, p.dp() * p.tp() * p.pp());
  return in;
}

namespace {

int64_t activation_element_bytes(Precision p) { return p == Precision::f32 ? 4 : 2; }

int64_t local_seq_len(const MemoryEstimateInput& in, const GptDims& d) {
  const int64_t T = in.seq_len > 0 ? in.seq_len : d.seq_len;
  return in.sequence_parallel ? T / in.tp : T;
}

}  // namespace

// Note [Activation memory]
// What backward keeps, per transformer block and micro-batch, with B = micro-batch, T = sequence,
// C = d_model, H = heads, t = tp, e = bytes of the compute dtype (2, or 4 in f32). This is the
// tensor-by-tensor account of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
// Transformer Models") for GPT-2 with a fused (flash-style) attention that keeps its output and
// log-sum-exp instead of the T x T probabilities:
//   kept whole on every tp rank:  ln1 input, qkv input (ln1 output), ln2 input, fc input   4 e BTC
//                                 mean and rstd of both layernorms (f32)                  16 BT
//                                 dropout masks after attention and MLP (1 byte)          2 BTC if dropout
//   split across tp:              q, k, v 3 e BTC; attention output (proj input) e BTC;
//                                 GeLU input and GeLU output 8 e BTC                      12 e BTC / t
//                                 attention log-sum-exp (f32)                             4 B H T / t
//                                 (unfused attention instead: probabilities               e B H T^2 / t)
// Sequence parallel also divides the "whole" tensors by t (each rank keeps T/t positions).
// Selective recomputation re-runs the GeLU (keeping one of its two 4C-wide tensors) and, for
// unfused attention, the softmax, so it keeps 12 e BTC + ... - 4 e BTC / t and no T^2 term.
// Full recomputation keeps each segment's input (e BTC, a segment being checkpoint_every_k_blocks
// blocks) and, while backward re-runs one segment, that segment's blocks in full. With
// checkpoint_num_blocks = N > 0 only the first N blocks of each model chunk (of the model when
// pp = 1) are segmented so; the chunk's P other blocks keep the per-block bytes above, as without
// checkpointing. Backward frees those (the chunk's last) before it re-runs a segment, so the re-run
// adds max(0, min(k, N) - P) blocks to what the chunk pass keeps (Note [Checkpointing modes] in
// models/checkpointing.h).
// Outside the blocks: token ids (int32) and the embedding dropout mask on the first stage; on the
// last, the final layernorm's input, output and statistics, the logits in e bytes (their gradient
// overwrites them, except under vocab parallelism where it is a second e bytes; the fused
// cross-entropy keeps only the log-sum-exp besides; all / t), the tied head's weight gradient
// (e V C / t, made while the logits' gradient is alive: the peak of the loss's backward), and the
// targets.
// Micro-batches in flight on pipeline stage s of p with m micro-batches: 1 without pipelining,
// m for GPipe, min(m, p - s) for 1F1B; interleaved 1F1B with v chunks keeps min(m v, p v + p - 2s - 1)
// chunk passes (Megatron's warm-up depth plus one).
// Not counted: the CUDA context and library workspaces, allocator fragmentation, transient gradient
// tensors of the block being differentiated.
int64_t resolved_loss_chunk_rows(const MemoryEstimateInput& in) {
  if (in.loss_chunk_rows == 0 || !in.dims) return 0;
  if (in.loss_chunk_rows > 0) return in.loss_chunk_rows;
  // Chosen only for runs that already trade speed for memory: the chunked head costs 1-3% of a step
  // (GPT-2 124M, B=16 on an H200; docs/performance.md).
  if (in.checkpointing == ActivationCheckpointing::none && !in.offload_optimizer && !in.offload_params) return 0;
  const GptDims& d = *in.dims;
  const int64_t V = d.padded_vocab / in.tp, C = d.d_model;
  const int64_t N = in.micro_batch_size * (in.seq_len > 0 ? in.seq_len : d.seq_len);
  // 512 MiB of a chunk's transient logits: at GPT-2 124M (B=16) chunks of 4096 rows cost 1% of a
  // step, of 2048 rows 3.4% (the f32 dW is read and written once per chunk), for 0.19 GiB more
  // (docs/performance.md).
  const int64_t per_row = loss_chunk_bytes_per_row(in);
  int64_t rows = 256;
  while (rows * 2 * per_row <= (int64_t{512} << 20)) rows *= 2;
  if (rows >= N) return 0;  // one chunk: its logits are the whole logits
  const int64_t chunked = 4 * N * C + 4 * V * C + rows * per_row, whole = N * whole_logits_bytes_per_row(in);
  return 4 * chunked < 3 * whole ? rows : 0;  // worth a chunked head when it saves a quarter of the logits
}

int64_t whole_logits_bytes_per_row(const MemoryEstimateInput& in) {
  if (!in.dims) return 0;
  const int64_t e = activation_element_bytes(in.precision), V = in.dims->padded_vocab / in.tp;
  // One process: the logits, their gradient written over them (Note [Logits in place] in
  // core/ops/cross_entropy.cpp), no f32 softmax kept. Vocabulary parallel: the saved logits and, in
  // the loss's backward, two f32 buffers their size (tp::vocab_parallel_cross_entropy; measured on
  // CPU ranks in tests/dist/test_tensor_parallel.cpp).
  return in.tp == 1 ? e * V : (e + 8) * V;
}

int64_t loss_chunk_bytes_per_row(const MemoryEstimateInput& in) {
  if (!in.dims) return 0;
  const int64_t e = activation_element_bytes(in.precision), V = in.dims->padded_vocab / in.tp;
  // One process: the fused loss-and-gradient pass works over the chunk's logits in place. Vocabulary
  // parallel: the logits and two f32 buffers of them (Note [Chunked vocabulary-parallel loss]).
  return (in.tp == 1 ? e : e + 8) * V;
}

int64_t block_activation_bytes(const MemoryEstimateInput& in, const GptDims& d) {
  const int64_t e = activation_element_bytes(in.precision);
  const int64_t B = in.micro_batch_size, C = d.d_model, t = in.tp, heads_local = d.n_head / in.tp;
  const int64_t T = in.seq_len > 0 ? in.seq_len : d.seq_len;
  const int64_t T_whole = local_seq_len(in, d);  // positions of the "whole" tensors this rank keeps
  int64_t whole = 4 * e * B * T_whole * C + 16 * B * T_whole;
  if (in.dropout) whole += 2 * B * T_whole * C;
  int64_t split = 12 * e * B * T * C / t;
  const bool selective = in.checkpointing == ActivationCheckpointing::selective;
  if (selective) split -= 4 * e * B * T * C / t;
  if (in.fused_attention) split += 4 * B * heads_local * T;
  else if (!selective) split += e * B * heads_local * T * T;
  return whole + split;
}

namespace {

void check_input(const MemoryEstimateInput& in) {
  ZT_CHECK(in.dp >= 1 && in.tp >= 1 && in.pp >= 1 && in.virtual_stages >= 1, "estimate",
           "dp, tp, pp and virtual_stages must be >= 1, got dp ", in.dp, ", tp ", in.tp, ", pp ", in.pp,
           ", virtual_stages ", in.virtual_stages);
  ZT_CHECK(in.zero_stage >= 0 && in.zero_stage <= 3, "estimate", "zero_stage must be 0..3, got ", in.zero_stage);
  ZT_CHECK(in.micro_batch_size >= 1 && in.micro_batches >= 1, "estimate",
           "micro_batch_size and micro_batches must be >= 1, got ", in.micro_batch_size, " and ", in.micro_batches);
  ZT_CHECK(in.checkpoint_every_k_blocks >= 1, "estimate", "checkpoint_every_k_blocks must be >= 1, got ",
           in.checkpoint_every_k_blocks);
  ZT_CHECK(in.checkpoint_num_blocks >= 0, "estimate", "checkpoint_num_blocks must be >= 0 (0: all blocks), got ",
           in.checkpoint_num_blocks);
  ZT_CHECK(in.bucket_mb > 0, "estimate", "bucket_mb must be > 0, got ", in.bucket_mb);
  ZT_CHECK(in.dims || in.parameter_count > 0, "estimate", "give model dims or a parameter count > 0");
  if (in.dims) {
    const GptDims& d = *in.dims;
    ZT_CHECK(d.n_layer >= 1 && d.n_head >= 1 && d.d_model >= 1 && d.vocab_size >= 1 && d.seq_len >= 1 &&
                 d.d_model % d.n_head == 0 && d.padded_vocab == pad_vocab(d.vocab_size),
             "estimate", "inconsistent model dims: n_layer ", d.n_layer, ", n_head ", d.n_head, ", d_model ",
             d.d_model, ", vocab ", d.vocab_size, " (padded ", d.padded_vocab, "), seq_len ", d.seq_len);
    const int64_t T = in.seq_len > 0 ? in.seq_len : d.seq_len;
    ZT_CHECK(!in.sequence_parallel || T % in.tp == 0, "estimate", "sequence parallel needs seq_len (", T,
             ") divisible by tp (", in.tp, ")");
  }
}

std::vector<int> chunk_sizes(const MemoryEstimateInput& in) {
  const int chunks = in.pp * in.virtual_stages;
  if (!in.blocks_per_chunk.empty()) {
    ZT_CHECK(static_cast<int>(in.blocks_per_chunk.size()) == chunks, "estimate", "blocks_per_chunk has ",
             in.blocks_per_chunk.size(), " entries, expected pp x virtual_stages = ", chunks);
    int64_t sum = 0;
    for (int b : in.blocks_per_chunk) sum += b;
    ZT_CHECK(!in.dims || sum == in.dims->n_layer, "estimate", "blocks_per_chunk sums to ", sum, ", not n_layer ",
             in.dims->n_layer);
    return in.blocks_per_chunk;
  }
  if (!in.dims) return std::vector<int>(static_cast<size_t>(chunks), 0);
  ZT_CHECK(in.dims->n_layer % chunks == 0, "estimate", "n_layer (", in.dims->n_layer,
           ") is not divisible by pp x virtual_stages = ", chunks, "; give blocks_per_chunk");
  return std::vector<int>(static_cast<size_t>(chunks), static_cast<int>(in.dims->n_layer / chunks));
}

// Micro-batches (or, interleaved, chunk passes) whose activations stage s holds at its peak.
int64_t in_flight(const MemoryEstimateInput& in, int s) {
  const int64_t m = in.micro_batches, p = in.pp, v = in.virtual_stages;
  if (p == 1) return 1;
  switch (in.pipeline_schedule) {
    case PipelineScheduleKind::gpipe: return m;
    case PipelineScheduleKind::one_f_one_b: return std::min(m, p - s);
    case PipelineScheduleKind::interleaved: return std::min(m * v, p * v + p - 2 * s - 1);
  }
  return m;
}

int64_t stage_activation_bytes(const MemoryEstimateInput& in, const GptDims& d, int s, const std::vector<int>& blocks) {
  const int64_t e = activation_element_bytes(in.precision);
  const int64_t B = in.micro_batch_size, C = d.d_model, T = in.seq_len > 0 ? in.seq_len : d.seq_len;
  const int64_t T_whole = local_seq_len(in, d);
  const int64_t per_block = block_activation_bytes(in, d);
  const int64_t block_input = e * B * T_whole * C;
  const bool interleaved = in.pipeline_schedule == PipelineScheduleKind::interleaved && in.pp > 1;
  const int64_t held = in_flight(in, s);
  const int64_t k = in.checkpoint_every_k_blocks;
  const CheckpointPolicy policy{in.checkpointing == ActivationCheckpointing::full ? Recompute::full : Recompute::none,
                                in.checkpoint_every_k_blocks, in.checkpoint_num_blocks};

  // Per pass through a chunk of b blocks: what forward leaves for backward (segment inputs of the
  // checkpointed blocks, everything of the plain ones), and what re-running a segment adds to that
  // once the plain blocks are freed. Interleaved, `held` counts chunk passes of the largest chunk.
  int64_t kept_sum = 0, kept_max = 0, rerun_max = 0;
  for (int b : blocks) {
    const int64_t checkpointed = policy.checkpointed_blocks(b);
    const int64_t plain = b - checkpointed;
    const int64_t kept = (checkpointed + k - 1) / k * block_input + plain * per_block;
    kept_sum += kept;
    kept_max = std::max(kept_max, kept);
    rerun_max = std::max(rerun_max, std::max<int64_t>(0, std::min(k, checkpointed) - plain) * per_block);
  }
  int64_t bytes = held * (interleaved ? kept_max : kept_sum) + rerun_max;

  // Embedding and head activations live once per micro-batch, on the first and last stage.
  const int64_t io_held = in.pp == 1 ? 1
                                : in.pipeline_schedule == PipelineScheduleKind::gpipe
                                    ? in.micro_batches
                                    : std::min<int64_t>(in.micro_batches, in.pp - s);
  if (s == 0) {
    int64_t embed = 4 * B * T;  // token ids
    if (in.dropout) embed += B * T_whole * C;
    bytes += io_held * embed;
  }
  const int64_t chunk_rows = resolved_loss_chunk_rows(in);
  const int64_t final_norm = e * B * T_whole * C + 8 * B * T_whole;  // its input and statistics
  if (s == in.pp - 1 && chunk_rows > 0) {
    // Note [Chunked loss]: the f32 dx and dW made in the forward, not the logits nor the head's
    // input; once, one chunk's logits (forward) or the rounded dW beside the f32 one (backward).
    const int64_t head = final_norm + 4 * B * T * C + 4 * d.padded_vocab / in.tp * C + 4 * B * T;
    bytes += io_held * head + std::max(chunk_rows * loss_chunk_bytes_per_row(in), e * d.padded_vocab / in.tp * C);
  } else if (s == in.pp - 1) {
    const int64_t head = final_norm
                         + e * B * T * C                              // head input, gathered over sequence parallel
                         + B * T * whole_logits_bytes_per_row(in)     // the logits and their gradient
                         + 4 * B * T;                                 // targets
    // Once, however many micro-batches are held: the tied head's weight gradient, made while one
    // micro-batch's logits gradient is alive (the peak of the loss's backward).
    const int64_t head_weight_grad = e * d.padded_vocab * C / in.tp;
    bytes += io_held * head + head_weight_grad;
  }
  return bytes;
}

}  // namespace

MemoryEstimate estimate_memory(const MemoryEstimateInput& in) {
  check_input(in);
  const std::vector<int> chunks = chunk_sizes(in);
  const BytesPerParameter K = bytes_per_parameter(in.precision);
  const int64_t bucket_bytes = static_cast<int64_t>(std::llround(in.bucket_mb * 1024.0 * 1024.0));

  MemoryEstimate out;
  out.activations_counted = in.dims.has_value();
  out.ranks_per_node = std::max(1, in.ranks_per_node);
  for (int s = 0; s < in.pp; ++s) {
    // The ZeRO units of this stage (Note [ZeRO units]) and its blocks per chunk.
    std::vector<int64_t> units;
    std::vector<int> stage_blocks;
    for (size_t c = static_cast<size_t>(s); c < chunks.size(); c += static_cast<size_t>(in.pp))
      stage_blocks.push_back(chunks[c]);
    if (in.dims) {
      const GptUnitNumel u = gpt2_unit_numel(*in.dims, in.tp);
      if (s == 0) units.push_back(u.embeddings);
      for (int b : stage_blocks) units.insert(units.end(), static_cast<size_t>(b), u.block);
      if (s == in.pp - 1) units.push_back(u.final_norm);
      // The tied head's copy of wte: unit 0 of the last stage, so first in unit order.
      if (s == in.pp - 1 && in.pp > 1) units.insert(units.begin(), u.wte);
    } else {
      const int64_t ways = int64_t{in.tp} * in.pp;
      units.push_back((in.parameter_count + ways - 1) / ways);
    }

    int64_t whole = 0, sharded = 0, largest = 0;
    for (int64_t n : units) whole += n, sharded += shard_elements(n, in.dp), largest = std::max(largest, n);
    // Stages 1-2 keep full parameters (and stage 1 full gradients) in the padded flat buffer that
    // the all-gather (reduce-scatter) works on; stage 0 does not shard, so it needs no padding.
    const int64_t flat = in.zero_stage == 0 ? whole : sharded * in.dp;

    StageMemory m;
    m.stage = s;
    m.local_parameters = whole;
    m.parameters = (in.zero_stage >= 3 ? sharded : flat) * K.parameter;
    m.gradients = (in.zero_stage >= 2 ? sharded : flat) * K.gradient;
    // Note [Optimizer offload] (parallel/zero/offload.h): an offloaded unit's optimizer shard and an
    // f32 gradient shard live on the host; under stages 2-3 the GPU keeps no gradient shard of its
    // own for it. Which units are offloaded: Note [Partial optimizer offload]; without model dims
    // (one unit standing for the whole model) the fraction is taken as it is.
    const std::vector<bool> offloaded = in.offload_optimizer
                                            ? zero::offloaded_units(units, in.offload_optimizer_fraction)
                                            : std::vector<bool>(units.size(), false);
    for (size_t i = 0; i < units.size(); ++i) {
      const int64_t optimized = in.zero_stage >= 1 ? shard_elements(units[i], in.dp) : units[i];  // this rank steps
      const int64_t on_host = !in.offload_optimizer ? 0
                              : in.dims             ? (offloaded[i] ? optimized : 0)
                                                    : std::llround(in.offload_optimizer_fraction * static_cast<double>(optimized));
      const int64_t on_device = optimized - on_host;
      // The f32 master doubles as the compute parameter only when both live in the same memory
      // (Note [Model-state bytes]); otherwise it is stored on its own, as for 16-bit compute.
      auto optimizer_bytes = [&](bool host) {
        return K.optimizer + (in.precision == Precision::f32 && host != in.offload_params ? 4 : 0);
      };
      m.host += on_host * (optimizer_bytes(true) + 4);
      m.optimizer_states += on_device * optimizer_bytes(false);
      if (in.zero_stage >= 2) m.gradients -= on_host * K.gradient;
    }
    if (in.offload_params) m.host += m.parameters, m.parameters = 0;

    if (in.dp > 1 && in.zero_stage <= 2) m.buffers += 2 * bucket_bytes;  // one bucket filling, one reducing
    if (in.dp > 1 && in.zero_stage == 3)
      // Two gathered units (the one computing, the one prefetched) and one unit's full gradient
      // before its reduce-scatter.
      m.buffers += 2 * largest * K.parameter + largest * K.gradient;
    if (in.dims) {
      m.activations = stage_activation_bytes(in, *in.dims, s, stage_blocks);
      if (in.pp > 1)  // a send and a receive buffer of one micro-batch's hidden states
        m.buffers += 2 * activation_element_bytes(in.precision) * in.micro_batch_size * local_seq_len(in, *in.dims) *
                     in.dims->d_model;
    }
    out.stages.push_back(m);
  }
  int64_t max_host = 0;
  for (const StageMemory& m : out.stages) {
    if (m.gpu_total() > out.worst().gpu_total()) out.worst_stage = m.stage;
    max_host = std::max(max_host, m.host);
  }
  out.host_per_node = max_host * out.ranks_per_node;
  return out;
}

std::optional<double> smallest_offload_fraction(MemoryEstimateInput in, int64_t gpu_bytes) {
  in.offload_optimizer = true;
  // The GPU total falls as the fraction grows (each step offloads more units, or the same ones),
  // so the first fraction that fits is the smallest.
  for (int percent = 1; percent <= 100; ++percent) {
    in.offload_optimizer_fraction = percent / 100.0;
    if (estimate_memory(in).worst().gpu_total() <= gpu_bytes) return in.offload_optimizer_fraction;
  }
  return std::nullopt;
}

std::optional<int> fewest_checkpointed_blocks(MemoryEstimateInput in, int64_t gpu_bytes) {
  if (!in.dims) return std::nullopt;
  const std::vector<int> chunks = chunk_sizes(in);
  const int largest = *std::max_element(chunks.begin(), chunks.end());
  in.checkpointing = ActivationCheckpointing::full;
  // Upward from one block: the first count that fits is the fewest (checkpointing all blocks is not
  // always the least: the last block left plain is freed before any re-run, Note [Activation memory]).
  for (int n = 1; n <= largest; ++n) {
    in.checkpoint_num_blocks = n == largest ? 0 : n;
    if (estimate_memory(in).worst().gpu_total() <= gpu_bytes) return in.checkpoint_num_blocks;
  }
  return std::nullopt;
}

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) return fmt::format("{:.2f} GiB", b / (1 << 30));
  if (bytes >= (int64_t{1} << 20)) return fmt::format("{:.1f} MiB", b / (1 << 20));
  if (bytes >= (int64_t{1} << 10)) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{} B", bytes);
}

namespace {
std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}
}  // namespace

std::string format_memory_estimate(const MemoryEstimate& e, const MemoryEstimateInput& in) {
  std::string out;
  if (in.dims) {
    const GptDims& d = *in.dims;
    out += fmt::format("model: n_layer {}, n_head {}, d_model {}, vocab {} (padded {}), seq_len {}: {} parameters\n",
                       d.n_layer, d.n_head, d.d_model, d.vocab_size, d.padded_vocab, d.seq_len,
                       with_thousands(gpt2_parameter_count(d)));
  } else {
    out += fmt::format("model: {} parameters (activations not estimated without model dims)\n",
                      with_thousands(in.parameter_count));
  }
  const int world = in.dp * in.tp * in.pp;
  std::string checkpointing = activation_checkpointing_name(in.checkpointing);
  if (in.checkpointing == ActivationCheckpointing::full) {  // its settings, where not the defaults
    const int n = in.checkpoint_num_blocks, k = in.checkpoint_every_k_blocks;
    if (n > 0) checkpointing += fmt::format(" of the first {} blocks{}", n, in.pp > 1 ? " of each chunk" : "");
    if (k > 1) checkpointing += fmt::format(", {} blocks per segment", k);
  }
  const int64_t chunk_rows = resolved_loss_chunk_rows(in);
  out += fmt::format("layout: dp {} x tp {} x pp {} = {} rank{}, ZeRO stage {}{}{}, {}, micro-batch {}, {} per step, "
                     "activation checkpointing {}{}{}\n",
                     in.dp, in.tp, in.pp, world, world == 1 ? "" : "s", in.zero_stage,
                     !in.offload_optimizer                   ? ""
                     : in.offload_optimizer_fraction >= 1.0 ? ", optimizer offloaded"
                                                            : fmt::format(", optimizer offloaded ({:g} of it)",
                                                                          in.offload_optimizer_fraction),
                     in.offload_params ? ", params offloaded" : "",
                     precision_name(in.precision), in.micro_batch_size,
                     in.micro_batches == 1 ? std::string("1 micro-batch") : fmt::format("{} micro-batches", in.micro_batches),
                     checkpointing,
                     in.pp > 1 ? fmt::format(", schedule {}", pipeline_schedule_name(in.pipeline_schedule)) : "",
                     chunk_rows > 0 ? fmt::format(", loss in chunks of {} rows", chunk_rows) : "");

  // One column per pipeline stage; with many stages the first, the worst and the last.
  std::vector<int> shown;
  if (e.stages.size() <= 8) {
    for (const StageMemory& m : e.stages) shown.push_back(m.stage);
  } else {
    shown = {0, e.worst_stage, static_cast<int>(e.stages.size()) - 1};
    shown.erase(std::unique(shown.begin(), shown.end()), shown.end());
  }
  out += fmt::format("{:<22}", "per GPU");
  for (int s : shown) out += fmt::format("{:>14}", e.stages.size() == 1 ? "" : fmt::format("stage {}", s));
  out += "\n";
  const auto row = [&](const char* name, auto get) {
    out += fmt::format("{:<22}", name);
    for (int s : shown) out += fmt::format("{:>14}", format_bytes(get(e.stages[static_cast<size_t>(s)])));
    out += "\n";
  };
  row("  parameters", [](const StageMemory& m) { return m.parameters; });
  row("  gradients", [](const StageMemory& m) { return m.gradients; });
  row("  optimizer states", [](const StageMemory& m) { return m.optimizer_states; });
  row("  activations", [](const StageMemory& m) { return m.activations; });
  row("  buffers", [](const StageMemory& m) { return m.buffers; });
  row("  total", [](const StageMemory& m) { return m.gpu_total(); });
  row("host per rank", [](const StageMemory& m) { return m.host; });
  out += fmt::format("host per node (at most, {} rank{}): {}\n", e.ranks_per_node, e.ranks_per_node == 1 ? "" : "s",
                     format_bytes(e.host_per_node));
  if (e.stages.size() > 1) out += fmt::format("largest GPU total: stage {}, {}\n", e.worst_stage, format_bytes(e.worst().gpu_total()));
  return out;
}

}  // namespace zt

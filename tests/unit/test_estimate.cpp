// launch/estimate: ZeRO model-state bytes per stage against hand formulas (with and without
// padding), activations against a tensor-by-tensor list and the Korthikanti et al. formula, layouts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "launch/config.h"
#include "launch/estimate.h"
#include "parallel/zero/flat_layout.h"
#include "unit/gradcheck.h"

namespace zt {
namespace {

const GptDims k124M = make_gpt_dims(12, 12, 768, 50257, 1024);
constexpr int64_t kParams124M = 124'475'904;
// GPT-2 124M units, by hand: embeddings 50304*768 + 1024*768 = 39,419,904; block 7,087,872; ln_f 1,536.
constexpr int64_t kEmbeddings = 39'419'904, kBlock = 7'087'872, kFinalNorm = 1'536;

MemoryEstimateInput gpt2_124m(int dp, int zero_stage, Precision precision = Precision::bf16) {
  MemoryEstimateInput in;
  in.dims = k124M;
  in.dp = dp;
  in.zero_stage = zero_stage;
  in.precision = precision;
  in.micro_batch_size = 4;
  return in;
}

TEST(Estimate, ShardElementsRoundsUp) {
  EXPECT_EQ(shard_elements(12, 4), 3);
  EXPECT_EQ(shard_elements(10, 4), 3);
  EXPECT_EQ(shard_elements(13, 4), 4);
  EXPECT_EQ(shard_elements(1, 8), 1);
  EXPECT_EQ(shard_elements(0, 8), 0);
  EXPECT_EQ(shard_elements(7, 1), 7);
  EXPECT_EQ(padded_unit_elements(10, 4), 12);
  EXPECT_EQ(padded_unit_elements(12, 4), 12);
  // Naive reference: the smallest s with s * dp >= n, over a range of sizes.
  for (int64_t dp = 1; dp <= 9; ++dp)
    for (int64_t n = 0; n <= 50; ++n) {
      int64_t s = 0;
      while (s * dp < n) ++s;
      EXPECT_EQ(shard_elements(n, dp), s) << n << " / " << dp;
    }
  try {
    shard_elements(10, 0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[estimate] dp must be >= 1, got 0");
  }
}

TEST(Estimate, ModelStatesPerZeroStageNoPadding) {
  // dp = 4 divides every 124M unit (39,419,904 / 4, 7,087,872 / 4, 1,536 / 4), so the shard is Psi / 4.
  ASSERT_EQ(kEmbeddings + 12 * kBlock + kFinalNorm, kParams124M);
  const int64_t psi = kParams124M, shard = kParams124M / 4;
  ASSERT_EQ(shard * 4, psi);
  struct Expected { int64_t params, grads, optim; };
  const Expected bf16[4] = {{2 * psi, 2 * psi, 12 * psi}, {2 * psi, 2 * psi, 12 * shard},
                            {2 * psi, 2 * shard, 12 * shard}, {2 * shard, 2 * shard, 12 * shard}};
  const Expected f32[4] = {{4 * psi, 4 * psi, 8 * psi}, {4 * psi, 4 * psi, 8 * shard},
                           {4 * psi, 4 * shard, 8 * shard}, {4 * shard, 4 * shard, 8 * shard}};
  for (int stage = 0; stage <= 3; ++stage) {
    SCOPED_TRACE(stage);
    const StageMemory b = estimate_memory(gpt2_124m(4, stage)).worst();
    EXPECT_EQ(b.local_parameters, psi);
    EXPECT_EQ(b.parameters, bf16[stage].params);
    EXPECT_EQ(b.gradients, bf16[stage].grads);
    EXPECT_EQ(b.optimizer_states, bf16[stage].optim);
    EXPECT_EQ(b.host, 0);
    const StageMemory f = estimate_memory(gpt2_124m(4, stage, Precision::f32)).worst();
    EXPECT_EQ(f.parameters, f32[stage].params);
    EXPECT_EQ(f.gradients, f32[stage].grads);
    EXPECT_EQ(f.optimizer_states, f32[stage].optim);
  }
  // Unsharded mixed precision is 16 bytes per parameter (ZeRO paper).
  EXPECT_EQ(estimate_memory(gpt2_124m(1, 0)).worst().model_states(), 16 * psi);
  // fp16 is the same as bf16.
  EXPECT_EQ(estimate_memory(gpt2_124m(4, 2, Precision::fp16)).worst().model_states(),
            estimate_memory(gpt2_124m(4, 2)).worst().model_states());
}

TEST(Estimate, ShardsArePaddedPerUnit) {
  // dp = 7 divides no unit: 39,419,904 = 7 * 5,631,414 + 6 -> 5,631,415;  7,087,872 = 7 * 1,012,553 + 1
  // -> 1,012,554;  1,536 = 7 * 219 + 3 -> 220. Shard = 5,631,415 + 12 * 1,012,554 + 220 = 17,782,283,
  // 11 elements more than Psi / 7 rounded up (17,782,272).
  const int64_t shard = 17'782'283;
  for (int stage = 1; stage <= 3; ++stage) {
    SCOPED_TRACE(stage);
    const StageMemory m = estimate_memory(gpt2_124m(7, stage)).worst();
    EXPECT_EQ(m.optimizer_states, 12 * shard);
    // Full states of stages 1-2 live in the padded flat buffer (7 x shard elements).
    EXPECT_EQ(m.gradients, stage >= 2 ? 2 * shard : 2 * 7 * shard);
    EXPECT_EQ(m.parameters, stage >= 3 ? 2 * shard : 2 * 7 * shard);
  }
  // Tiny preset, dp = 3, an independent unit list: V 257 padded to 384, T 256, C 128 -> embeddings
  // 81,920, block 12 C^2 + 13 C = 198,272, ln_f 256; shards ceil(81,920 / 3) = 27,307,
  // ceil(198,272 / 3) = 66,091, ceil(256 / 3) = 86.
  MemoryEstimateInput in;
  in.dims = preset_dims(GptPreset::tiny);
  in.dp = 3;
  in.zero_stage = 3;
  const StageMemory t = estimate_memory(in).worst();
  const int64_t tiny_shard = 27'307 + 4 * 66'091 + 86;
  EXPECT_EQ(t.parameters, 2 * tiny_shard);
  EXPECT_EQ(t.gradients, 2 * tiny_shard);
  EXPECT_EQ(t.optimizer_states, 12 * tiny_shard);
  EXPECT_EQ(t.local_parameters, 875'264);
}

TEST(Estimate, OffloadMovesStatesToTheHost) {
  MemoryEstimateInput in = gpt2_124m(4, 3);
  in.offload_optimizer = true;
  in.ranks_per_node = 4;
  const int64_t shard = kParams124M / 4;
  MemoryEstimate e = estimate_memory(in);
  EXPECT_EQ(e.worst().optimizer_states, 0);
  EXPECT_EQ(e.worst().gradients, 0);  // the f32 gradient shard lives on the host with the optimizer
  EXPECT_EQ(e.worst().parameters, 2 * shard);
  EXPECT_EQ(e.worst().host, 16 * shard);  // 12 optimizer + 4 f32 gradient
  EXPECT_EQ(e.host_per_node, 4 * 16 * shard);
  in.offload_params = true;
  e = estimate_memory(in);
  EXPECT_EQ(e.worst().parameters, 0);
  EXPECT_EQ(e.worst().host, 18 * shard);
  EXPECT_EQ(e.host_per_node, 4 * 18 * shard);
}

// Note [Partial optimizer offload]: the rule by hand, and the estimate it gives for GPT-2 124M.
TEST(Estimate, PartialOptimizerOffloadTakesTheLastUnitsFirst) {
  // Units 10, 1, 4, 4, 1: a half (10 elements) takes the last three (1 + 4 + 4 = 9; the next one,
  // 1, still fits at 10) and leaves the first; 0.2 (4 elements) takes the last 1 and the 4 before
  // it (half of it fits under the target), and no more.
  using zero::offloaded_units;
  EXPECT_EQ(offloaded_units({10, 1, 4, 4, 1}, 0.5), (std::vector<bool>{false, true, true, true, true}));
  EXPECT_EQ(offloaded_units({10, 1, 4, 4, 1}, 0.2), (std::vector<bool>{false, false, false, true, true}));
  EXPECT_EQ(offloaded_units({10, 1, 4, 4, 1}, 1.0), (std::vector<bool>{true, true, true, true, true}));
  EXPECT_EQ(offloaded_units({10, 1, 4, 4, 1}, 0.01), (std::vector<bool>{false, false, false, false, false}));
  // Empty units (another pipeline stage's) are never offloaded, even at 1.
  EXPECT_EQ(offloaded_units({0, 3, 0}, 1.0), (std::vector<bool>{false, true, false}));
  EXPECT_ZT_ERROR(offloaded_units({1}, 0.0), "[offloaded_units]", "fraction must be in (0, 1]");
  EXPECT_ZT_ERROR(offloaded_units({1}, 1.5), "[offloaded_units]", "got 1.5");

  // GPT-2 124M, one rank, ZeRO-2, half offloaded: the final norm and the last 9 blocks go (63.8M
  // of 124.5M; a tenth block would pass the 62.2M target by more than half a block), so the
  // embeddings and 3 blocks stay.
  MemoryEstimateInput in = gpt2_124m(1, 2);
  in.offload_optimizer = true;
  in.offload_optimizer_fraction = 0.5;
  const int64_t host_units = kFinalNorm + 9 * kBlock, device_units = kParams124M - host_units;
  const StageMemory m = estimate_memory(in).worst();
  EXPECT_EQ(m.optimizer_states, 12 * device_units);
  EXPECT_EQ(m.gradients, 2 * device_units);
  EXPECT_EQ(m.host, 16 * host_units);
  EXPECT_EQ(m.parameters, 2 * kParams124M);
}

TEST(Estimate, SmallestOffloadFractionIsTheFirstThatFits) {
  MemoryEstimateInput in = gpt2_124m(1, 2);
  in.micro_batch_size = 4;
  MemoryEstimateInput half = in;
  half.offload_optimizer = true;
  half.offload_optimizer_fraction = 0.5;
  const int64_t limit = estimate_memory(half).worst().gpu_total();
  const std::optional<double> f = smallest_offload_fraction(in, limit);
  ASSERT_TRUE(f.has_value());
  EXPECT_LE(*f, 0.5);
  MemoryEstimateInput at = half, below = half;
  at.offload_optimizer_fraction = *f;
  below.offload_optimizer_fraction = *f - 0.01;
  EXPECT_LE(estimate_memory(at).worst().gpu_total(), limit);
  if (*f > 0.01) {
    EXPECT_GT(estimate_memory(below).worst().gpu_total(), limit);
  }
  // Less than the parameters and activations alone: nothing fits.
  EXPECT_FALSE(smallest_offload_fraction(in, estimate_memory(in).worst().parameters).has_value());
}

TEST(Estimate, TensorAndPipelineParallelSlices) {
  // tp = 2, by hand (C = 768): block = ln 3,072 + qkv (1,769,472 + 2,304) / 2 + proj 294,912 + 768
  //   + fc (2,359,296 + 3,072) / 2 + fc_proj 1,179,648 + 768 = 3,546,240;
  // embeddings 50304 * 768 / 2 + 786,432 = 20,103,168; ln_f 1,536.
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.tp = 2;
  EXPECT_EQ(estimate_memory(in).worst().local_parameters, 20'103'168 + 12 * 3'546'240 + 1'536);
  // pp = 2: stage 0 = embeddings + 6 blocks; stage 1 = 6 blocks + ln_f + the tied head's copy of wte.
  in.tp = 1;
  in.pp = 2;
  in.micro_batches = 4;
  const MemoryEstimate e = estimate_memory(in);
  ASSERT_EQ(e.stages.size(), 2u);
  EXPECT_EQ(e.stages[0].local_parameters, kEmbeddings + 6 * kBlock);
  EXPECT_EQ(e.stages[1].local_parameters, 6 * kBlock + kFinalNorm + 50'304 * 768);
  // An uneven split.
  in.blocks_per_chunk = {4, 8};
  const MemoryEstimate u = estimate_memory(in);
  EXPECT_EQ(u.stages[0].local_parameters, kEmbeddings + 4 * kBlock);
  EXPECT_EQ(u.stages[1].local_parameters, 8 * kBlock + kFinalNorm + 50'304 * 768);
}

TEST(Estimate, RawParameterCountGivesModelStatesOnly) {
  MemoryEstimateInput in;
  in.parameter_count = 1'000'000'001;
  in.tp = 2;
  in.dp = 4;
  in.zero_stage = 3;
  const MemoryEstimate e = estimate_memory(in);
  EXPECT_FALSE(e.activations_counted);
  const int64_t local = 500'000'001, shard = 125'000'001;  // ceil(1,000,000,001 / 2), then ceil(/ 4)
  EXPECT_EQ(e.worst().local_parameters, local);
  EXPECT_EQ(e.worst().model_states(), 16 * shard);
  EXPECT_EQ(e.worst().activations, 0);
  EXPECT_NE(format_memory_estimate(e, in).find("activations not estimated"), std::string::npos);
}

TEST(Estimate, Buffers) {
  MemoryEstimateInput in = gpt2_124m(2, 2);
  in.bucket_mb = 25;
  EXPECT_EQ(estimate_memory(in).worst().buffers, 2 * 25 * 1024 * 1024);
  in.dp = 1;
  EXPECT_EQ(estimate_memory(in).worst().buffers, 0);
  // ZeRO-3: two gathered units (the largest is the embeddings) and one unit's full gradient, bf16.
  in.dp = 8;
  in.zero_stage = 3;
  EXPECT_EQ(estimate_memory(in).worst().buffers, 2 * 2 * kEmbeddings + 2 * kEmbeddings);
}

// The tensors one block keeps for backward, listed one by one (fused attention, no tp).
int64_t block_reference(int64_t B, int64_t T, int64_t C, int64_t H, int64_t e, bool dropout, bool selective) {
  struct Saved { int64_t elements, bytes; };
  std::vector<Saved> saved = {
      {B * T * C, e},      // ln1 input
      {B * T, 4},          // ln1 mean
      {B * T, 4},          // ln1 rstd
      {B * T * C, e},      // qkv input (ln1 output)
      {3 * B * T * C, e},  // q, k, v
      {B * T * C, e},      // attention output = proj input
      {B * H * T, 4},      // attention log-sum-exp
      {B * T * C, e},      // ln2 input
      {B * T, 4},          // ln2 mean
      {B * T, 4},          // ln2 rstd
      {B * T * C, e},      // fc input (ln2 output)
      {4 * B * T * C, e},  // GeLU input (fc output)
  };
  if (!selective) saved.push_back({4 * B * T * C, e});  // GeLU output = fc_proj input
  if (dropout) saved.push_back({B * T * C, 1}), saved.push_back({B * T * C, 1});
  int64_t total = 0;
  for (const Saved& s : saved) total += s.elements * s.bytes;
  return total;
}

TEST(Estimate, BlockActivationsMatchTheTensorList) {
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.micro_batch_size = 3;
  for (Precision p : {Precision::bf16, Precision::f32})
    for (bool dropout : {false, true})
      for (bool selective : {false, true}) {
        in.precision = p;
        in.dropout = dropout;
        in.checkpointing = selective ? ActivationCheckpointing::selective : ActivationCheckpointing::none;
        EXPECT_EQ(block_activation_bytes(in, k124M),
                  block_reference(3, 1024, 768, 12, p == Precision::f32 ? 4 : 2, dropout, selective));
      }
}

TEST(Estimate, BlockActivationsMatchKorthikanti) {
  // Korthikanti et al. 2022, 16-bit activations with tensor parallel t: s b h (10 + 24 / t + 5 a s / (h t)).
  // Without attention dropout (zerotrain's attention has none) the 5 a s b term is 2 a s b (the
  // probabilities); the layernorm statistics (16 b s, f32) are ours on top.
  const int64_t s = 1024, b = 2, h = 768, a = 12;
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.micro_batch_size = b;
  in.dropout = true;
  in.fused_attention = false;
  for (int64_t t : {1, 2, 4}) {
    in.tp = static_cast<int>(t);
    EXPECT_EQ(block_activation_bytes(in, k124M), s * b * h * 10 + s * b * h * 24 / t + 2 * a * s * s * b / t + 16 * b * s);
    in.sequence_parallel = true;  // everything divided by t: s b h / t (34 + 2 a s / h)
    EXPECT_EQ(block_activation_bytes(in, k124M), (s * b * h * 34 + 2 * a * s * s * b + 16 * b * s) / t);
    in.sequence_parallel = false;
  }
}

TEST(Estimate, ActivationsPerCheckpointingModeAndSchedule) {
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.micro_batch_size = 2;
  const int64_t B = 2, T = 1024, C = 768, V = 50304;
  const int64_t block = block_reference(B, T, C, 12, 2, false, false);
  const int64_t embed = 4 * B * T;                                              // token ids
  // bf16 logits with their gradient written over them (2 bytes per logit: the fused cross-entropy
  // keeps no f32 softmax); once per step besides, the tied head's weight gradient (2 V C) made meanwhile
  const int64_t head_once = 2 * V * C;
  const int64_t head = 2 * B * T * C + 8 * B * T + 2 * B * T * C + 2 * B * T * V + 4 * B * T;
  EXPECT_EQ(estimate_memory(in).worst().activations, 12 * block + embed + head + head_once);
  in.checkpointing = ActivationCheckpointing::full;
  EXPECT_EQ(estimate_memory(in).worst().activations, 12 * 2 * B * T * C + block + embed + head + head_once);
  in.checkpoint_every_k_blocks = 5;  // segments of 5, 5, 2 blocks: 3 inputs kept, 5 blocks re-run at once
  EXPECT_EQ(estimate_memory(in).worst().activations, 3 * 2 * B * T * C + 5 * block + embed + head + head_once);

  // Pipeline of 4 stages, 3 blocks each, 8 micro-batches.
  in.checkpointing = ActivationCheckpointing::none;
  in.checkpoint_every_k_blocks = 1;
  in.pp = 4;
  in.micro_batches = 8;
  MemoryEstimate e = estimate_memory(in);  // 1F1B: stage s holds min(8, 4 - s) micro-batches
  EXPECT_EQ(e.stages[0].activations, 4 * (3 * block + embed));
  EXPECT_EQ(e.stages[1].activations, 3 * 3 * block);
  EXPECT_EQ(e.stages[3].activations, 1 * (3 * block + head) + head_once);
  in.pipeline_schedule = PipelineScheduleKind::gpipe;
  e = estimate_memory(in);
  EXPECT_EQ(e.stages[0].activations, 8 * (3 * block + embed));
  EXPECT_EQ(e.stages[3].activations, 8 * (3 * block + head) + head_once);
  // Interleaved, 2 chunks of 1 or 2 blocks per rank: stage 0 keeps min(16, 4*2 + 4 - 1) = 11 chunk passes.
  in.pipeline_schedule = PipelineScheduleKind::interleaved;
  in.virtual_stages = 2;
  in.blocks_per_chunk = {2, 1, 1, 1, 1, 2, 2, 2};
  e = estimate_memory(in);
  EXPECT_EQ(e.stages[0].activations, 11 * 2 * block + 4 * embed);
  EXPECT_EQ(e.stages[3].activations, 5 * 2 * block + head + head_once);  // 8 + 4 - 6 - 1 = 5 passes
  // Send and receive buffers of one micro-batch's hidden states.
  EXPECT_EQ(e.stages[1].buffers, 2 * 2 * B * T * C);
}

TEST(Estimate, ActivationsWithTheFirstBlocksCheckpointed) {
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.micro_batch_size = 2;
  const int64_t B = 2, T = 1024, C = 768, V = 50304;
  const int64_t block = block_reference(B, T, C, 12, 2, false, false), input = 2 * B * T * C;
  const int64_t embed = 4 * B * T, head_once = 2 * V * C;
  const int64_t head = 2 * B * T * C + 8 * B * T + 2 * B * T * C + 2 * B * T * V + 4 * B * T;
  const auto activations = [&](int num_blocks, int k) {
    in.checkpointing = ActivationCheckpointing::full;
    in.checkpoint_num_blocks = num_blocks;
    in.checkpoint_every_k_blocks = k;
    return estimate_memory(in).worst().activations;
  };
  in.checkpointing = ActivationCheckpointing::none;
  const int64_t none = estimate_memory(in).worst().activations;
  const int64_t full = activations(0, 1);
  EXPECT_EQ(full, 12 * input + block + embed + head + head_once);
  EXPECT_EQ(activations(12, 1), full);  // all 12 blocks: full
  // The first 8: their inputs, the last 4 blocks whole; backward frees those 4 before it re-runs one
  // checkpointed block, so the re-run adds nothing.
  const int64_t partial = activations(8, 1);
  EXPECT_EQ(partial, 8 * input + 4 * block + embed + head + head_once);
  EXPECT_GT(partial, full);
  EXPECT_LT(partial, none);
  // Segments of 5 and 3 blocks: 2 inputs; re-running 5 blocks outgrows the 4 plain ones by 1.
  EXPECT_EQ(activations(8, 5), 2 * input + 4 * block + block + embed + head + head_once);
  EXPECT_EQ(activations(1, 1), 1 * input + 11 * block + embed + head + head_once);

  // Pipeline of 4 stages, 3 blocks each, 8 micro-batches, 1F1B: num_blocks counts each chunk's
  // blocks; stage s holds min(8, 4 - s) micro-batches.
  in.pp = 4;
  in.micro_batches = 8;
  activations(2, 1);
  MemoryEstimate e = estimate_memory(in);
  EXPECT_EQ(e.stages[0].activations, 4 * (2 * input + block + embed));
  EXPECT_EQ(e.stages[3].activations, 1 * (2 * input + block + head) + head_once);
  activations(3, 1);
  const MemoryEstimate all_of_each_chunk = estimate_memory(in);
  activations(0, 1);
  EXPECT_EQ(estimate_memory(in).stages[0].activations, all_of_each_chunk.stages[0].activations);
  EXPECT_EQ(estimate_memory(in).stages[0].activations, 4 * (3 * input + embed) + block);
  // Interleaved, chunks of 2 and 1 blocks on stage 0, the first block of each checkpointed: a pass
  // keeps at most one input and one block; re-running the 1-block chunk's block has no plain block
  // to free first. 11 chunk passes (ActivationsPerCheckpointingModeAndSchedule).
  in.pipeline_schedule = PipelineScheduleKind::interleaved;
  in.virtual_stages = 2;
  in.blocks_per_chunk = {2, 1, 1, 1, 1, 2, 2, 2};
  activations(1, 1);
  e = estimate_memory(in);
  EXPECT_EQ(e.stages[0].activations, 11 * (input + block) + block + 4 * embed);

  // The table names the setting.
  in = gpt2_124m(1, 0);
  in.checkpointing = ActivationCheckpointing::full;
  in.checkpoint_num_blocks = 8;
  in.checkpoint_every_k_blocks = 2;
  const std::string table = format_memory_estimate(estimate_memory(in), in);
  EXPECT_NE(table.find("activation checkpointing full of the first 8 blocks, 2 blocks per segment"), std::string::npos)
      << table;
  in.checkpoint_num_blocks = -1;
  try {
    estimate_memory(in);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_STREQ(err.what(), "[estimate] checkpoint_num_blocks must be >= 0 (0: all blocks), got -1");
  }
}

// The fewest recomputed blocks that fit: the count returned fits and one fewer does not.
TEST(Estimate, FewestCheckpointedBlocksThatFit) {
  MemoryEstimateInput in = gpt2_124m(1, 2);
  in.micro_batch_size = 16;
  auto need = [&](int num_blocks) {
    MemoryEstimateInput with = in;
    with.checkpointing = ActivationCheckpointing::full;
    with.checkpoint_num_blocks = num_blocks;
    return estimate_memory(with).worst().gpu_total();
  };
  const int64_t none = estimate_memory(in).worst().gpu_total(), all = need(0);
  ASSERT_LT(all, none);
  for (int64_t limit : {need(3), need(7) + 1, need(11), (need(5) + need(6)) / 2}) {
    const std::optional<int> n = fewest_checkpointed_blocks(in, limit);
    ASSERT_TRUE(n.has_value()) << limit;
    ASSERT_GE(*n, 1);
    EXPECT_LE(need(*n), limit);
    EXPECT_GT(*n == 1 ? none : need(*n - 1), limit) << *n;  // one block fewer does not fit
  }
  // Leaving the last block plain costs nothing (backward frees it before any re-run), so 11 blocks
  // keep less than all 12 (one segment input fewer).
  EXPECT_LT(need(11), all);
  EXPECT_EQ(fewest_checkpointed_blocks(in, need(11)), 11);
  int64_t least = all;
  for (int n = 1; n < 12; ++n) least = std::min(least, need(n));
  EXPECT_FALSE(fewest_checkpointed_blocks(in, least - 1).has_value());
  in.checkpointing = ActivationCheckpointing::selective;  // the caller's own mode is ignored
  EXPECT_EQ(fewest_checkpointed_blocks(in, need(4)), 4);
  in.dims.reset();
  in.parameter_count = 124'000'000;
  EXPECT_FALSE(fewest_checkpointed_blocks(in, need(4)).has_value());
}

// Note [Chunked loss]: when the head runs in chunks, and what it keeps then.
TEST(Estimate, ChunkedLossRowsAndHeadBytes) {
  MemoryEstimateInput in = gpt2_124m(1, 0);
  in.micro_batch_size = 16;  // N = 16384 rows of 50304 logits: 1.5 GiB whole
  EXPECT_EQ(resolved_loss_chunk_rows(in), 0);  // no other saver on: whole logits are faster
  in.offload_optimizer = true;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 4096);  // 4096 x 50304 x 2 B = 393 MiB <= 512 MiB
  in.offload_optimizer = false;
  in.checkpointing = ActivationCheckpointing::selective;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 4096);
  in.precision = Precision::f32;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 2048);
  in.precision = Precision::bf16;
  in.micro_batch_size = 4;  // N = 4096: one chunk would be the whole logits
  EXPECT_EQ(resolved_loss_chunk_rows(in), 0);
  in.micro_batch_size = 16;
  in.loss_chunk_rows = 0;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 0);
  in.loss_chunk_rows = 100;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 100);
  in.tp = 2;  // asked for: also under vocabulary parallelism
  EXPECT_EQ(resolved_loss_chunk_rows(in), 100);
  in.loss_chunk_rows = -1;
  // Chosen: a vocabulary-parallel chunk holds e + 8 bytes per local logit (the logits and two f32
  // buffers of them): 10 x 25152 B a row, so 2048 rows fit 512 MiB.
  EXPECT_EQ(loss_chunk_bytes_per_row(in), 10 * 25152);
  EXPECT_EQ(resolved_loss_chunk_rows(in), 2048);
  in.tp = 1;
  in.loss_chunk_rows = -1;
  in.dims.reset();
  in.parameter_count = 124'000'000;
  EXPECT_EQ(resolved_loss_chunk_rows(in), 0);

  // The head's bytes: whole logits, the head's input and the weight gradient (e V C, once) become
  // f32 dx and dW and, once, the larger of a chunk's logits and the rounded dW.
  MemoryEstimateInput whole = gpt2_124m(1, 0), chunked = gpt2_124m(1, 0);
  whole.micro_batch_size = chunked.micro_batch_size = 16;
  whole.checkpointing = chunked.checkpointing = ActivationCheckpointing::selective;
  whole.loss_chunk_rows = 0;
  const int64_t N = 16 * 1024, C = 768, V = 50304, e = 2;
  const int64_t saved = (e * N * V + e * N * C + e * V * C) - (4 * N * C + 4 * V * C + std::max(e * 4096 * V, e * V * C));
  EXPECT_EQ(estimate_memory(whole).worst().activations - estimate_memory(chunked).worst().activations, saved);
  const std::string table = format_memory_estimate(estimate_memory(chunked), chunked);
  EXPECT_NE(table.find("activation checkpointing selective, loss in chunks of 4096 rows"), std::string::npos) << table;
  // tp = 2: the local logits with the loss backward's two f32 buffers ((e + 8) N V/2) and the
  // local weight gradient become f32 dx, the f32 local dW and, once, the larger of a chunk and the
  // rounded dW.
  whole.tp = chunked.tp = 2;
  const int64_t Vl = V / 2, chunk = 2048 * (e + 8) * Vl;
  const int64_t saved_tp = ((e + 8) * N * Vl + e * N * C + e * Vl * C) - (4 * N * C + 4 * Vl * C + std::max(chunk, e * Vl * C));
  EXPECT_EQ(estimate_memory(whole).worst().activations - estimate_memory(chunked).worst().activations, saved_tp);
}

TEST(Estimate, FromConfigAndTable) {
  TrainConfig cfg = load_config(std::string(ZT_SOURCE_DIR) + "/examples/gpt2_1.5b_zero3.pbtxt");
  const MemoryEstimateInput in = estimate_input_from_config(cfg);
  EXPECT_EQ(in.dp, 8);
  EXPECT_EQ(in.zero_stage, 3);
  EXPECT_TRUE(in.offload_optimizer);
  EXPECT_EQ(in.ranks_per_node, 8);
  EXPECT_EQ(in.checkpointing, ActivationCheckpointing::full);
  EXPECT_EQ(in.checkpoint_num_blocks, 0);  // all blocks
  const MemoryEstimate e = estimate_memory(in);
  // 1.5B, dp 8: every unit of GPT-2 XL divides by 8 (80,486,400 + 1,638,400; 30,740,800; 3,200), no padding.
  const int64_t shard = 1'557'686'400 / 8;
  EXPECT_EQ(e.worst().parameters, 2 * shard);
  EXPECT_EQ(e.worst().gradients, 0);
  EXPECT_EQ(e.worst().optimizer_states, 0);
  EXPECT_EQ(e.worst().host, 16 * shard);
  EXPECT_EQ(e.host_per_node, 8 * 16 * shard);
  const std::string table = format_memory_estimate(e, in);
  for (const char* part : {"1,557,686,400 parameters", "ZeRO stage 3, optimizer offloaded", "parameters", "gradients",
                           "optimizer states", "activations", "buffers", "total", "host per node (at most, 8 ranks)"})
    EXPECT_NE(table.find(part), std::string::npos) << part << " not in\n" << table;
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
  EXPECT_EQ(format_bytes(int64_t{3} << 30), "3.00 GiB");
}

TEST(Estimate, RejectsBadInput) {
  MemoryEstimateInput in = gpt2_124m(1, 4);
  try {
    estimate_memory(in);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[estimate] zero_stage must be 0..3, got 4");
  }
  in.zero_stage = 0;
  in.pp = 5;
  try {
    estimate_memory(in);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[estimate] n_layer (12) is not divisible by pp x virtual_stages = 5; give blocks_per_chunk");
  }
}

}  // namespace
}  // namespace zt

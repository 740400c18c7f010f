// A pipeline rank's share of the model: which contiguous block ranges its model chunks run
// (StagePlan), and where its chunks' parameters come from, including the tied embedding's copy on
// the last stage (StageSource). Model-agnostic: it knows units (Note [Units] in models/gpt.h), not
// what a block computes; launch/pipeline_step.h runs GPT's pieces over them.
//
// Note [Pipeline tied embedding]
// GPT ties the output head to the token embedding (unit 0, parameter 0). With pp > 1 the first
// stage uses it to embed and the last to compute logits. The last stage holds its own copy of it
// (the head copy, a leaf outside the ZeRO engine), initialised from the first stage's, and:
//   1. during the step the copy accumulates its gradient over all micro-batches (autograd does);
//   2. after its last backward the last-stage rank sends that sum to the first-stage rank, which
//      adds it to the embedding's gradient inside its own last backward of the first stage (an
//      identity node on the embedding, recorded at acquire(), adds it), so the engine reduces and
//      clips exactly the single-process gradient of the tied weight;
//   3. after the optimizer step the first-stage rank sends the updated embedding back.
// Both copies therefore stay bit-identical, the tied weight has one optimizer state (on the first
// stage only) and counts once in the global gradient norm. This moves the same bytes as
// Megatron's embedding-group all-reduce (one [V, C] each way per step) but needs no access to the
// engine's gradient shards, whose layouts differ between unit 0 (wte + wpe) and a head-only unit.
// Order (Note [Pipeline p2p order] in schedule.cpp): both messages are the last p2p messages of
// the two ranks in their step (the first-stage rank's last backward is its last instruction in
// every schedule, the last-stage rank sends after its whole list), so appending them to the
// schedule's global message order keeps every rank issuing in one order: no deadlock with
// rendezvous (NCCL) sends either.
//
// Note [Pipeline with tensor parallelism]
// With tp > 1 as well (world = dp x tp x pp, Note [mesh layout] in parallel/mesh.h) each rank's
// chunks are its tp shards of its stage's units, and its pipeline group joins the ranks of the same
// tp (and dp) coordinate: every message above goes from a tp rank to the same tp rank of another
// stage. What travels is the tp-local tensor: without sequence parallelism every tp rank holds the
// whole [B, T, C] activation (each sends its copy; equal copies, as the Megatron pipeline does), with
// it each sends its [B, T/tp, C] sequence shard. The head copy is the tp rank's vocabulary shard of
// the embedding ([Vp/tp, C]), so the tied-embedding exchange is per tp rank, and the clipping norm
// sums over tp and pp (PipelineStep in launch/pipeline_step.h sets the engine's norm groups). This
// file needs no tp-specific code: shapes come from the caller, peers from the pipeline group.
#pragma once

#include <memory>
#include <vector>

#include "models/gpt.h"
#include "parallel/comm/communicator.h"
#include "parallel/pipeline/partition.h"

namespace zt::pipeline {

// Tags of the pipeline's point-to-point messages (MPI matches by tag; NCCL by order, which the
// schedule keeps the same on both sides).
enum class MessageTag : int { activation = 11, grad = 12, head_grad = 13, head_weight = 14 };

// One model chunk of a pipeline rank (Note [Pipeline stages and chunks] in schedule.h).
struct ChunkPlacement {
  int stage = 0;        // global pipeline stage
  int first_block = 0;  // the chunk runs blocks [first_block, end_block)
  int end_block = 0;
  bool first = false;  // stage 0: also the embedding (unit 0)
  bool last = false;   // the last stage: also the final norm, the head and the loss
};

class StagePlan {
 public:
  // `partition` splits the blocks into pp * v stages (v model chunks per rank); rank in [0, pp).
  // Throws "[pipeline] ..." naming the mismatch.
  StagePlan(const StagePartition& partition, int pp, int rank);

  int pp() const { return pp_; }
  int rank() const { return rank_; }
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  int num_blocks() const { return num_blocks_; }
  const ChunkPlacement& chunk(int c) const;
  bool holds_first_stage() const { return chunks_.front().first; }
  bool holds_last_stage() const { return chunks_.back().last; }
  int first_stage_rank() const { return 0; }
  int last_stage_rank() const { return pp_ - 1; }
  // Note [Pipeline tied embedding]: the last stage keeps a head copy unless it also embeds (pp = 1).
  bool holds_head_copy() const { return holds_last_stage() && !holds_first_stage(); }
  // The units (num_blocks + 2: embedding, blocks, final norm) whose parameters this rank holds.
  std::vector<bool> owned_units() const;

 private:
  int pp_ = 1, rank_ = 0, num_blocks_ = 0;
  std::vector<ChunkPlacement> chunks_;
};

// The ParameterSource of a pipeline rank's chunks: the rank's own units from `inner` (the ZeRO
// engine), unit 0 on the last stage from the head copy, plus the tied-embedding messages of
// Note [Pipeline tied embedding] over the pipeline group `pp` (pp.rank() is the pipeline rank).
class StageSource final : public ParameterSource {
 public:
  // head_shape, dtype, device: those of the tied embedding (unit 0's parameter 0) as computed with.
  StageSource(ParameterSource& inner, const StagePlan& plan, comm::Communicator& pp, Shape head_shape,
              DType dtype, Device device);
  ~StageSource() override;

  std::vector<Tensor> acquire(int unit) override;
  void release(int unit) override;
  Tensor unit_output(int unit, const Tensor& out) override;

  // Last-stage rank, after its last backward: starts sending the head copy's accumulated gradient
  // and clears it for the next step.
  void send_head_grad();
  // First-stage rank, right before its last backward of stage 0: receives that gradient; the
  // backward adds it to the embedding's.
  void receive_head_grad();
  // First- and last-stage ranks (a no-op elsewhere and with pp = 1): the head copy := the first
  // stage's embedding. After every optimizer step and whenever the embedding changed outside it
  // (initialisation, checkpoint loading).
  void sync_head();
  // Waits for the sends started here (before their buffers may be reused).
  void wait_sends();

  const Tensor& head() const { return head_; }  // undefined unless plan.holds_head_copy()

 private:
  ParameterSource& inner_;
  const StagePlan& plan_;
  comm::Communicator& pp_;
  Shape head_shape_;
  DType dtype_;
  Device device_;
  Tensor head_;                             // the last stage's copy (leaf, requires grad)
  std::shared_ptr<Tensor> pending_grad_;    // first stage: the received head gradient, until used
  std::vector<comm::WorkPtr> sends_;
};

}  // namespace zt::pipeline

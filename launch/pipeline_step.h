// Pipeline parallelism for GPT: the GPT pieces each model chunk runs (GptChunks), one rank's
// pipelined training step over them (PipelineStep), and what `zerotrain train` needs to run
// pp > 1 (PipelineTraining: the dp x pp mesh, the stage plan from the config, data, tracing).
//
// A rank builds Gpt(config, device, seed, plan.owned_units(), tp) — only its chunks' units, as
// this rank's tensor-parallel shards when tp > 1 —, hands the parameters to a ZeroEngine on its
// data-parallel group, then PipelineStep wires the engine, the tied embedding's head copy (Note
// [Pipeline tied embedding] in parallel/pipeline/stage.h) and the executor
// (parallel/pipeline/executor.h) together. With pp = 1 nothing of this is used. Tensor parallelism
// comes with the model (Gpt::tensor_parallel()): Note [Pipeline with tensor parallelism].
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/data/loader.h"
#include "models/gpt.h"
#include "parallel/mesh.h"
#include "parallel/pipeline/executor.h"

namespace zt {

// The chunks of one pipeline rank, computed with GPT's unit-level functions.
class GptChunks final : public pipeline::ChunkModel {
 public:
  // Each chunk runs its blocks through run_blocks with `checkpointing`: a full policy's num_blocks
  // counts from the chunk's first block (Note [Checkpointing modes] in models/checkpointing.h).
  GptChunks(Gpt& model, const pipeline::StagePlan& plan, ParameterSource& source, int64_t micro_batch_size,
            const CheckpointPolicy& checkpointing);

  // The micro-batches the next step or evaluation reads: token ids [B, T] (used by stage 0) and
  // targets [B, T] (used by the last stage); dropout draws from StepRng{seed, step, micro-batch}.
  void set_micro_batches(std::vector<Tensor> inputs, std::vector<Tensor> targets, uint64_t seed, uint64_t step);

  Tensor forward(int chunk, int micro_batch, const Tensor& input, bool training) override;
  Shape activation_shape() const override;
  DType activation_dtype() const override { return model_.config().compute_dtype; }

 private:
  Tensor loss(const Tensor& hidden, const Tensor& targets);  // the last stage: final norm, head, loss

  Gpt& model_;
  const pipeline::StagePlan& plan_;
  ParameterSource& source_;
  int64_t micro_batch_size_;
  CheckpointPolicy checkpointing_;
  std::vector<Tensor> inputs_, targets_;
  uint64_t seed_ = 0, step_ = 0;
};

struct PipelineStepOptions {
  pipeline::ScheduleKind schedule = pipeline::ScheduleKind::one_f_one_b;
  int micro_batches = 1;  // per optimizer step
  int64_t micro_batch_size = 1;
  CheckpointPolicy checkpointing;  // full: blocks recomputed in backward (selective is the model's switch)
  uint64_t seed = 0;  // dropout
};

// One pipeline rank's training step over a stage model. The engine must hold `model`'s parameters
// and reduce over the rank's data-parallel group; the constructor sets its gradient-norm groups to
// `pp` and the model's tp group, and makes the head copy equal to the embedding (collective over
// `pp`). `pp` must join the ranks of one tp coordinate (Mesh::pp() does).
class PipelineStep {
 public:
  PipelineStep(Gpt& model, zero::ZeroEngine& engine, const pipeline::StagePlan& plan, comm::Communicator& pp,
               const PipelineStepOptions& options);

  // inputs and targets: one [B, T] tensor per micro-batch (every rank passes them; each stage
  // reads what it needs). Collective over the pipeline and data-parallel groups.
  pipeline::StepReport train_step(int64_t step, std::vector<Tensor> inputs, std::vector<Tensor> targets,
                                  const pipeline::StepArgs& args);
  // Mean loss of the micro-batches, forward only.
  double evaluate(std::vector<Tensor> inputs, std::vector<Tensor> targets);
  // The head copy := the embedding, after the embedding changed outside the step (checkpoint load).
  void sync_tied_embedding() { source_.sync_head(); }

  ParameterSource& source() { return source_; }
  const Tensor& head_copy() const { return source_.head(); }  // undefined unless the rank keeps one
  const pipeline::Schedule& schedule() const { return executor_.schedule(); }

 private:
  PipelineStepOptions options_;
  pipeline::StageSource source_;
  GptChunks chunks_;
  pipeline::Executor executor_;
};

// The stage plan `cfg` asks for: parallel.stage_split or an even split of the blocks over
// pp x virtual_stages chunks (blocks_per_chunk in launch/config.h).
pipeline::StagePlan stage_plan_for(const TrainConfig& cfg, int pp_rank);

// What `zerotrain train` does differently with parallel.pp > 1. Collective over `world`.
class PipelineTraining {
 public:
  // Builds the dp x tp x pp mesh and this rank's stage plan. Throws "[train] ..." for what is not
  // supported with pp > 1 (ZeRO-3). With tp > 1 the model comes from TensorParallelTraining
  // (launch/model_parallel.h), built with owned_units().
  PipelineTraining(const TrainConfig& cfg, comm::Communicator& world);
  ~PipelineTraining();

  std::vector<bool> owned_units() const { return plan_.owned_units(); }
  comm::Communicator& dp() const { return mesh_.dp(); }
  int dp_rank() const { return mesh_.coord().dp; }
  int dp_size() const { return mesh_.shape().dp; }
  CheckpointPlacement checkpoint_placement() const;

  // Once the engine holds the model's parameters: makes the step (syncing the head copy).
  void attach(Gpt& model, zero::ZeroEngine& engine, const CheckpointPolicy& checkpointing);
  void sync_tied_embedding();

  struct Outcome {
    double loss = 0;  // mean over micro-batches and data-parallel ranks
    zero::StepResult optimizer;
    pipeline::StepTimings timings;
  };
  // Reads train.grad_accumulation micro-batches from `loader` (this rank's data-parallel slice)
  // and runs one optimizer step. Records the first steps' instructions for parallel.trace.
  Outcome step(data::DataLoader& loader, int64_t step, double lr, double max_grad_norm, double loss_scale);
  double evaluate(data::DataLoader& loader, int64_t micro_batches);
  // The parameter count of every stage's model (the head copy not counted twice); under tensor
  // parallelism this tp rank's shards only (TensorParallelTraining::num_parameters is the whole).
  int64_t num_parameters(const Gpt& model) const;
  // Writes the trace if parallel.trace is set and it was not written yet.
  void finish();
  // Where the steps' time went on each pipeline rank of this replica, one line (collective over
  // the pipeline group): "pp 0: forward 30%, backward 55%, optimizer 2%, idle 13% | pp 1: ...".
  std::string timing_summary();

 private:
  void read(data::DataLoader& loader, int64_t micro_batches, std::vector<Tensor>& inputs, std::vector<Tensor>& targets);
  void write_trace();

  const TrainConfig& cfg_;
  comm::Communicator& world_;
  Mesh mesh_;
  pipeline::StagePlan plan_;
  Device device_;
  std::unique_ptr<PipelineStep> step_;
  std::vector<pipeline::ExecutedInstruction> trace_events_;
  pipeline::StepTimings timings_;  // summed over the run's steps
  int traced_steps_ = 0;
  bool trace_written_ = false;
};

}  // namespace zt

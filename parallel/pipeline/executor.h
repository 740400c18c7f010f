// The pipeline executor: runs one rank's instruction list (schedule.h) for real. It only follows
// the list: forward and backward of (micro-batch, chunk), sends and receives in the list's order
// (Note [Pipeline p2p order]: that order is what makes it deadlock-free with MPI and NCCL alike),
// then the optimizer step through the rank's ZeRO engine. What a chunk computes comes from a
// ChunkModel; the tied embedding's messages from StageSource (Note [Pipeline tied embedding]).
//
// Per micro-batch and chunk:
//   forward   input = the received activation as a leaf that requires grad (the first stage
//             reads its tokens itself); keeps input and output until the backward.
//   backward  the last stage back-propagates loss * loss_scale / m; the others the received
//             gradient of their output. The input leaf's .grad is what goes to the previous stage.
//             Around it, engine.begin_micro_batch(last) / end_backward(), where `last` marks the
//             rank's final backward of the step: the engine then completes its reductions.
// The engine must be built on the data-parallel group and told about the pipeline group
// (set_grad_norm_groups) so that the clipping norm covers every stage; ZeRO-3 is refused (its
// gather-before-backward hooks assume one backward of the whole model per micro-batch).
#pragma once

#include <vector>

#include "parallel/comm/communicator.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/pipeline/stage.h"
#include "parallel/zero/zero_engine.h"

namespace zt::pipeline {

// What the executor asks of a rank's model chunks.
class ChunkModel {
 public:
  virtual ~ChunkModel() = default;
  // Forward of local chunk `chunk` for `micro_batch`. `input`: the activation from the previous
  // stage, or undefined on stage 0 (which reads the micro-batch's tokens itself). Returns the
  // activation for the next stage, or on the last stage the micro-batch's mean loss (a scalar).
  virtual Tensor forward(int chunk, int micro_batch, const Tensor& input, bool training) = 0;
  // The activations (and their gradients) between stages: [B, T, C] in the compute dtype.
  virtual Shape activation_shape() const = 0;
  virtual DType activation_dtype() const = 0;
};

// Seconds spent by one rank in one step, by instruction kind. idle() is everything else: waiting
// for the pipeline to fill and drain and for messages.
struct StepTimings {
  double forward = 0, backward = 0, optimizer = 0;
  double send = 0;  // issuing sends (they complete in the background)
  double recv = 0;  // waiting for receives, the tied embedding's included
  double total = 0;
  double idle() const { return total - forward - backward - optimizer; }
};

// An executed instruction, in microseconds of the wall clock (comparable across ranks of a host).
struct ExecutedInstruction {
  double start_us = 0, end_us = 0;
  Instruction instruction;
};

struct StepReport {
  double loss = 0;             // mean over the step's micro-batches, on every pipeline rank
  zero::StepResult optimizer;  // global gradient norm and whether the step was skipped
  StepTimings timings;
  std::vector<ExecutedInstruction> events;  // only with StepArgs::record_events
};

struct StepArgs {
  double lr = 0;
  double max_grad_norm = 0;  // <= 0: no clipping
  double loss_scale = 1.0;   // the loss is multiplied by it before backward (fp16)
  // Keep per-instruction events (and, on a GPU, synchronise after each so that they time the work,
  // not its launch).
  bool record_events = false;
};

class Executor {
 public:
  // pp: the pipeline group (pp.rank() is the pipeline rank). Validates the schedule (simulator.h)
  // and that it fits the plan and the group. All references must outlive the executor.
  Executor(Schedule schedule, comm::Communicator& pp, const StagePlan& plan, ChunkModel& model, StageSource& source,
           zero::ZeroEngine& engine);

  // One optimizer step over the schedule's micro-batches. Collective over the pipeline group (and
  // the engine's data-parallel group).
  StepReport train_step(const StepArgs& args);
  // Forward only, no gradients: the mean loss of micro-batches [0, micro_batches) on every
  // pipeline rank. Each micro-batch flows through the stages in order.
  double evaluate(int micro_batches);

  const Schedule& schedule() const { return schedule_; }

 private:
  struct Slot {           // one (micro-batch, chunk) in flight
    Tensor input;        // the received activation (a leaf requiring grad); undefined on stage 0
    Tensor output;       // the chunk's output (activation, or the loss on the last stage) until backward
    Tensor grad_output;  // the received gradient of output
    Tensor grad_input;   // input's gradient after backward, until sent
  };
  Slot& slot(int micro_batch, int chunk);
  void forward(const Instruction& in, bool training, std::vector<Tensor>& losses);
  void backward(const Instruction& in, double loss_scale, bool last);
  void send(const Instruction& in);
  void receive(const Instruction& in);
  void reap_sends(bool wait_all);
  double broadcast_loss(double local_sum, int micro_batches);

  Schedule schedule_;
  comm::Communicator& pp_;
  const StagePlan& plan_;
  ChunkModel& model_;
  StageSource& source_;
  zero::ZeroEngine& engine_;
  Device device_;
  std::vector<Slot> slots_;  // [micro_batch * chunks + chunk]
  std::vector<comm::WorkPtr> sends_;
  int last_backward_ = -1;        // index in the rank's list of its final backward
  int last_first_backward_ = -1;  // ... of its final backward of stage 0 (first-stage rank only)
};

// Gathers every rank's events of `steps` (collective over `world`) and writes one Chrome trace on
// world rank 0 in the simulator's format (timeline.h): a process per world rank, named by its
// data-parallel replica and pipeline rank, compute on lane 0 and messages on lane 1. Times start
// at the earliest event. Throws naming the path when it cannot be written.
struct RankTraceInfo {
  int dp_rank = 0;  // the data-parallel replica this rank belongs to
  int pp_rank = 0;
  int pp = 1;
  int chunks = 1;
};
void write_pipeline_trace(const std::string& path, const std::vector<ExecutedInstruction>& events,
                          const RankTraceInfo& info, comm::Communicator& world);

}  // namespace zt::pipeline

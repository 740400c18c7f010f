// The data-parallel engine: plain data parallelism (stage 0) and ZeRO stages 1-3, one code path.
//
// Per rank and unit (parallel/zero/flat_layout.h):
//   stage 0  full compute parameters, full gradients, full f32 masters and Adam moments;
//            gradients all-reduced in buckets of units as they become ready.
//   stage 1  full compute parameters and gradients; masters and moments for the rank's shard only.
//            Gradients are reduce-scattered per unit after the last micro-batch.
//   stage 2  as 1, but a unit's full gradient lives only from its first ready parameter to its
//            reduce-scatter, every micro-batch; the rank keeps the reduced shard.
//   stage 3  as 2, and compute parameters are kept only as the rank's shard: a unit is all-gathered
//            before its forward and again before its backward, and released after each
//            (Note [ZeRO-3 gather and release]).
// After backward, every stage holds, for its shard, the gradient averaged over the dp group.
// step() clips by the global norm, runs AdamW on the shard and brings the compute parameters up
// to date (a copy for stage 0, an all-gather for stages 1-2, nothing more for stage 3).
//
// Precision: compute parameters and gradients are in the compute dtype (bf16, f16 or f32);
// masters and moments are f32 (ZeRO's 2 + 2 + 12 bytes per parameter). With f32 compute the
// master is the compute parameter itself, so nothing is stored twice (4 + 4 + 8), unless one of
// them is offloaded and the other is not (then 4 + 4 + 12).
//
// Offload (parallel/zero/offload.h): offload_optimizer keeps masters, moments and an f32 gradient
// shard in host memory and runs AdamW there (Note [Optimizer offload]), for all units or for a
// fraction of them (Note [Partial optimizer offload]); offload_params keeps a
// stage-3 unit's compute shard in host memory until it is gathered (Note [Parameter offload]).
//
// Note [Grad-ready order]: units become ready in the same order on every rank (the same graph is
// walked the same way), which is what lets each rank start its collectives from autograd hooks
// without any negotiation.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "models/gpt.h"
#include "optim/adamw.h"
#include "parallel/comm/communicator.h"
#include "parallel/zero/flat_layout.h"
#include "parallel/zero/offload.h"

namespace zt::zero {

struct ZeroConfig {
  int stage = 0;                      // 0 (plain data parallel), 1, 2 or 3
  DType compute_dtype = DType::f32;
  double bucket_mb = 25.0;            // stage 0: units are grouped into all-reduce buckets of about this size
  int max_reductions_in_flight = 2;   // stages 2-3: bounds the full gradients alive at once
  bool prefetch = true;               // stage 3: gather the next unit while this one computes
  bool offload_optimizer = false;     // masters, moments and the gradient shard in host memory, AdamW on the CPU
  double offload_optimizer_fraction = 1.0;  // with offload_optimizer: the share of units offloaded, in (0, 1]
                                            // (Note [Partial optimizer offload] in flat_layout.h)
  bool offload_params = false;        // stage 3: the compute shard in host memory until gathered
};

struct StepResult {
  double grad_norm = 0;    // global norm of the (unscaled) gradient, before clipping
  bool skipped = false;    // non-finite gradients (fp16): no update was made
};

// Bytes this rank holds for model states, by kind (the estimator's categories), on the compute
// device and in host memory (offload). Transient buffers (gathered units, gradients being
// reduced, staging) are not model states.
struct ModelStateBytes {
  int64_t parameters = 0, gradients = 0, optimizer = 0;                 // on the compute device
  int64_t host_parameters = 0, host_gradients = 0, host_optimizer = 0;  // in host memory
  int64_t device_total() const { return parameters + gradients + optimizer; }
  int64_t host_total() const { return host_parameters + host_gradients + host_optimizer; }
  int64_t total() const { return device_total() + host_total(); }
};

// What the engine moved, cumulative since construction (tests and logs).
struct EngineCounters {
  int64_t unit_gathers = 0;          // stage 3: all-gathers of a unit's parameters
  OffloadTraffic offload;            // host <-> device bytes (and time) of the offload paths
  double host_optimizer_seconds = 0;  // offload_optimizer: gradient norm and AdamW on the host
};

class ZeroEngine final : public ParameterSource {
 public:
  // Takes over the model's parameters: their values become the initial state, and each
  // Parameter::tensor becomes a view into the unit's flat compute buffer. `units` gives the unit
  // count; parameters carry their unit. The same parameters and order on every rank.
  ZeroEngine(std::vector<Parameter>& params, int num_units, comm::Communicator& dp, AdamWConfig adamw,
             ZeroConfig config);
  ~ZeroEngine() override;

  // ParameterSource.
  std::vector<Tensor> acquire(int unit) override;
  void release(int unit) override;
  Tensor unit_output(int unit, const Tensor& out) override;

  // Call before each micro-batch's forward; `last` is true for the last micro-batch of the step
  // (stages 0-1 reduce only then: no communication on accumulation micro-batches).
  void begin_micro_batch(bool last);
  // After each micro-batch's backward: reduces units some of whose parameters got no gradient,
  // and, after the last micro-batch, completes every reduction.
  void end_backward();
  // Clip, AdamW on the shard, update compute parameters. loss_scale: the factor the loss was
  // multiplied by (fp16), divided out here.
  StepResult step(double lr, double max_grad_norm, double loss_scale = 1.0);

  // Model parallelism: the gradient norm is also summed over these groups (pipeline stages, tensor-
  // parallel ranks), and parameters marked tp_replicated count on tp rank 0 only (Note [Global
  // gradient norm]).
  void set_grad_norm_groups(std::vector<comm::Communicator*> groups, int tp_rank) {
    norm_groups_ = std::move(groups);
    tp_rank_ = tp_rank;
  }

  ModelStateBytes model_state_bytes() const;
  const EngineCounters& counters() const { return counters_; }
  const ZeroConfig& config() const { return config_; }
  int dp_rank() const { return dp_.rank(); }
  int dp_size() const { return dp_.size(); }
  // Which slice of each unit this rank's optimizer state covers (0 under stage 0: all of it).
  int shard_rank() const { return config_.stage == 0 ? 0 : dp_.rank(); }
  // Whether unit u's optimizer state lives in host memory (Note [Partial optimizer offload]).
  bool unit_offloaded(int unit) const;
  const std::vector<UnitLayout>& layouts() const { return layouts_; }
  int64_t step_count() const { return step_; }

  // Checkpoint access: this rank's f32 master, exp_avg and exp_avg_sq shards per unit (undefined
  // tensors for units this rank does not hold).
  struct ShardState {
    Tensor master, exp_avg, exp_avg_sq;
  };
  std::vector<ShardState> shard_states();
  void set_step_count(int64_t step) { step_ = step; }
  // After shard states were overwritten (checkpoint load): refresh compute parameters.
  void sync_parameters_from_masters();

 private:
  struct Unit;
  struct Bucket;
  void on_grad_ready(int param, const Tensor& grad);
  void on_unit_ready(int unit);
  void start_bucket_reduction(Bucket& bucket);
  void finalize_reduction(int unit);
  void drain_reductions(size_t keep);
  void gather(int unit, bool wait);
  void wait_gather(int unit);
  void free_gathered(int unit);
  Tensor full_grad(int unit);  // allocates the unit's full gradient on first use (stages 2-3)
  void take_reduced_gradient(int unit, const Tensor& reduced);  // into the (host or device) shard
  Tensor& step_gradient(Unit& unit);  // the shard gradient the optimizer reads
  void update_unit(Unit& unit, double lr, double grad_scale);  // AdamW on the unit's shard
  void write_back_parameters();
  // Offloaded AdamW of one unit with its compute-dtype copy written in the same pass (Note
  // [Offloaded step] in zero_engine.cpp).
  void update_offloaded_unit(Unit& unit, const Tensor& grad, const std::vector<AdamWRun>& runs, const AdamWArgs& args);

  std::vector<Parameter>& params_;
  comm::Communicator& dp_;
  AdamWConfig adamw_;
  ZeroConfig config_;
  std::vector<UnitLayout> layouts_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<int> unit_of_param_, index_in_unit_;
  std::deque<int> reducing_;  // units with a reduction in flight, oldest first
  bool last_micro_batch_ = true;
  bool in_backward_ = false;
  int forward_progress_ = -1;  // highest unit acquired in this micro-batch's forward
  std::vector<comm::Communicator*> norm_groups_;
  int tp_rank_ = 0;
  int64_t step_ = 0;
  Device device_;
  HostBuffers host_buffers_;  // offload: reused host buffers for gradients and rounded masters
  EngineCounters counters_;
};

}  // namespace zt::zero

// Tensor parallelism for `zerotrain train` (parallel.tp > 1): the dp x tp x pp mesh, the model as
// this rank's tensor-parallel shards (models/gpt.h), and what the data-parallel engine needs to
// know about it. The trainer keeps its one training loop; where it asks "which group, which data
// slice, which model", it asks this object when tp > 1.
//
//   world = dp x tp x pp (tp fastest, Note [mesh layout]); the ranks of one tp group read the same
//   data (data-parallel rank = mesh dp coordinate) and build the same model, each keeping its
//   shards; ZeRO shards each rank's parameters over its dp group; the gradient norm is summed over
//   tp too, replicated parameters counted once (Note [Global gradient norm]).
//
// With pp > 1 as well (Note [Pipeline with tensor parallelism] in parallel/pipeline/stage.h) each
// rank builds only its pipeline stage's units, as tp shards; launch/pipeline_step.h runs the step
// and PipelineStep sums the gradient norm over tp and pp.
//
// Note [TP checkpoints]: each tp rank's shards are another model's optimizer state, so each tp rank
// keeps its own checkpoint series, <checkpoint.dir>/tp_<rank>_of_<tp>/step_N/, written by its dp
// group with launch/checkpoint.h unchanged (with pp > 1: by its dp x pp ranks, checkpoint_group(),
// one stage_PP_shard_R file per pipeline rank). Such a checkpoint loads with the same tp and any dp,
// pp or ZeRO stage; another tp is refused (unit sizes differ). Resharding across tp sizes (gathering the
// shards by parameter name) belongs in launch/checkpoint.cpp and is not done yet.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/config.h"
#include "models/gpt.h"
#include "parallel/mesh.h"
#include "parallel/zero/zero_engine.h"

namespace zt {

class TensorParallelTraining {
 public:
  // Builds the dp x tp x pp mesh (collective over world).
  TensorParallelTraining(const TrainConfig& cfg, comm::Communicator& world);

  tp::TpGroup group() const { return tp::TpGroup{&mesh_.tp(), cfg_.parallel().sequence_parallel()}; }
  comm::Communicator& dp() const { return mesh_.dp(); }
  int dp_rank() const { return mesh_.coord().dp; }
  int dp_size() const { return mesh_.shape().dp; }
  int tp_size() const { return mesh_.shape().tp; }

  // This rank's shards of the model, initialised as the single-process model with `seed`, or, with
  // init_from, cut from the whole Hugging Face checkpoint (loaded once per rank on the CPU).
  // owned_units (empty: all): the units of this rank's pipeline stage (StagePlan::owned_units()).
  std::unique_ptr<Gpt> make_model(const GptConfig& config, Device device, uint64_t seed,
                                  const std::string& init_from, std::vector<bool> owned_units = {}) const;
  // Once the engine holds the model's parameters: the gradient norm also sums over tp.
  void attach(zero::ZeroEngine& engine) const;
  // The whole model's parameter count (all tp shards; throughput and MFU use it).
  int64_t num_parameters(const GptConfig& config) const;
  // " x tp 2 (sequence parallel)" for the start-up line.
  std::string describe() const;

  // Note [TP checkpoints]. This rank's checkpoint directory under checkpoint.dir, and its writers
  // (save_checkpoint's group): the ranks with this rank's tp coordinate, i.e. the dp group, or with
  // pp > 1 the dp x pp ranks (pipeline rank = mesh pp coordinate).
  std::string checkpoint_dir(const std::string& dir) const;
  comm::Communicator& checkpoint_group() const { return same_tp_rank_ ? *same_tp_rank_ : mesh_.dp(); }
  // Where to resume from for checkpoint.resume: "auto" (the newest of this rank's series), "none",
  // or a path, to <dir>/step_N or to any tp rank's <dir>/tp_R_of_N/step_N. Collective over world:
  // throws unless every rank resumes from the same step.
  std::optional<std::string> resume_from(const zerotrain::CheckpointConfig& checkpoint) const;

 private:
  const TrainConfig& cfg_;
  comm::Communicator& world_;
  Mesh mesh_;
  std::unique_ptr<comm::Communicator> same_tp_rank_;  // pp > 1: the dp x pp ranks of this tp coordinate
};

}  // namespace zt

// Checkpoints: a directory per step, <dir>/step_00000100/, holding checkpoint.pb (metadata) and
// one shard file per rank that owns optimizer state (shard_00000.safetensors: each unit's f32
// master weights, exp_avg and exp_avg_sq for that rank's slice).
//
// Note [Checkpoint safety]: every rank writes its shard into <dir>/step_N.tmp/, reports the CRC-32
// of the bytes it meant to write; rank 0 reads every file back, compares, writes checkpoint.pb,
// and only then renames step_N.tmp to step_N. A directory named step_N is therefore complete, and
// an existing step_N is never overwritten (the trainer refuses to start a run whose saves would
// meet a later one). A crash leaves only step_*.tmp folders, which latest_checkpoint ignores and the
// next save removes. Loading checks every CRC and the model's dimensions.
//
// Shards are cut from each unit's unpadded flat layout (parallel/zero/flat_layout.h), so a
// checkpoint written with one data-parallel size or ZeRO stage loads into another.
//
// Note [Checkpoint pipeline stages]: with pipeline parallelism each pipeline rank's data-parallel
// ranks write the units that rank holds, to stage_<pp rank>_shard_<shard rank>.safetensors (pp = 1
// keeps shard_<shard rank>.safetensors). A loading rank finds each unit it holds by the tensor
// names in the files' headers, so a checkpoint also loads into another pipeline split, pp = 1
// included. The last stage's copy of the tied embedding (Note [Pipeline tied embedding]) is not
// saved: it equals unit 0's wte and is synced from it after loading.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "launch/checkpoint.pb.h"
#include "models/gpt.h"
#include "parallel/comm/communicator.h"
#include "parallel/zero/zero_engine.h"

namespace zt {

struct TrainingState {
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens_seen = 0;
  uint64_t seed = 0;
  uint64_t data_epoch = 0, data_part_index = 0, data_window_index = 0;
  int64_t data_window_tokens = 0;
  double loss_scale = 1.0;
  int64_t loss_scale_clean_steps = 0, loss_scale_skipped_steps = 0;
};

// Where this rank's shards sit in the pipeline (Note [Checkpoint pipeline stages]).
struct CheckpointPlacement {
  int pipeline_rank = 0;
  int pipeline_size = 1;
};

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);
uint32_t file_crc32(const std::string& path);

std::string checkpoint_dir_name(int64_t step);  // "step_00000100"

// Collective over `world` (every rank calls it). Returns the checkpoint's path.
std::string save_checkpoint(const std::string& dir, const TrainingState& state, zero::ZeroEngine& engine,
                            const GptConfig& model, const std::string& config_text, comm::Communicator& world,
                            int keep_last, const CheckpointPlacement& placement = {});

// The newest complete checkpoint under dir (by step), if any. Ignores *.tmp directories.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// The step of a checkpoint path (".../step_00000100" -> 100); nullopt if it is not named like one.
std::optional<int64_t> checkpoint_step(const std::string& path);

// Collective. Loads optimizer state into the engine (resharding as needed), refreshes the
// parameters, and returns the training state. Throws naming the file and what is wrong.
// Units the engine does not hold (other pipeline stages') are skipped.
TrainingState load_checkpoint(const std::string& path, zero::ZeroEngine& engine, const GptConfig& model);

}  // namespace zt

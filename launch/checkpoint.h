// Checkpoints: a directory per step, <dir>/step_00000100/, holding checkpoint.pb (metadata) and
// one shard file per rank that owns optimizer state (shard_00000.safetensors: each unit's f32
// master weights, exp_avg and exp_avg_sq for that rank's slice).
//
// Note [Checkpoint safety]: every rank writes its shard into <dir>/step_N.tmp/, reports the CRC-32
// of the bytes it meant to write; rank 0 reads every file back, compares, writes checkpoint.pb,
// and only then renames step_N.tmp to step_N. A directory named step_N is therefore complete, and
// an existing step_N is never overwritten. Loading checks every CRC and the model's dimensions.
//
// Shards are cut from each unit's unpadded flat layout (parallel/zero/flat_layout.h), so a
// checkpoint written with one data-parallel size or ZeRO stage loads into another.
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

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);
uint32_t file_crc32(const std::string& path);

std::string checkpoint_dir_name(int64_t step);  // "step_00000100"

// Collective over `world` (every rank calls it). Returns the checkpoint's path.
std::string save_checkpoint(const std::string& dir, const TrainingState& state, zero::ZeroEngine& engine,
                            const GptConfig& model, const std::string& config_text, comm::Communicator& world,
                            int keep_last);

// The newest complete checkpoint under dir (by step), if any. Ignores *.tmp directories.
std::optional<std::string> latest_checkpoint(const std::string& dir);

// Collective. Loads optimizer state into the engine (resharding as needed), refreshes the
// parameters, and returns the training state. Throws naming the file and what is wrong.
TrainingState load_checkpoint(const std::string& path, zero::ZeroEngine& engine, const GptConfig& model);

}  // namespace zt

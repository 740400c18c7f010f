// zerotrain's configuration: launch/config.proto read from protobuf text format, overridden from the
// command line, completed with presets and defaults, and validated once, here at the edge. Code past
// this point trusts the config and reads it through the typed accessors at the bottom.
//
// The order matters and load_config() does it for you:
//   1. parse_config_text / read_config_file   syntax and schema errors with file:line:column
//   2. apply_overrides                         "--set section.field=value", by reflection
//   3. resolve_config                          preset dimensions where unset, then every default
//                                              written out, so the printed config is complete
//   4. validate_config                         ranges and contradictions, all problems at once
//   5. validate_parallel(cfg, world_size)      once the number of ranks is known
// Every error is a zt::Error starting "[config] " that names the field path and what is accepted.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "launch/config.pb.h"
#include "models/checkpoint_policy.h"
#include "models/presets.h"

namespace zt {

using TrainConfig = zerotrain::TrainConfig;

// ---- loading ----------------------------------------------------------------------------------

// source_name is what errors call the text ("examples/tiny.pbtxt", "<string>").
TrainConfig parse_config_text(std::string_view text, std::string_view source_name = "<string>");
TrainConfig read_config_file(const std::string& path);

// One "path=value" assignment: path is section.field (e.g. optimizer.lr, model.preset); value is a
// number, true/false, an enum value name (presets also as 124M/350M/774M/1.5B, 1f1b for one_f_one_b),
// a string, or for repeated fields a comma-separated list (parallel.stage_split=6,6,6,6).
void apply_override(TrainConfig& cfg, std::string_view assignment);
void apply_overrides(TrainConfig& cfg, const std::vector<std::string>& assignments);

// Fills model dimensions from model.preset where the user left them unset, reconciles
// train.grad_accumulation with its synonym parallel.micro_batches, and writes every remaining default
// explicitly. Idempotent; run it after all overrides (a later preset override would not refill).
void resolve_config(TrainConfig& cfg);

// Every problem of a resolved config, one line each ("optimizer.lr = -1: must be > 0"); empty if valid.
std::vector<std::string> config_problems(const TrainConfig& cfg);
// Throws "[config] <problem>" or "[config] N problems:\n  <problem>\n  ..." when config_problems is not empty.
void validate_config(const TrainConfig& cfg);
// World-size consistency: dp x tp x pp must equal the number of ranks mpirun started.
void validate_parallel(const TrainConfig& cfg, int world_size);

// read_config_file + apply_overrides + resolve_config + validate_config.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The config as protobuf text format, every field written (after resolve_config), for run logs and
// checkpoint metadata; parse_config_text reads it back to an equal message.
std::string config_to_text(const TrainConfig& cfg);

// ---- typed accessors (for a resolved, validated config) --------------------------------------

enum class Precision { f32, bf16, fp16 };
enum class LrScheduleKind { warmup_cosine, linear, constant };
enum class DeviceChoice { auto_detect, cpu, cuda };
enum class PipelineScheduleKind { gpipe, one_f_one_b, interleaved };
enum class ActivationCheckpointing { none, full, selective };

const char* precision_name(Precision p);
const char* pipeline_schedule_name(PipelineScheduleKind s);
const char* activation_checkpointing_name(ActivationCheckpointing a);

std::optional<GptPreset> model_preset(const TrainConfig& cfg);  // nullopt for custom
GptDims model_dims(const TrainConfig& cfg);
Precision precision(const TrainConfig& cfg);
LrScheduleKind lr_schedule_kind(const TrainConfig& cfg);
DeviceChoice device_choice(const TrainConfig& cfg);
PipelineScheduleKind pipeline_schedule(const TrainConfig& cfg);
ActivationCheckpointing activation_checkpointing(const TrainConfig& cfg);
// parallel.activation_checkpointing, checkpoint_every_k_blocks and checkpoint_num_blocks as the
// models' policy (models/checkpoint_policy.h).
CheckpointPolicy checkpoint_policy(const TrainConfig& cfg);

// Blocks per model chunk in pipeline order: parallel.stage_split, or n_layer split evenly over
// pp * virtual_stages chunks. Chunk c runs on pipeline rank c % pp.
std::vector<int> blocks_per_chunk(const TrainConfig& cfg);

}  // namespace zt

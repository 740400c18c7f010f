// Flat unit layout for ZeRO (Note [Units] in models/gpt.h).
//
// A unit's parameters are laid end to end in one flat buffer of `numel` elements, padded with
// zeros to `padded` = shard * dp elements, where shard = ceil(numel / dp). Rank r owns elements
// [r * shard, (r + 1) * shard). The unpadded prefix does not depend on dp, which is what lets a
// checkpoint written with one world size be loaded with another.
#pragma once

#include <cstdint>
#include <vector>

namespace zt::zero {

// The part of one parameter that falls inside a rank's shard.
struct ShardSegment {
  int param = 0;               // index into the model's parameter list
  int64_t shard_begin = 0;     // [shard_begin, shard_end) within the shard
  int64_t shard_end = 0;
  int64_t param_begin = 0;     // where that range starts inside the parameter (flattened)
};

struct UnitLayout {
  int unit = 0;
  std::vector<int> params;        // model parameter indices, in flat order
  std::vector<int64_t> offsets;   // element offset of each parameter in the flat buffer
  std::vector<int64_t> sizes;     // numel of each parameter
  int64_t numel = 0;              // sum of sizes
  int64_t shard = 0;              // elements per rank
  int64_t padded = 0;             // shard * dp

  // The segments of parameters inside rank r's shard, in order (padding excluded).
  std::vector<ShardSegment> segments(int rank) const;
};

int64_t shard_elements(int64_t numel, int dp);  // ceil(numel / dp), at least 1

// Note [Partial optimizer offload]: which units' optimizer states live in host memory when a
// fraction f < 1 of them is offloaded (ZeroConfig::offload_optimizer_fraction, DeepSpeed's offload
// "ratio"). Walking from the last unit to the first, a unit is offloaded while that keeps the
// offloaded elements nearest to f x the total (a unit goes when at least half of it fits under the
// target). The last units come first because backward reduces them first: their gradients have
// the most backward compute left to hide their trip to the host behind, and the units kept on the
// device (the embeddings among them) run AdamW on the GPU while the CPU steps the others. Units of
// 0 elements (another pipeline stage's) are never offloaded. The estimator applies the same rule.
std::vector<bool> offloaded_units(const std::vector<int64_t>& unit_elements, double fraction);

// Lay out units: params_of_unit[u] lists the parameter indices of unit u with their sizes.
UnitLayout make_unit_layout(int unit, const std::vector<int>& params, const std::vector<int64_t>& sizes, int dp);

}  // namespace zt::zero

// What activation checkpointing recomputes (Note [Checkpointing modes] in models/checkpointing.h).
// A header of its own so that models/gpt.h can take a policy without including checkpointing.h,
// which includes gpt.h.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zt {

enum class Recompute : uint8_t { none, full, selective };

struct CheckpointPolicy {
  Recompute mode = Recompute::none;
  int every_k_blocks = 1;  // full: blocks per checkpointed segment
  int num_blocks = 0;      // full: how many of the blocks (from the first) are checkpointed; 0: all
  bool selective() const { return mode == Recompute::selective; }
  // Of `count` blocks run together (the model, or one pipeline chunk), how many from the first are
  // checkpointed: num_blocks, at most count; all of them for 0; none unless full.
  int checkpointed_blocks(int count) const {
    if (mode != Recompute::full) return 0;
    return num_blocks == 0 ? count : std::min(num_blocks, count);
  }
  void validate() const;  // throws naming the field
};

}  // namespace zt

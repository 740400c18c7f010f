// Splitting a model's L transformer blocks into the S = pp * v contiguous pipeline stages (Note [Pipeline
// stages and chunks] in schedule.h): balanced by per-block cost, or as the user lists them
// (parallel.stage_split in config.proto).
#pragma once

#include <vector>

namespace zt::pipeline {

struct PartitionCosts {
  std::vector<double> blocks;    // cost of each block in model order, e.g. its parameter count or FLOPs
  double first_stage_extra = 0;  // what only the first stage holds, e.g. the token and position embeddings
  double last_stage_extra = 0;   // what only the last stage holds, e.g. the final norm and the LM head
};

struct StagePartition {
  std::vector<int> sizes;  // blocks per stage, in pipeline order; every stage has at least one

  int num_stages() const { return static_cast<int>(sizes.size()); }
  int num_blocks() const;
  int begin(int stage) const;  // first block of `stage`
  int end(int stage) const;    // one past its last block
};

// The contiguous split minimising the costliest stage (the pipeline's pace), and among those the sum of
// squared stage costs (no needlessly lopsided stages). Remaining ties give later stages the larger share.
// Exact (dynamic programming, O(S * L^2)). Throws zt::Error when L < S or a cost is negative or not finite.
StagePartition balanced_partition(const PartitionCosts& costs, int num_stages);

// A user-given split, checked: one entry per stage, each >= 1, summing to num_blocks.
StagePartition partition_from_sizes(const std::vector<int>& sizes, int num_blocks, int num_stages);

// The cost of each stage of `partition` under `costs`, extras included.
std::vector<double> stage_costs(const StagePartition& partition, const PartitionCosts& costs);

}  // namespace zt::pipeline

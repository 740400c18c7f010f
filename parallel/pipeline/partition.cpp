#include "parallel/pipeline/partition.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace zt::pipeline {
namespace {

constexpr const char* kApi = "pipeline";
constexpr double kInf = std::numeric_limits<double>::infinity();

void check_costs(const PartitionCosts& costs, int num_stages) {
  const size_t blocks = costs.blocks.size();
  ZT_CHECK(num_stages >= 1, kApi, "a partition needs at least one stage (got ", num_stages, ")");
  ZT_CHECK(blocks >= static_cast<size_t>(num_stages), kApi, "cannot split ", blocks, " blocks into ", num_stages,
           " stages (pp x virtual chunks): every stage needs at least one block");
  for (size_t i = 0; i < blocks; ++i) {
    ZT_CHECK(std::isfinite(costs.blocks[i]) && costs.blocks[i] >= 0, kApi, "block ", i, " has cost ", costs.blocks[i],
             "; block costs must be finite and >= 0");
  }
  for (double extra : {costs.first_stage_extra, costs.last_stage_extra}) {
    ZT_CHECK(std::isfinite(extra) && extra >= 0, kApi, "first and last stage extras must be finite and >= 0 (got ",
             costs.first_stage_extra, ", ", costs.last_stage_extra, ")");
  }
}

// Cost of stage s holding blocks [i, j), from prefix sums.
struct StageCost {
  const std::vector<double>& prefix;
  const PartitionCosts& costs;
  int stages;
  double operator()(int s, int i, int j) const {
    double c = prefix[j] - prefix[i];
    if (s == 0) c += costs.first_stage_extra;
    if (s == stages - 1) c += costs.last_stage_extra;
    return c;
  }
};

// Shortest-path style DP over (stage, blocks used): best[s][j] is the best value of stages 0..s covering
// blocks [0, j), combining each stage's cost with `combine` (max for the pace, + for the spread) and
// skipping stages costlier than `limit`. Returns the value for all stages and fills `cut` to rebuild.
template <typename Combine, typename Score>
double solve(const StageCost& cost, int blocks, int stages, double limit, Combine combine, Score score,
             std::vector<std::vector<int>>& cut) {
  std::vector<std::vector<double>> best(stages, std::vector<double>(blocks + 1, kInf));
  cut.assign(stages, std::vector<int>(blocks + 1, -1));
  for (int s = 0; s < stages; ++s) {
    // Stage s ends at j; stages before it need >= s blocks and those after it >= stages - 1 - s.
    for (int j = s + 1; j <= blocks - (stages - 1 - s); ++j) {
      for (int i = s; i < j; ++i) {
        const double before = s == 0 ? (i == 0 ? 0.0 : kInf) : best[s - 1][i];
        const double c = cost(s, i, j);
        if (before == kInf || c > limit) continue;
        const double value = combine(before, score(c));
        if (value < best[s][j]) {  // strict: the earliest start wins ties, so later stages grow
          best[s][j] = value;
          cut[s][j] = i;
        }
      }
    }
  }
  return best[stages - 1][blocks];
}

}  // namespace

int StagePartition::num_blocks() const { return std::accumulate(sizes.begin(), sizes.end(), 0); }

int StagePartition::begin(int stage) const {
  ZT_CHECK(stage >= 0 && stage < num_stages(), kApi, "stage ", stage, " is not in [0, ", num_stages(), ")");
  return std::accumulate(sizes.begin(), sizes.begin() + stage, 0);
}

int StagePartition::end(int stage) const { return begin(stage) + sizes[stage]; }

StagePartition balanced_partition(const PartitionCosts& costs, int num_stages) {
  check_costs(costs, num_stages);
  const int blocks = static_cast<int>(costs.blocks.size());
  std::vector<double> prefix(blocks + 1, 0.0);
  for (int i = 0; i < blocks; ++i) prefix[i + 1] = prefix[i] + costs.blocks[i];
  const StageCost cost{prefix, costs, num_stages};
  std::vector<std::vector<int>> cut;
  const double pace = solve(
      cost, blocks, num_stages, kInf, [](double a, double b) { return std::max(a, b); }, [](double c) { return c; },
      cut);
  // Second pass: stages may cost up to the optimal pace (with slack for rounding of the prefix sums).
  const double total = prefix[blocks] + costs.first_stage_extra + costs.last_stage_extra;
  const double limit = pace + 1e-12 * std::max(1.0, total);
  solve(
      cost, blocks, num_stages, limit, [](double a, double b) { return a + b; }, [](double c) { return c * c; }, cut);
  StagePartition partition;
  partition.sizes.assign(num_stages, 0);
  for (int s = num_stages - 1, j = blocks; s >= 0; --s) {
    const int i = cut[s][j];
    ZT_CHECK(i >= 0, kApi, "internal error: no split of ", blocks, " blocks into ", num_stages, " stages found");
    partition.sizes[s] = j - i;
    j = i;
  }
  return partition;
}

StagePartition partition_from_sizes(const std::vector<int>& sizes, int num_blocks, int num_stages) {
  ZT_CHECK(static_cast<int>(sizes.size()) == num_stages, kApi, "stage split has ", sizes.size(),
           " entries but the pipeline has ", num_stages, " stages (pp x virtual chunks)");
  long sum = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    ZT_CHECK(sizes[s] >= 1, kApi, "stage split entry ", s, " is ", sizes[s], "; every stage needs at least one block");
    sum += sizes[s];
  }
  ZT_CHECK(sum == num_blocks, kApi, "stage split sums to ", sum, " blocks but the model has ", num_blocks);
  return StagePartition{sizes};
}

std::vector<double> stage_costs(const StagePartition& partition, const PartitionCosts& costs) {
  ZT_CHECK(partition.num_blocks() == static_cast<int>(costs.blocks.size()), kApi, "partition covers ",
           partition.num_blocks(), " blocks but costs are given for ", costs.blocks.size());
  std::vector<double> out;
  int next = 0;
  for (int s = 0; s < partition.num_stages(); ++s) {
    double c = 0;
    for (int k = 0; k < partition.sizes[s]; ++k) c += costs.blocks[next++];
    if (s == 0) c += costs.first_stage_extra;
    if (s == partition.num_stages() - 1) c += costs.last_stage_extra;
    out.push_back(c);
  }
  return out;
}

}  // namespace zt::pipeline

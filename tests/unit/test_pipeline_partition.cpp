// Pipeline stage partitioning against brute force over every contiguous split.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/pipeline/partition.h"

namespace zt::pipeline {
namespace {

// Every split of `blocks` into `stages` non-empty contiguous parts.
void for_each_split(int blocks, int stages, const std::function<void(const std::vector<int>&)>& visit) {
  std::vector<int> sizes;
  std::function<void(int, int)> rec = [&](int left, int stages_left) {
    if (stages_left == 0) {
      if (left == 0) visit(sizes);
      return;
    }
    for (int take = 1; take <= left - (stages_left - 1); ++take) {
      sizes.push_back(take);
      rec(left - take, stages_left - 1);
      sizes.pop_back();
    }
  };
  rec(blocks, stages);
}

// Stage costs computed by plain loops, independently of the library.
std::vector<double> naive_costs(const std::vector<int>& sizes, const PartitionCosts& c) {
  std::vector<double> out;
  size_t next = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    double sum = 0;
    for (int k = 0; k < sizes[s]; ++k) sum += c.blocks[next++];
    if (s == 0) sum += c.first_stage_extra;
    if (s + 1 == sizes.size()) sum += c.last_stage_extra;
    out.push_back(sum);
  }
  return out;
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double squares(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0, [](double a, double x) { return a + x * x; });
}

TEST(PipelinePartition, BalancedMatchesBruteForce) {
  std::mt19937 rng(20240520);
  std::uniform_real_distribution<double> block(0.1, 10.0), extra(0.0, 15.0);
  for (int blocks = 1; blocks <= 9; ++blocks) {
    for (int stages = 1; stages <= std::min(blocks, 6); ++stages) {
      for (int trial = 0; trial < 4; ++trial) {
        PartitionCosts costs;
        for (int i = 0; i < blocks; ++i) costs.blocks.push_back(block(rng));
        costs.first_stage_extra = trial % 2 ? extra(rng) : 0.0;
        costs.last_stage_extra = trial >= 2 ? extra(rng) : 0.0;
        double best_pace = std::numeric_limits<double>::infinity();
        for_each_split(blocks, stages, [&](const std::vector<int>& s) {
          best_pace = std::min(best_pace, max_of(naive_costs(s, costs)));
        });
        double best_spread = std::numeric_limits<double>::infinity();
        for_each_split(blocks, stages, [&](const std::vector<int>& s) {
          const auto c = naive_costs(s, costs);
          if (max_of(c) <= best_pace * (1 + 1e-12)) best_spread = std::min(best_spread, squares(c));
        });
        const StagePartition p = balanced_partition(costs, stages);
        SCOPED_TRACE("blocks " + std::to_string(blocks) + " stages " + std::to_string(stages));
        ASSERT_EQ(p.num_stages(), stages);
        EXPECT_EQ(p.num_blocks(), blocks);
        for (int size : p.sizes) EXPECT_GE(size, 1);
        const auto got = naive_costs(p.sizes, costs);
        EXPECT_NEAR(max_of(got), best_pace, 1e-9 * best_pace);
        EXPECT_NEAR(squares(got), best_spread, 1e-9 * best_spread);
        const auto reported = stage_costs(p, costs);
        ASSERT_EQ(reported.size(), got.size());
        for (size_t s = 0; s < got.size(); ++s) EXPECT_NEAR(reported[s], got[s], 1e-12 * best_pace);
      }
    }
  }
}

TEST(PipelinePartition, UniformBlocksSplitEvenlyLaterStagesLarger) {
  EXPECT_EQ(balanced_partition({std::vector<double>(10, 1.0)}, 4).sizes, (std::vector<int>{2, 2, 3, 3}));
  EXPECT_EQ(balanced_partition({std::vector<double>(12, 7.0)}, 4).sizes, (std::vector<int>{3, 3, 3, 3}));
  EXPECT_EQ(balanced_partition({std::vector<double>(5, 1.0)}, 5).sizes, (std::vector<int>(5, 1)));
  // Embeddings on the first stage and the head on the last take the place of blocks there.
  EXPECT_EQ(balanced_partition({std::vector<double>(8, 1.0), 3.0, 3.0}, 4).sizes, (std::vector<int>{1, 3, 3, 1}));
}

TEST(PipelinePartition, BeginAndEnd) {
  const StagePartition p = partition_from_sizes({2, 3, 1}, 6, 3);
  EXPECT_EQ(p.begin(0), 0);
  EXPECT_EQ(p.end(0), 2);
  EXPECT_EQ(p.begin(1), 2);
  EXPECT_EQ(p.end(2), 6);
  EXPECT_THROW(p.begin(3), Error);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(PipelinePartition, RejectsBadInputWithClearMessages) {
  EXPECT_EQ(error_of([] {
              partition_from_sizes({3, 3, 3}, 12, 4);
            }),
            "[pipeline] stage split has 3 entries but the pipeline has 4 stages (pp x virtual chunks)");
  EXPECT_EQ(error_of([] {
              partition_from_sizes({6, 0, 3, 3}, 12, 4);
            }),
            "[pipeline] stage split entry 1 is 0; every stage needs at least one block");
  EXPECT_EQ(error_of([] {
              partition_from_sizes({3, 3, 3, 2}, 12, 4);
            }),
            "[pipeline] stage split sums to 11 blocks but the model has 12");
  EXPECT_EQ(
      error_of([] { balanced_partition({std::vector<double>(3, 1.0)}, 4); }),
      "[pipeline] cannot split 3 blocks into 4 stages (pp x virtual chunks): every stage needs at least one block");
  EXPECT_EQ(error_of([] {
              balanced_partition({{1.0, -2.0, 1.0}}, 2);
            }),
            "[pipeline] block 1 has cost -2; block costs must be finite and >= 0");
  EXPECT_EQ(error_of([] {
              balanced_partition({{1.0, std::nan(""), 1.0}}, 2);
            }),
            "[pipeline] block 1 has cost nan; block costs must be finite and >= 0");
  EXPECT_EQ(error_of([] {
              balanced_partition({{1.0, 1.0}, -1.0, 0.0}, 2);
            }),
            "[pipeline] first and last stage extras must be finite and >= 0 (got -1, 0)");
  EXPECT_EQ(error_of([] { balanced_partition({{1.0}}, 0); }),
            "[pipeline] a partition needs at least one stage (got 0)");
  EXPECT_EQ(error_of([] {
              stage_costs(partition_from_sizes({1, 1}, 2, 2), {{1.0, 2.0, 3.0}});
            }),
            "[pipeline] partition covers 2 blocks but costs are given for 3");
}

}  // namespace
}  // namespace zt::pipeline

// Note [Choosing among timed GEMM candidates]: the tuner's choice from its timed rounds, against
// choices worked out by hand, including the clock drop measured on an H200 that made the earlier
// best-round rule pick a slower algorithm.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/gemm_candidates.h"

namespace zt {
namespace {

using Rounds = std::vector<std::vector<float>>;

TEST(GemmCandidates, OrderRotatesSoEachCandidateLeadsOneRound) {
  EXPECT_EQ(gemm_candidate_order(4, 0), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(gemm_candidate_order(4, 1), (std::vector<int>{1, 2, 3, 0}));
  EXPECT_EQ(gemm_candidate_order(4, 6), (std::vector<int>{2, 3, 0, 1}));
  std::set<int> leaders;
  for (int r = 0; r < 5; ++r) {
    const std::vector<int> order = gemm_candidate_order(5, r);
    EXPECT_EQ(std::set<int>(order.begin(), order.end()).size(), 5u);  // every candidate, once
    leaders.insert(order[0]);
  }
  EXPECT_EQ(leaders.size(), 5u);
  EXPECT_EQ(gemm_candidate_order(1, 3), (std::vector<int>{0}));
}

TEST(GemmCandidates, MedianRoundDecidesNotTheBestOne) {
  // Candidate 1 ran its first round before the clocks dropped (0.90) and is slower in every round
  // after; candidate 0 is steady. The best round would pick 1; the median keeps 0.
  const Rounds t = {{1.00f, 0.90f}, {1.00f, 1.06f}, {1.01f, 1.07f}, {0.99f, 1.06f}, {1.00f, 1.05f}};
  std::vector<float> scores;
  EXPECT_EQ(choose_gemm_candidate(t, 0.02f, &scores), 0);
  EXPECT_FLOAT_EQ(scores[0], 1.00f);
  EXPECT_FLOAT_EQ(scores[1], 1.06f);
}

TEST(GemmCandidates, FasterCandidateWinsOnlyPastTheMargin) {
  const Rounds clear = {{1.00f, 0.95f, 0.90f}, {1.00f, 0.94f, 0.91f}, {1.02f, 0.95f, 0.89f}};
  EXPECT_EQ(choose_gemm_candidate(clear, 0.02f), 2);
  // 1.5% faster: inside the margin, so cuBLASLt's first choice stays.
  const Rounds close = {{1.000f, 0.985f}, {1.000f, 0.985f}, {1.000f, 0.985f}};
  EXPECT_EQ(choose_gemm_candidate(close, 0.02f), 0);
  EXPECT_EQ(choose_gemm_candidate(close, 0.0f), 1);
  // Among candidates past the margin the lowest median wins, not the first one found.
  const Rounds two = {{1.0f, 0.95f, 0.96f, 0.93f}, {1.0f, 0.95f, 0.96f, 0.94f}, {1.0f, 0.96f, 0.90f, 0.94f}};
  EXPECT_EQ(choose_gemm_candidate(two, 0.02f), 3);
}

TEST(GemmCandidates, OneSlowRoundNeverDecides) {
  // A round another stream disturbed: the median ignores it (even count: the lower median).
  const Rounds t = {{1.0f, 0.95f}, {1.0f, 3.00f}, {1.0f, 0.95f}, {1.0f, 0.96f}};
  EXPECT_EQ(choose_gemm_candidate(t, 0.02f), 1);
  const Rounds slow_first = {{5.0f, 0.97f}, {1.0f, 0.97f}, {1.0f, 0.97f}, {1.0f, 0.97f}};
  std::vector<float> scores;
  EXPECT_EQ(choose_gemm_candidate(slow_first, 0.02f, &scores), 1);
  EXPECT_FLOAT_EQ(scores[0], 1.0f);
}

TEST(GemmCandidates, SkipsCandidatesThatCannotRun) {
  const Rounds t = {{1.0f, -1.0f, 0.97f}, {1.0f, -1.0f, 0.97f}, {1.0f, -1.0f, 0.98f}};
  std::vector<float> scores;
  EXPECT_EQ(choose_gemm_candidate(t, 0.02f, &scores), 2);
  EXPECT_LT(scores[1], 0.0f);
  EXPECT_EQ(choose_gemm_candidate({{0.5f}}, 0.02f), 0);  // one candidate, one round
}

TEST(GemmCandidates, BadInputIsNamed) {
  EXPECT_THROW(choose_gemm_candidate({}, 0.02f), Error);
  EXPECT_THROW(choose_gemm_candidate({{-1.0f, 0.5f}}, 0.02f), Error);        // first choice untimed
  EXPECT_THROW(choose_gemm_candidate({{1.0f, 0.5f}, {1.0f}}, 0.02f), Error);  // ragged rounds
  try {
    choose_gemm_candidate({{1.0f}}, 1.5f);
    FAIL() << "a margin of 1.5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("margin must be in [0, 1)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zt

#include "core/gemm_candidates.h"

#include <algorithm>

#include "core/error.h"

namespace zt {

std::vector<int> gemm_candidate_order(int count, int round) {
  std::vector<int> order(static_cast<size_t>(std::max(count, 0)));
  for (int i = 0; i < count; ++i) order[static_cast<size_t>(i)] = (i + round) % count;
  return order;
}

int choose_gemm_candidate(const std::vector<std::vector<float>>& times, float margin, std::vector<float>* scores) {
  const char* api = "choose_gemm_candidate";
  ZT_CHECK(!times.empty() && !times[0].empty(), api, "needs at least one round of at least one candidate");
  ZT_CHECK(margin >= 0 && margin < 1, api, "margin must be in [0, 1), got ", margin);
  const size_t count = times[0].size();
  std::vector<float> median(count, -1.0f);
  for (size_t c = 0; c < count; ++c) {
    std::vector<float> v;
    for (const std::vector<float>& round : times) {
      ZT_CHECK(round.size() == count, api, "every round needs ", count, " candidates, got one with ", round.size());
      if (round[c] >= 0) v.push_back(round[c]);
    }
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    // The lower median of an even count: a single slow outlier round never decides.
    median[c] = v[(v.size() - 1) / 2];
  }
  ZT_CHECK(median[0] >= 0, api, "candidate 0 (cuBLASLt's first choice) has no timing");
  size_t chosen = 0;
  for (size_t c = 1; c < count; ++c)
    if (median[c] >= 0 && median[c] < median[chosen] && median[c] < median[0] * (1 - margin)) chosen = c;
  if (scores != nullptr) *scores = median;
  return static_cast<int>(chosen);
}

}  // namespace zt

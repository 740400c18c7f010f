// Note [Choosing among timed GEMM candidates]: the tuner (Note [GEMM autotuning] in
// kernels/cuda/gemm.cu) times cuBLASLt's candidate algorithms for a product in interleaved rounds
// and picks one here. Two things measured on an H200 shape the rule:
//  - The GPU's clocks drop part-way through a burst of large products (nvidia-smi names the
//    software power cap: 1980 MHz for about a second, then 1485-1905 MHz): in one
//    trace, GPT-2 124M's fc dx product ran at 105 us in the first round and 118-120 us in every
//    round after, and in the benchmark's steady state after that. A candidate's best round then
//    mostly says whether it happened to run before the drop, which is how taking the minimum
//    picked algorithms that were slower in the steady state. So a candidate's score is its median
//    over the rounds, and each round starts with a different candidate (gemm_candidate_order), so
//    that none is always the one timed first after the host's wait.
//  - Most candidates land within a few percent of cuBLASLt's first choice; the first choice is kept
//    unless another scores at least `margin` lower, so noise alone never trades it for an equal one.
// This is plain arithmetic on timings; it builds without CUDA, so the CPU tests cover it.
#pragma once

#include <vector>

namespace zt {

// The order the candidates are timed in round `round`: 0..count-1 rotated by the round.
std::vector<int> gemm_candidate_order(int count, int round);

// times[r][c]: milliseconds of candidate c in round r, negative where the candidate cannot run
// (skipped in every round). Candidate 0 is cuBLASLt's first choice and must run. Returns the
// chosen index; `scores`, when given, receives each candidate's median (negative where skipped).
int choose_gemm_candidate(const std::vector<std::vector<float>>& times, float margin,
                          std::vector<float>* scores = nullptr);

}  // namespace zt

// Note [GEMM tuning file]: with train.gemm_algorithms = tuned, the first call of each matrix
// product times cuBLASLt's candidate algorithms and keeps the fastest (Note [GEMM autotuning] in
// kernels/cuda/gemm.cu). Timings differ from run to run and from rank to rank, so the choices are
// written down: after the first step every rank's choices are gathered, merged (the lowest rank's
// choice wins where two ranks timed the same problem), handed back to every rank, and written to
// the tuning file (launch/gemm_tuning_sync.h). A run that finds the file uses its choices from its
// first product on, so it repeats itself bit for bit, a resumed run continues with the algorithms
// the interrupted one used, and all ranks round a problem the same way.
//
// The file is text, one problem per line, under a header naming the library, the GPU and its
// multiprocessor count: a choice is valid only for the cuBLASLt version and GPU model that timed it,
// so a file from elsewhere is set aside whole (and rewritten) rather than half used. This header is
// the format only; it builds without CUDA, so the CPU tests cover it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zt {

// One problem (the fields of the CUDA backend's GemmKey, in its order) and cuBLASLt's algorithm
// for it: cublasLtMatmulAlgo_t is 8 opaque 64-bit words, which the library documents as safe to
// store and reuse with the same library version.
struct GemmTuningEntry {
  static constexpr int kKeyFields = 17;
  std::array<int64_t, kKeyFields> key{};
  std::array<uint64_t, 8> algorithm{};
  bool operator==(const GemmTuningEntry&) const = default;
};

struct GemmTuning {
  std::string library;  // e.g. "cuBLASLt 130000 | NVIDIA H200 | sm_90 | 132 SMs"
  std::vector<GemmTuningEntry> entries;
  bool operator==(const GemmTuning&) const = default;
};

std::string format_gemm_tuning(const GemmTuning& tuning);
// Throws zt::Error naming `source` and the line for anything that is not this format.
GemmTuning parse_gemm_tuning(std::string_view text, const std::string& source);
// One entry per problem, in first-seen order; where tables disagree, the earlier table's choice wins.
// Tables for another library than the first are skipped.
GemmTuning merge_gemm_tuning(const std::vector<GemmTuning>& tables);

}  // namespace zt

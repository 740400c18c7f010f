// The GEMM state's choices in and out of a tuning table (Note [GEMM tuning file] in
// core/gemm_tuning.h; the state in kernels/cuda/gemm_state.h).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/cuda_support.h"
#include "kernels/cuda/gemm_state.h"
#include "kernels/cuda/runtime.h"

namespace zt::cuda {

static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(GemmTuningEntry::algorithm),
              "cublasLtMatmulAlgo_t is no longer 8 words: the tuning file's format must change");

std::array<int64_t, GemmTuningEntry::kKeyFields> key_fields(const GemmKey& k) {
  return {k.dtype, k.epilogue, k.transpose_a, k.transpose_b, k.accumulate, k.batched, k.m, k.n, k.k,
          k.batch, k.stride_a, k.stride_b, k.stride_c, k.align_a, k.align_b, k.align_c, k.align_bias};
}

GemmKey key_from_fields(const std::array<int64_t, GemmTuningEntry::kKeyFields>& f) {
  GemmKey k;
  k.dtype = static_cast<int32_t>(f[0]);
  k.epilogue = static_cast<int32_t>(f[1]);
  k.transpose_a = f[2] != 0;
  k.transpose_b = f[3] != 0;
  k.accumulate = f[4] != 0;
  k.batched = f[5] != 0;
  k.m = f[6];
  k.n = f[7];
  k.k = f[8];
  k.batch = f[9];
  k.stride_a = f[10];
  k.stride_b = f[11];
  k.stride_c = f[12];
  k.align_a = static_cast<int32_t>(f[13]);
  k.align_b = static_cast<int32_t>(f[14]);
  k.align_c = static_cast<int32_t>(f[15]);
  k.align_bias = static_cast<int32_t>(f[16]);
  return k;
}

void log_gemm_tuning(const std::string& problem, const std::vector<float>& ms_per_call, const std::vector<bool>& runs,
                     int chosen) {
  std::string line = fmt::format("[gemm tuning] {}: median ms per call", problem);
  for (size_t i = 0; i < ms_per_call.size(); ++i)
    line += runs[i] ? fmt::format(" {:.4f}", ms_per_call[i]) : std::string(" -");
  fmt::print(stderr, "{}; chose candidate {}\n", line, chosen);
}

void set_gemm_autotune(int device, bool on) {
  GemmState& state = DeviceContext::get(device).gemm_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.autotune = on;
}

// Everything a choice depends on besides the problem: the library's version and the GPU (its model
// and how many multiprocessors it has, which sets how a product is split into tiles).
std::string gemm_library(int device) {
  const cudaDeviceProp& p = DeviceContext::get(device).properties();
  return fmt::format("cuBLASLt {} | {} | sm_{}{} | {} SMs", cublasLtGetVersion(), p.name, p.major, p.minor,
                     p.multiProcessorCount);
}

GemmTuning gemm_tuning(int device) {
  GemmTuning out;
  out.library = gemm_library(device);
  GemmState& state = DeviceContext::get(device).gemm_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  auto add = [&out](const GemmKey& key, const cublasLtMatmulAlgo_t& algo) {
    GemmTuningEntry e;
    e.key = key_fields(key);
    std::memcpy(e.algorithm.data(), &algo, sizeof(algo));
    out.entries.push_back(e);
  };
  for (const auto& [key, algo] : state.tuned) add(key, algo);
  for (const auto& [key, algo] : state.imported) add(key, algo);  // not yet called here: kept for the file
  std::sort(out.entries.begin(), out.entries.end(),
            [](const GemmTuningEntry& a, const GemmTuningEntry& b) { return a.key < b.key; });
  return out;
}

bool use_gemm_tuning(int device, const GemmTuning& tuning) {
  if (tuning.library != gemm_library(device)) return false;
  GemmState& state = DeviceContext::get(device).gemm_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  for (const GemmTuningEntry& e : tuning.entries) {
    const GemmKey key = key_from_fields(e.key);
    cublasLtMatmulAlgo_t algo;
    std::memcpy(&algo, e.algorithm.data(), sizeof(algo));
    state.algorithms.erase(key);  // chosen again, from the table, at the next call
    state.tuned.erase(key);
    state.imported[key] = algo;
  }
  return true;
}

}  // namespace zt::cuda

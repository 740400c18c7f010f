// The per-device state of the cuBLASLt GEMMs, owned by the device context (Note [Per-device
// context]): the handle, one 32 MiB workspace per stream (two streams must never share one while
// both may run), and the heuristic's choice of algorithm per problem, so the heuristic (tens of
// microseconds) runs once per shape, not once per call.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/gemm_tuning.h"

namespace zt::cuda {

// Everything that can change the algorithm cuBLASLt picks (pointers only through their alignment).
struct GemmKey {
  int32_t dtype = 0;  // zt::DType
  int32_t epilogue = 0;
  bool transpose_a = false, transpose_b = false, accumulate = false, batched = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  int32_t align_a = 0, align_b = 0, align_c = 0, align_bias = 0;

  bool operator==(const GemmKey&) const = default;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<uint64_t>(k.dtype) | static_cast<uint64_t>(k.epilogue) << 8 |
        static_cast<uint64_t>(k.transpose_a) << 16 | static_cast<uint64_t>(k.transpose_b) << 17 |
        static_cast<uint64_t>(k.accumulate) << 18 | static_cast<uint64_t>(k.batched) << 19);
    for (int64_t v : {k.m, k.n, k.k, k.batch, k.stride_a, k.stride_b, k.stride_c}) mix(static_cast<uint64_t>(v));
    mix(static_cast<uint64_t>(k.align_a) | static_cast<uint64_t>(k.align_b) << 16 |
        static_cast<uint64_t>(k.align_c) << 32 | static_cast<uint64_t>(k.align_bias) << 48);
    return static_cast<size_t>(h);
  }
};

struct GemmState {
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  explicit GemmState(int device);
  ~GemmState();
  GemmState(const GemmState&) = delete;
  GemmState& operator=(const GemmState&) = delete;

  void* workspace(cudaStream_t stream);  // call with `mutex` held

  int device;
  cublasLtHandle_t handle = nullptr;
  bool autotune = false;  // ZT_GEMM_AUTOTUNE=1 (Note [GEMM autotuning] in gemm.cu)
  bool log_tuning = false;  // ZT_GEMM_TUNING_LOG=1: the timings behind each choice, on stderr
  std::mutex mutex;  // guards the maps below
  std::unordered_map<cudaStream_t, void*> workspaces;
  // nullopt: cuBLASLt has no algorithm (remembered so a declined epilogue is not asked again).
  std::unordered_map<GemmKey, std::optional<cublasLtMatmulAlgo_t>, GemmKeyHash> algorithms;
  // Note [GEMM tuning file]: the choices made with autotuning on (what gemm_tuning exports), and
  // those taken from a table that wait for their problem's first call (checked against it then).
  std::unordered_map<GemmKey, cublasLtMatmulAlgo_t, GemmKeyHash> tuned;
  std::unordered_map<GemmKey, cublasLtMatmulAlgo_t, GemmKeyHash> imported;
};

// ZT_GEMM_TUNING_LOG=1: one stderr line per timed problem, each candidate's milliseconds per call
// ("-" for one that cannot run) and the index chosen (kernels/cuda/gemm_tuning.cpp).
void log_gemm_tuning(const std::string& problem, const std::vector<float>& ms_per_call, const std::vector<bool>& runs,
                     int chosen);

// The key as the tuning file's fields (core/gemm_tuning.h), and back.
std::array<int64_t, GemmTuningEntry::kKeyFields> key_fields(const GemmKey& key);
GemmKey key_from_fields(const std::array<int64_t, GemmTuningEntry::kKeyFields>& fields);

}  // namespace zt::cuda

// Causal / full attention through cuDNN's fused SDPA (flash attention) graphs, built with cuDNN's
// C++ frontend (header-only; scripts/lib/setup.sh fetches it into .deps/cudnn_frontend).
//
// Why beside our own kernels (attention_forward.cuh, attention_backward.cuh): on Hopper cuDNN's
// SDPA uses wgmma and TMA, which our mma.sync kernels do not; measured on an H200 it is the faster
// path (docs/performance.md). Ours stay as the fallback for builds without the frontend, cuDNN
// versions or shapes it declines, and as the reference the tests hold both to.
//
// The graphs take q, k, v and dO in any [B, H, T, D] strides with a unit D stride (Note [Attention
// layouts]), so the packed qkv projection is read in place and [B, T, H, D] outputs are written
// directly. Built graphs are cached per device and problem (SdpaState).
//
// Note [Deterministic attention]: by default the backward asks for cuDNN's deterministic algorithm,
// so results do not depend on block scheduling, as with our kernels: two runs of a training job
// give the same bits. The non-deterministic one accumulates dQ with atomics and is a few percent
// faster (docs/performance.md); it is an explicit opt-in (ZT_CUDNN_ATTENTION=nondeterministic,
// kernels/cuda/runtime.cpp), the deterministic graph and the other are cached under different keys.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/tensor.h"

namespace zt::cuda {

struct SdpaGraph;  // one built cuDNN graph (attention_cudnn.cpp)

// Per device: the cuDNN handle and the graphs built so far (a declined problem is remembered as
// nullptr so it is not asked again).
struct SdpaState {
  explicit SdpaState(int device);
  ~SdpaState();
  SdpaState(const SdpaState&) = delete;
  SdpaState& operator=(const SdpaState&) = delete;

  int device;
  void* handle = nullptr;  // cudnnHandle_t (kept opaque so that builds without cuDNN need no cudnn.h)
  std::mutex mutex;
  std::unordered_map<std::string, std::shared_ptr<SdpaGraph>> graphs;
};

// Whether this build has the cuDNN path at all (compiled with the frontend).
bool cudnn_sdpa_compiled();

// out [B, H, T, D] (any strides, unit D stride) and lse f32 [B, H, T] contiguous are written;
// returns false, having written nothing, when cuDNN has no engine for the problem.
bool cudnn_sdpa_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, bool causal,
                        double scale);

// dq, dk, dv (allocated by the caller, any strides with a unit D stride) from the forward's out and
// lse; returns false, having written nothing, when cuDNN has no engine for the problem.
bool cudnn_sdpa_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv, bool causal, double scale,
                         bool deterministic);

}  // namespace zt::cuda

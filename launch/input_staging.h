// Token ids of a step onto the training device without stalling it.
//
// Why: a plain upload from a std::vector is a copy from pageable memory, which waits for the whole
// stream to drain (Backend::copy_bytes); two of those per micro-batch left the GPU idle while the
// host started the next step. Here the ids go into page-locked buffers (two sets, used in turn)
// and are copied with cuda::upload_async; a buffer is rewritten only after the fence of its last
// copy has passed, which, one step later, it long has. On the CPU the ids are simply wrapped.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/cuda_support.h"
#include "core/tensor.h"

namespace zt {

class InputStaging {
 public:
  explicit InputStaging(Device device) : device_(device) {}

  // A [B, T] i32 tensor on the device holding `tokens` (B * T of them). Call once per tensor of a
  // micro-batch, in the same order every micro-batch (the buffers alternate per call pair).
  Tensor upload(const std::vector<int32_t>& tokens, int64_t B, int64_t T);

 private:
  struct Slot {
    Tensor host;  // page-locked i32 [B * T]
    cuda::StreamFence fence;
  };
  Device device_;
  std::array<Slot, 4> slots_;  // inputs and targets, two micro-batches deep
  size_t next_ = 0;
};

}  // namespace zt

// What one training forward and backward of a model takes in activation memory, for the tests
// that hold the estimator's activation bytes to what the allocator measured.
#pragma once

#include <cstdint>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "models/gpt.h"

namespace zt::test {

// The peak of activation bytes (CPU allocator) over a forward and backward of `model` on B x T
// random token ids below `vocab`, above what was allocated before.
inline int64_t activation_peak_of_step(Gpt& model, int64_t B, int64_t T, int64_t vocab) {
  auto src = model.local_source();
  Tensor tok = randint({B, T + 1}, vocab, 79);
  Tensor ids = contiguous(narrow(tok, 1, 0, T)), targets = contiguous(narrow(tok, 1, 1, T));
  Allocator& alloc = allocator_for(Device::cpu());
  const int64_t base = alloc.stats()[MemoryCategory::activations].current;
  alloc.reset_peak_stats();
  {
    MemoryCategoryScope scope(MemoryCategory::activations);
    backward(model.forward_loss(*src, ids, targets, StepRng{1, 1, 0}, true, {}));
  }
  return alloc.stats()[MemoryCategory::activations].peak - base;
}

}  // namespace zt::test

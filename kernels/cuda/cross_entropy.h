// The fused classifier loss for the model (host API; kernels in cross_entropy.cuh).
#pragma once

#include "core/backend.h"

namespace zt::cuda {

// Cross entropy forward and backward in one pass over logits [N, V] (targets [N], i32 or i64):
// returns losses and lse as Backend::cross_entropy does, and writes
// grad_scale * (softmax - onehot) into dlogits ([N, V], logits' dtype, allocated here when
// undefined). dlogits may be the logits tensor itself: the gradient then overwrites the logits.
CrossEntropyResult cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                  int64_t valid_vocab, double grad_scale, Tensor& dlogits);

}  // namespace zt::cuda

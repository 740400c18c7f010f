// CUDA kernels: cross entropy.
#include "kernels/cuda/cuda_backend.h"

namespace zt {

CrossEntropyResult CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, int64_t valid_vocab) const { not_implemented("cross_entropy"); }

Tensor CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t ignore_index, int64_t valid_vocab, double grad_scale) const { not_implemented("cross_entropy_backward"); }

}  // namespace zt

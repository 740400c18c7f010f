// Global gradient-norm clipping. The squared norm is summed locally (each parameter, or each
// shard element, counted once) so that distributed engines can all-reduce the partial sums before
// taking the root; clip_scale then gives the factor every gradient is multiplied by.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace zt {

double grad_norm_squared(const std::vector<Tensor>& grads);  // sum of squares in f64, undefined skipped
double clip_scale(double total_norm, double max_norm);        // min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0
bool grads_finite(const std::vector<Tensor>& grads);

}  // namespace zt

#include "optim/clip.h"

#include <cmath>

#include "core/backend.h"

namespace zt {

double grad_norm_squared(const std::vector<Tensor>& grads) {
  double total = 0;
  for (const Tensor& g : grads)
    if (g.defined()) total += backend_for(g.device()).sum_squares(g);
  return total;
}

double clip_scale(double total_norm, double max_norm) {
  if (max_norm <= 0 || !std::isfinite(total_norm)) return 1.0;
  return total_norm > max_norm ? max_norm / (total_norm + 1e-6) : 1.0;
}

bool grads_finite(const std::vector<Tensor>& grads) {
  for (const Tensor& g : grads)
    if (g.defined() && !backend_for(g.device()).all_finite(g)) return false;
  return true;
}

}  // namespace zt

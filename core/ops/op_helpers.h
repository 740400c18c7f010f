// Helpers shared by the op files in core/ops (not part of the public API in core/ops.h).
#pragma once

#include <string>
#include <vector>

#include "core/ops.h"

namespace zt::ops {

// A dim in [-ndim, ndim) made non-negative; throws "[api] dim 3 out of range for <x.describe()>".
int64_t normalize_dim(const char* api, int64_t dim, const Tensor& x);
// Same, for a dim of a tensor with `ndim` dims (unsqueeze accepts ndim + 1 positions).
int64_t normalize_dim(const char* api, int64_t dim, int64_t ndim, const Tensor& x);

// Checks that both operands are defined and share dtype and device, naming both in the error:
//   [mul] dtypes differ: a is [2] f32 cpu, b is [2] f64 cpu (cast with to())
void check_same_dtype_device(const char* api, const Tensor& a, const Tensor& b);
void check_defined(const char* api, const Tensor& x, const char* what = "input");

// NumPy broadcasting of two shapes; throws "[api] shapes [2, 3] f32 cpu and [4] f32 cpu do not broadcast".
Shape broadcast_shapes(const char* api, const Tensor& a, const Tensor& b);

// Sum `grad` over the dims that broadcasting expanded so that the result has `shape` (the backward
// of broadcasting and of expand). Returns grad itself when the shapes already agree.
Tensor sum_to_shape(const Tensor& grad, const Shape& shape);

// Attention from differentiable ops, for dtypes and head dims a backend's fused kernel does not
// take: softmax(q k^T * scale + mask) v in f32 (f64 for f64), with the T x T scores in memory.
Tensor composite_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale);

}  // namespace zt::ops

// Matrix products on the GPU through cuBLASLt, row-major as the rest of zerotrain.
//
// Why cuBLASLt: it picks Hopper's fastest kernels (wgmma, TMA) by heuristic and fuses the bias
// and GeLU of a linear layer into the product's epilogue, so the output is written once. The
// 16-bit types compute in f32 and write their own type; f32 computes in exact f32 (no TF32, so
// results match the CPU to about 1e-6); f64 computes in f64.
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] matrix is the same
// memory as a column-major [c, r] one. So out = A B (row-major) is computed as out^T = B^T A^T
// (column-major): cuBLASLt's first operand is our b, its second our a, with m = N and n = M.
// A per-output-column bias is then cuBLASLt's per-row bias, which is what its epilogue adds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"

namespace zt::cuda {

enum class GemmEpilogue : uint8_t {
  none,
  bias,       // out = a b + bias[n]
  bias_gelu,  // out = gelu(a b + bias[n]) (tanh approximation, as GPT-2)
  // out = a b and bias_grad[m] = sum over k of op(a)[m, k] (cuBLASLt BGRADB): a linear layer's dw
  // = dy^T x with its db alongside.
  grad_bias_a,
};

// out[i] = alpha * op(a[i]) op(b[i]) (+ beta * out[i]) then the epilogue, for i < batch.
// op(a) is [m, k]: a is stored [m, k], or [k, m] when transpose_a. op(b) is [k, n]: b is stored
// [k, n], or [n, k] when transpose_b. out is [m, n], contiguous per batch item.
struct GemmArgs {
  DType dtype = DType::bf16;  // of a, b, out and bias
  // out in f32 instead of `dtype`, for bf16/f16 operands without epilogue: sums over several
  // products keep f32 (Backend::gemm_into).
  bool out_f32 = false;
  int64_t m = 0, n = 0, k = 0;
  bool transpose_a = false, transpose_b = false;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_out = 0;  // elements between batch items; 0 shares a or b
  double alpha = 1.0, beta = 0.0;                      // beta != 0 reads out first
  GemmEpilogue epilogue = GemmEpilogue::none;
  const void* bias = nullptr;  // [n] for the bias epilogues
  // bias_gelu only, optional: also store a b + bias (before the GeLU) here, [m, n] contiguous,
  // for the backward pass (n must be a multiple of 8).
  void* pre_gelu = nullptr;
  void* bias_grad = nullptr;  // grad_bias_a: [m]
};

// The launcher: enqueues one cuBLASLt matmul on `stream` of `device`. Throws when cuBLASLt has no
// algorithm for the problem, except that with `may_decline` it returns false instead for the
// backward epilogue (not every shape and layout has a kernel with them; the caller then does the
// product and the epilogue's work separately). The answer is cached per problem.
bool gemm(const GemmArgs& args, const void* a, const void* b, void* out, int device, cudaStream_t stream,
          bool may_decline = false);

// y = epilogue(x w^T + bias) for x [rows, in] and weight [out, in] (a linear layer), on the
// current stream. bias [out] is needed for the bias epilogues; when pre_gelu is given (bias_gelu),
// it receives x w^T + bias, as the GeLU backward needs. Returns y [rows, out] in x's dtype.
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, GemmEpilogue epilogue,
                      Tensor* pre_gelu = nullptr);

}  // namespace zt::cuda

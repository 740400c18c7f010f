// Backends: the kernels each device provides, as one small interface. core/ops.cpp checks inputs,
// calls backend_for(device).<kernel>(...) and records autograd; kernels never see autograd.
//
// Kernel conventions: unless a parameter says otherwise, inputs are contiguous (ops call
// contiguous() first) and outputs are allocated by the kernel on the inputs' device. Floating
// kernels accept f32, f64, bf16 and f16 and accumulate in f32 (f64 for f64). A kernel a backend
// does not provide throws "[kernel] not implemented on <device>", never a wrong answer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zt {

enum class BinaryOp : uint8_t { add, sub, mul, div };
enum class UnaryOp : uint8_t { neg, exp, log, sqrt, tanh, relu, gelu, add_scalar, mul_scalar, pow_scalar };
enum class ReduceOp : uint8_t { sum, max };
enum class RandomKind : uint8_t { normal, uniform };

struct LayerNormResult {
  Tensor y, mean, rstd;  // mean and rstd: f32 [rows]
};
struct LinearWeightGrads {
  Tensor dweight, dbias;  // dbias undefined when not asked for
};
struct NormGrads {
  Tensor dx, dweight, dbias;  // dbias undefined for rmsnorm or when there is no bias
};
struct AttentionResult {
  Tensor out, lse;  // lse: f32 [B, H, T], the log-sum-exp of each softmax row (for backward)
};
struct AttentionGrads {
  Tensor dq, dk, dv;
};
struct CrossEntropyResult {
  Tensor losses;     // f32 [N]; 0 where the target is ignored
  Tensor lse;        // f32 [N]; log-sum-exp over the valid vocabulary
  Tensor inv_count;  // f32 scalar on the logits' device: 1 / (targets that count), 0 when none does
};

// One step of AdamW on a flat f32 master shard (see optim/adamw.h for the meaning).
struct AdamWArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;         // 1-based, for bias correction
  double grad_scale = 1.0;  // gradients are multiplied by this first (unscaling, clipping)
};
// A run [begin, begin + n) of a flat shard that shares one weight decay (adamw_step_runs).
struct AdamWRun {
  int64_t begin = 0, n = 0;
  double weight_decay = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceType device_type() const = 0;

  // ---- memory and layout ----
  // dst = src elementwise, with any strides on both sides, casting between dtypes. Same device.
  virtual void copy_strided(const Tensor& src, Tensor& dst) const;
  // Copy n bytes between devices (at least one side on this backend's device type).
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) const;
  virtual void fill(Tensor& dst, double value) const;  // dst contiguous
  virtual void random_fill(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset) const;  // dst contiguous

  // ---- elementwise ----
  // a and b already expanded to out's shape (stride 0 where broadcast); any strides; out contiguous.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const;
  virtual Tensor unary(UnaryOp op, const Tensor& x, double scalar) const;
  // Gradient of a unary op: grad_out * f'(x); y = f(x) is given for ops whose derivative uses it.
  virtual Tensor unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& y,
                                double scalar) const;
  // dst += alpha * src (same shape, both contiguous; the same dtype, or a bf16/f16 src into an f32
  // dst, widened on the fly); dst *= s.
  virtual void axpy(Tensor& dst, const Tensor& src, double alpha) const;
  virtual void scale(Tensor& dst, double s) const;

  // ---- reductions ----
  // Reduce x over the dims where reduce_mask[d] is true; out has x's shape with those dims = 1.
  virtual Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce_mask) const;
  // Max over the last dim: values and i64 indices of the first maximum, shape x.shape[:-1].
  virtual std::pair<Tensor, Tensor> max_last_dim(const Tensor& x) const;
  // Sum of squares of all elements in f64 (norms, clipping) and whether all are finite.
  virtual double sum_squares(const Tensor& x) const;
  // acc += sum of squares of x, with acc an f64 [1] tensor on x's device: no host synchronisation
  // (the gradient norm reads its total once). The default goes through sum_squares.
  virtual void sum_squares_into(const Tensor& x, Tensor& acc) const;
  virtual bool all_finite(const Tensor& x) const;

  // ---- matrix products ----
  // out[b] = op(a[b]) op(b[b]) for b < batch, with op = transpose when the flag is set.
  // a: [batch_a, M, K] (or [batch_a, K, M] when transposed), batch_a is batch or 1 (broadcast);
  // likewise for b; out: [batch, M, N], allocated here. When accumulate is given, out = accumulate + a b.
  virtual Tensor gemm(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, int64_t batch,
                      const Tensor& accumulate) const;
  // out = op(a) op(b), or out += op(a) op(b) with accumulate, into a given [M, N] contiguous out
  // (2-D a and b): out has a's dtype or, for bf16/f16 operands, f32 (the products accumulate in f32
  // and are not rounded to 16 bits: the chunked loss's weight gradient, Note [Chunked loss] in
  // core/ops/linear_cross_entropy.cpp, sums many chunks this way).
  virtual void gemm_into(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out,
                         bool accumulate) const;
  // A linear layer: y = x w^T + bias for x [rows, in] and weight [out, in] (both contiguous; bias
  // [out] contiguous or undefined); with gelu, y = gelu(x w^T + bias) and *pre_activation (when
  // given) receives x w^T + bias for the backward. The default adds the bias as gemm's starting
  // value and runs the GeLU as its own pass; the CUDA backend fuses both into the product's
  // epilogue, so the output is written once.
  virtual Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool gelu,
                        Tensor* pre_activation) const;
  // The two halves of a linear layer's backward, for dy [rows, out], x [rows, in], w [out, in], all
  // contiguous. linear_weight_grads: dw = dy^T x and, with bias, db = the column sums of dy (the
  // CUDA backend reduces them in the product's epilogue, cuBLASLt BGRADB, so dy is read once).
  // linear_input_grad: dx = dy w; with gelu_pre (a [rows, in] pre-activation, the x of this layer
  // being gelu(gelu_pre)) it returns gelu'(gelu_pre) * (dy w) instead, the gradient of gelu_pre.
  // (cuBLASLt's DGELU epilogue was measured and not taken: on an H200 at GPT-2 124M's MLP shape it
  // ran as a separate 0.33 ms pass, against 0.12 ms for the GeLU backward kernel.)
  virtual LinearWeightGrads linear_weight_grads(const Tensor& dy, const Tensor& x, bool bias) const;
  virtual Tensor linear_input_grad(const Tensor& dy, const Tensor& weight, const Tensor& gelu_pre) const;

  // ---- fused nn kernels (x is [rows, C]) ----
  virtual Tensor softmax(const Tensor& x) const;  // over the last dim
  virtual Tensor softmax_backward(const Tensor& grad_y, const Tensor& y) const;
  virtual Tensor log_softmax(const Tensor& x) const;
  virtual Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y) const;
  virtual LayerNormResult layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const;
  virtual NormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                       const Tensor& mean, const Tensor& rstd, bool has_bias) const;
  virtual LayerNormResult rmsnorm(const Tensor& x, const Tensor& weight, double eps) const;  // mean undefined
  virtual NormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                     const Tensor& rstd) const;
  virtual Tensor embedding(const Tensor& weight, const Tensor& ids) const;  // ids flattened
  // Deterministic: the result does not depend on thread or block scheduling.
  virtual Tensor embedding_backward(const Tensor& grad_out, const Tensor& ids, int64_t vocab) const;
  // Whether attention()/attention_backward() take this dtype and head dim. When not, the op builds
  // attention from matmul and softmax instead (T x T scores in memory; correct, not fast).
  virtual bool fused_attention_supported(DType dtype, int64_t head_dim) const { return true; }
  // Whether attention()/attention_backward() read t ([B, H, T, D], q, k, v or grad_out) as it is;
  // when not, the op passes a contiguous copy. Outputs may come back as views (CUDA: [B, H, T, D]
  // views of [B, T, H, D] memory, Note [Attention layouts] in kernels/cuda/attention_common.cuh).
  virtual bool attention_accepts_layout(const Tensor& t) const { return t.is_contiguous(); }
  virtual AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                    double scale) const;
  virtual AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& out, const Tensor& lse,
                                            bool causal, double scale) const;
  virtual CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                           int64_t valid_vocab) const;
  // dlogits = grad_scale * (softmax(logits) - onehot(target)) for non-ignored rows, 0 elsewhere
  // and in padded columns; dtype of logits.
  // When scale_by (an f32 scalar on the logits' device) is given, grad_scale is multiplied by its
  // value on the device: the mean loss's backward needs no host synchronisation. With in_place,
  // dlogits overwrite the logits (for a caller that holds them alone: the largest activation of a
  // GPT is then not held twice at the loss's backward).
  virtual Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                        int64_t ignore_index, int64_t valid_vocab, double grad_scale,
                                        const Tensor& scale_by, bool in_place) const;
  // cross_entropy and cross_entropy_backward (grad_scale, no scale_by) in one call, the gradient
  // written over the logits; the default makes the two calls, the CUDA backend one fused pass.
  virtual CrossEntropyResult cross_entropy_with_grad(Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                     int64_t valid_vocab, double grad_scale) const;
  // 1 / (targets that are not ignore_index), 0 when none is, as a scalar of `dtype` (f32, or f64
  // on the CPU) on the targets' device: the mean loss's divisor without a host synchronisation.
  virtual Tensor inverse_target_count(const Tensor& targets, int64_t ignore_index, int64_t valid_vocab,
                                      DType dtype) const;
  // y = x * keep / (1 - p), keep = draw(seed, offset + i) >= p; also its own backward.
  virtual Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) const;

  // ---- optimizer ----
  virtual void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                          const AdamWArgs& args) const;
  // adamw_step on each run of the flat 1-D tensors (args.weight_decay replaced by the run's). The
  // default is one adamw_step per run; the CUDA backend updates all runs in one launch (a GPT block
  // has 9 runs: launching them one by one left the GPU waiting on the host for the small ones).
  // With param_copy (same size, any floating dtype, same device), each updated run is also written
  // there in its dtype: the compute-dtype copy of the master weights, which the CPU backend writes
  // in the same pass (the offloaded optimizer's step then reads and writes host memory once).
  virtual void adamw_step_runs(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                               const std::vector<AdamWRun>& runs, const AdamWArgs& args,
                               Tensor* param_copy = nullptr) const;

 protected:
  [[noreturn]] void not_implemented(const char* kernel) const;
};

const Backend& backend_for(Device device);
const Backend& cpu_backend();
const Backend& cuda_backend();  // throws "built without CUDA" in builds without the CUDA backend

}  // namespace zt

// The CPU backend: plain C++ with OpenMP threads, OpenBLAS for matrix products. Each kernel family
// lives in its own file in this folder (memory, elementwise, reduce, softmax, gemm, norm, embedding,
// attention, cross_entropy, adamw).
#pragma once

#include "core/backend.h"

namespace zt {

class CpuBackend final : public Backend {
 public:
  DeviceType device_type() const override { return DeviceType::cpu; }
  void copy_strided(const Tensor& src, Tensor& dst) const override;
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) const override;
  void fill(Tensor& dst, double value) const override;
  void random_fill(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset) const override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const override;
  Tensor unary(UnaryOp op, const Tensor& x, double scalar) const override;
  Tensor unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& y, double scalar) const override;
  void axpy(Tensor& dst, const Tensor& src, double alpha) const override;
  void scale(Tensor& dst, double s) const override;
  Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce_mask) const override;
  std::pair<Tensor, Tensor> max_last_dim(const Tensor& x) const override;
  double sum_squares(const Tensor& x) const override;
  bool all_finite(const Tensor& x) const override;
  Tensor gemm(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, int64_t batch, const Tensor& accumulate) const override;
  void gemm_into(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out, bool accumulate) const override;
  Tensor softmax(const Tensor& x) const override;
  Tensor softmax_backward(const Tensor& grad_y, const Tensor& y) const override;
  Tensor log_softmax(const Tensor& x) const override;
  Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y) const override;
  LayerNormResult layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const override;
  NormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd, bool has_bias) const override;
  LayerNormResult rmsnorm(const Tensor& x, const Tensor& weight, double eps) const override;
  NormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd) const override;
  Tensor embedding(const Tensor& weight, const Tensor& ids) const override;
  Tensor embedding_backward(const Tensor& grad_out, const Tensor& ids, int64_t vocab) const override;
  AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) const override;
  AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, bool causal, double scale) const override;
  CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, int64_t valid_vocab) const override;
  Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t ignore_index, int64_t valid_vocab, double grad_scale, const Tensor& scale_by, bool in_place) const override;
  Tensor inverse_target_count(const Tensor& targets, int64_t ignore_index, int64_t valid_vocab, DType dtype) const override;
  Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) const override;
  void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWArgs& args) const override;
  void adamw_step_runs(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                       const std::vector<AdamWRun>& runs, const AdamWArgs& args,
                       Tensor* param_copy) const override;
};

}  // namespace zt

// Activation checkpointing (Note [Checkpointing modes] in models/checkpointing.h).
#include "models/checkpointing.h"

#include <algorithm>

namespace zt {

namespace {

// The attention core in the exact op sequence of Gpt::block, so that the plain and the recomputed
// paths run identical arithmetic.
Tensor attention_heads(const Tensor& qkv, int64_t n_head) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3, D = C / n_head;
  std::vector<Tensor> parts = split(qkv, C, -1);
  auto heads = [&](const Tensor& t) { return permute(reshape(t, {B, T, n_head, D}), {0, 2, 1, 3}); };
  Tensor a = scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), /*causal=*/true);
  return reshape(permute(a, {0, 2, 1, 3}), {B, T, C});
}

}  // namespace

void CheckpointPolicy::validate() const {
  ZT_CHECK(every_k_blocks >= 1, "checkpointing", "every_k_blocks must be >= 1, got ", every_k_blocks);
  ZT_CHECK(every_k_blocks == 1 || mode == Recompute::full, "checkpointing",
           "every_k_blocks (", every_k_blocks, ") applies only to full recomputation");
  ZT_CHECK(num_blocks >= 0, "checkpointing", "num_blocks must be >= 0 (0: all blocks), got ", num_blocks);
  ZT_CHECK(num_blocks == 0 || mode == Recompute::full, "checkpointing",
           "num_blocks (", num_blocks, ") applies only to full recomputation");
}

Tensor attention_core(const Tensor& qkv, int64_t n_head, bool recompute) {
  ZT_CHECK(qkv.defined() && qkv.dim() == 3, "attention_core", "qkv must be [B, T, 3C], got ",
           qkv.defined() ? qkv.describe() : std::string("an undefined tensor"));
  ZT_CHECK(n_head >= 1 && qkv.size(2) % (3 * n_head) == 0, "attention_core", "qkv ", qkv.describe(),
           ": the last dim must be 3 x n_head x head_dim, n_head is ", n_head);
  if (!recompute || !needs_grad({&qkv})) return attention_heads(qkv, n_head);
  auto fn = [n_head](const std::vector<Tensor>& in) { return std::vector<Tensor>{attention_heads(in[0], n_head)}; };
  return checkpoint(fn, {qkv})[0];
}

Tensor gelu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool recompute) {
  if (!recompute || !needs_grad({&x, &weight, &bias})) return linear_gelu(x, weight, bias);
  // An undefined bias is no input of the node (checkpoint detaches every input for the replay).
  auto fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear_gelu(in[0], in[1], in.size() > 2 ? in[2] : Tensor())};
  };
  return checkpoint(fn, bias.defined() ? std::vector<Tensor>{x, weight, bias} : std::vector<Tensor>{x, weight})[0];
}

Tensor run_blocks(int first, int count, const Tensor& x, const BlockFn& block, const CheckpointPolicy& policy,
                  bool training) {
  policy.validate();
  ZT_CHECK(count >= 0 && first >= 0, "checkpointing", "block range [", first, ", ", first + count, ") is invalid");
  const bool recompute = training && grad_mode_enabled();
  const int checkpointed_end = first + (recompute ? policy.checkpointed_blocks(count) : 0);
  Tensor h = x;
  for (int begin = first; begin < checkpointed_end; begin += policy.every_k_blocks) {
    const int end = std::min(checkpointed_end, begin + policy.every_k_blocks);
    // Copies `block`: the node replays it during backward, after this call has returned.
    auto segment = [block, begin, end](const std::vector<Tensor>& in) {
      Tensor y = in[0];
      for (int l = begin; l < end; ++l) y = block(l, y);
      return std::vector<Tensor>{y};
    };
    h = checkpoint(segment, {h})[0];
  }
  for (int l = checkpointed_end; l < first + count; ++l) h = block(l, h);
  return h;
}

Tensor forward_loss_checkpointed(Gpt& model, ParameterSource& src, const Tensor& ids, const Tensor& targets,
                                 const StepRng& rng, bool training, const CheckpointPolicy& policy, BlockFn block) {
  if (!block) {
    Gpt* m = &model;
    ParameterSource* s = &src;
    block = [m, s, rng, training](int layer, const Tensor& x) { return m->block(*s, layer, x, rng, training); };
  }
  Tensor x = model.embed(src, ids, rng, training);
  x = run_blocks(0, static_cast<int>(model.config().n_layer), x, block, policy, training);
  return model.loss_from_hidden(src, model.final_norm(src, x), targets);
}

}  // namespace zt

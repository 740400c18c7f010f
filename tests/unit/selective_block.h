// Test helper: Gpt::block's math with the two call sites of selective recomputation
// (models/checkpointing.h) switchable. This is what Gpt::block becomes once models/gpt.cpp calls
// attention_core and gelu_linear; BlockCopyMatchesGptBlock (test_checkpointing) checks that with
// recompute off it is bit for bit Gpt::block, so the copy cannot drift unnoticed.
#pragma once

#include "models/checkpointing.h"
#include "models/gpt.h"

namespace zt::testing {

inline Tensor block_with_recompute(Gpt& model, ParameterSource& src, int layer, const Tensor& x, const StepRng& rng,
                                   bool training, bool selective) {
  const GptConfig& c = model.config();
  const int unit = layer + 1;
  std::vector<Tensor> p = src.acquire(unit);  // ln_1 w b, c_attn w b, c_proj w b, ln_2 w b, c_fc w b, mlp c_proj w b
  const bool drop = training && c.dropout > 0;
  Tensor qkv = linear(layernorm(x, p[0], p[1]), p[2], p[3]);
  Tensor a = linear(attention_core(qkv, c.n_head, selective), p[4], p[5]);
  if (drop) a = dropout(a, c.dropout, rng.site_seed(unit, 0), 0);
  Tensor x1 = add(x, a);
  Tensor m = linear(gelu_linear(layernorm(x1, p[6], p[7]), p[8], p[9], selective), p[10], p[11]);
  if (drop) m = dropout(m, c.dropout, rng.site_seed(unit, 1), 0);
  src.release(unit);
  return src.unit_output(unit, add(x1, m));
}

// A BlockFn for forward_loss_checkpointed. `model` and `src` must outlive backward.
inline BlockFn recompute_block_fn(Gpt& model, ParameterSource& src, const StepRng& rng, bool training, bool selective) {
  return [&model, &src, rng, training, selective](int layer, const Tensor& x) {
    return block_with_recompute(model, src, layer, x, rng, training, selective);
  };
}

}  // namespace zt::testing

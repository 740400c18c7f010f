#include "models/gpt.h"

#include "models/checkpointing.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "parallel/tensor_parallel/comm_ops.h"
#include "parallel/tensor_parallel/cross_entropy.h"

namespace zt {

namespace {

// Index of each parameter inside a block unit (the order add_param creates them in).
enum BlockParam {
  kLn1W, kLn1B, kAttnW, kAttnB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB, kBlockParams
};

uint64_t mix(uint64_t a, uint64_t b) {  // splitmix64 of a combination: independent streams per site
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class LocalSource final : public ParameterSource {
 public:
  explicit LocalSource(Gpt& model) : model_(model) {}
  std::vector<Tensor> acquire(int unit) override {
    std::vector<Tensor> out;
    DType dt = model_.config().compute_dtype;
    for (int i : model_.unit_parameter_indices(unit)) {
      const Tensor& p = model_.parameters()[static_cast<size_t>(i)].tensor;
      out.push_back(p.dtype() == dt ? p : to(p, dt));
    }
    return out;
  }

 private:
  Gpt& model_;
};

}  // namespace

GptConfig GptConfig::from_dims(const GptDims& dims, DType compute_dtype, double dropout) {
  GptConfig c;
  c.n_layer = dims.n_layer;
  c.n_head = dims.n_head;
  c.d_model = dims.d_model;
  c.vocab_size = dims.vocab_size;
  c.padded_vocab = dims.padded_vocab;
  c.seq_len = dims.seq_len;
  c.dropout = dropout;
  c.compute_dtype = compute_dtype;
  return c;
}

void GptConfig::validate() const {
  ZT_CHECK(n_layer >= 1, "gpt", "model.n_layer must be >= 1, got ", n_layer);
  ZT_CHECK(n_head >= 1 && d_model >= 1, "gpt", "model.n_head and model.d_model must be >= 1, got ", n_head, " and ",
           d_model);
  ZT_CHECK(d_model % n_head == 0, "gpt", "model.d_model (", d_model, ") must be divisible by model.n_head (", n_head,
           ")");
  ZT_CHECK(vocab_size >= 2 && padded_vocab >= vocab_size, "gpt", "model.vocab_size (", vocab_size,
           ") must be >= 2 and <= padded vocabulary (", padded_vocab, ")");
  ZT_CHECK(seq_len >= 1, "gpt", "model.seq_len must be >= 1, got ", seq_len);
  ZT_CHECK(dropout >= 0 && dropout < 1, "gpt", "model.dropout must be in [0, 1), got ", dropout);
  ZT_CHECK(is_floating(compute_dtype), "gpt", "compute dtype must be f32, f64, bf16 or f16, got ",
           dtype_name(compute_dtype));
  ZT_CHECK(loss_chunk_rows >= 0, "gpt", "loss_chunk_rows must be >= 0 (0: whole logits), got ", loss_chunk_rows);
}

uint64_t StepRng::site_seed(int64_t unit, int64_t site) const {
  return mix(mix(mix(seed, step), micro_batch), static_cast<uint64_t>(unit * 16 + site));
}

Gpt::Gpt(GptConfig config, Device device, uint64_t seed, std::vector<bool> owned_units, tp::TpGroup tp)
    : config_(config), tp_(tp), device_(device), owned_units_(std::move(owned_units)) {
  config_.validate();
  if (tp_.active()) {
    const int n = tp_.size();
    ZT_CHECK(tp_.comm->device() == device_, "gpt", "the tensor-parallel group is on ", tp_.comm->device().str(),
             ", the model on ", device_.str());
    ZT_CHECK(config_.n_head % n == 0, "gpt", "model.n_head (", config_.n_head,
             ") is not divisible by the tensor-parallel size (", n, "): attention heads are split across tp ranks");
    ZT_CHECK(config_.padded_vocab % n == 0, "gpt", "the padded vocabulary (", config_.padded_vocab,
             ") is not divisible by the tensor-parallel size (", n, "): wte is split by vocabulary rows");
  }
  if (owned_units_.empty()) owned_units_.assign(static_cast<size_t>(config_.n_layer + 2), true);
  ZT_CHECK(owned_units_.size() == static_cast<size_t>(config_.n_layer + 2), "gpt", "owned_units has ",
           owned_units_.size(), " entries for ", config_.n_layer + 2, " units");
  const int64_t C = config_.d_model, L = config_.n_layer;
  MemoryCategoryScope scope(MemoryCategory::parameters);
  using tp::TpSplit;
  const TpSplit none = TpSplit::replicated;
  add_param("wte.weight", {config_.padded_vocab, C}, 0, true, TpSplit::rows);
  add_param("wpe.weight", {config_.seq_len, C}, 0, true, none);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const int unit = static_cast<int>(l) + 1;
    add_param(p + "ln_1.weight", {C}, unit, false, none);
    add_param(p + "ln_1.bias", {C}, unit, false, none);
    add_param(p + "attn.c_attn.weight", {3 * C, C}, unit, true, TpSplit::qkv_rows);
    add_param(p + "attn.c_attn.bias", {3 * C}, unit, false, TpSplit::qkv_rows);
    add_param(p + "attn.c_proj.weight", {C, C}, unit, true, TpSplit::columns);
    add_param(p + "attn.c_proj.bias", {C}, unit, false, none);
    add_param(p + "ln_2.weight", {C}, unit, false, none);
    add_param(p + "ln_2.bias", {C}, unit, false, none);
    add_param(p + "mlp.c_fc.weight", {4 * C, C}, unit, true, TpSplit::rows);
    add_param(p + "mlp.c_fc.bias", {4 * C}, unit, false, TpSplit::rows);
    add_param(p + "mlp.c_proj.weight", {C, 4 * C}, unit, true, TpSplit::columns);
    add_param(p + "mlp.c_proj.bias", {C}, unit, false, none);
  }
  add_param("ln_f.weight", {C}, static_cast<int>(L) + 1, false, none);
  add_param("ln_f.bias", {C}, static_cast<int>(L) + 1, false, none);

  // GPT-2 initialisation; each parameter draws from its own stream so the values do not depend on
  // the device or on how parameters are sharded (a tensor-parallel shard draws its part of the
  // whole parameter's stream).
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(L));
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = params_[i];
    if (!p.tensor.defined()) continue;
    Tensor& t = p.tensor;
    const bool is_norm_weight = p.name.find("ln_") != std::string::npos && p.name.ends_with(".weight");
    Tensor init;
    if (t.dim() == 1) {
      init = full(t.shape(), is_norm_weight ? 1.0 : 0.0, DType::f32, device);
    } else {
      const bool residual = p.name.ends_with("c_proj.weight");
      Shape whole = t.shape();
      if (p.tp_split == tp::TpSplit::rows || p.tp_split == tp::TpSplit::qkv_rows) whole[0] *= tp_.size();
      if (p.tp_split == tp::TpSplit::columns) whole[1] *= tp_.size();
      init = mul_scalar(tp::randn_shard(whole, p.tp_split, tp_.rank(), tp_.size(), mix(seed, i), device),
                        residual ? residual_std : 0.02);
    }
    copy_(t, init);
  }
  // Keep only the owned units' parameters (their streams above were indexed by position in the
  // full list, so a stage's values equal the whole model's).
  std::erase_if(params_, [](const Parameter& p) { return !p.tensor.defined(); });
}

void Gpt::add_param(const std::string& name, const Shape& shape, int unit, bool decay, tp::TpSplit split) {
  Tensor t;  // undefined for units this model does not hold; dropped after initialisation
  if (owned_units_[static_cast<size_t>(unit)]) {
    t = empty(tp::shard_shape(shape, split, tp_.size(), name.c_str()), DType::f32, device_, MemoryCategory::parameters);
    t.set_requires_grad(true).set_name(name);
  }
  params_.push_back({name, t, unit, decay, split == tp::TpSplit::replicated, split});
}

std::vector<int> Gpt::unit_parameter_indices(int unit) const {
  std::vector<int> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].unit == unit) out.push_back(static_cast<int>(i));
  return out;
}

int64_t Gpt::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.tensor.numel();
  return n;
}

Parameter& Gpt::find(const std::string& name) {
  for (Parameter& p : params_)
    if (p.name == name) return p;
  ZT_FAIL("gpt", "no parameter named '", name, "'");
}

std::unique_ptr<ParameterSource> Gpt::local_source() { return std::make_unique<LocalSource>(*this); }

std::vector<Tensor> Gpt::acquire(ParameterSource& src, int unit) {
  std::vector<Tensor> p = src.acquire(unit);
  if (tp_.splits_sequence()) {
    const std::vector<int> idx = unit_parameter_indices(unit);
    ZT_ASSERT(idx.size() == p.size(), "unit ", unit, " gave ", p.size(), " parameters for ", idx.size());
    for (size_t k = 0; k < p.size(); ++k)
      if (params_[static_cast<size_t>(idx[k])].tp_replicated) p[k] = tp::copy_to_tp(p[k], *tp_.comm);
  }
  return p;
}

// Dropout on the residual stream: under sequence parallelism the rank's positions draw the mask
// the whole sequence would (so a TP run equals one process with dropout on, too).
Tensor Gpt::residual_dropout(const Tensor& x, uint64_t seed) const {
  if (!tp_.splits_sequence()) return dropout(x, config_.dropout, seed, 0);
  const int64_t local = x.size(1);
  return tp::sequence_shard_dropout(x, config_.dropout, seed, local * tp_.size(), local * tp_.rank());
}

Tensor Gpt::embed(ParameterSource& src, const Tensor& ids, const StepRng& rng, bool training) {
  ZT_CHECK(ids.dim() == 2, "gpt.embed", "token ids must be [B, T], got ", ids.describe());
  const int64_t T = ids.size(1);
  ZT_CHECK(T <= config_.seq_len, "gpt.embed", "sequence length ", T, " exceeds model.seq_len ", config_.seq_len);
  const bool sp = tp_.splits_sequence();
  ZT_CHECK(!sp || T % tp_.size() == 0, "gpt.embed", "sequence length ", T,
           " is not divisible by the tensor-parallel size ", tp_.size(), ", as sequence parallelism needs");
  std::vector<Tensor> p = acquire(src, 0);
  // Positions of this rank's part of the sequence (all of it without sequence parallelism).
  const int64_t local = sp ? T / tp_.size() : T, first = sp ? local * tp_.rank() : 0;
  const Tensor& positions = position_ids(local, ids.device());
  Tensor tokens = tp_.active() ? tp::vocab_parallel_embedding(p[0], ids, tp_) : embedding(p[0], ids);
  Tensor x = add(tokens, embedding(narrow(p[1], 0, first, local), positions));
  src.release(0);
  if (training && config_.dropout > 0) x = residual_dropout(x, rng.site_seed(0, 0));
  return src.unit_output(0, x);
}

const Tensor& Gpt::position_ids(int64_t n, Device device) {
  if (!position_ids_.defined() || position_ids_.numel() != n || position_ids_.device() != device) {
    NoGradGuard no_grad;
    MemoryCategoryScope scope(MemoryCategory::other);  // kept across steps: not an activation
    position_ids_ = arange(n, DType::i64, device);
  }
  return position_ids_;
}

Tensor Gpt::block(ParameterSource& src, int layer, const Tensor& x, const StepRng& rng, bool training) {
  const int unit = layer + 1;
  // Under tensor parallelism this rank computes H / tp heads, C / tp attention features.
  const int64_t B = x.size(0), H = config_.n_head / tp_.size(), D = config_.head_dim(), C = H * D;
  std::vector<Tensor> p = acquire(src, unit);
  ZT_ASSERT(p.size() == kBlockParams, "block unit has ", p.size(), " parameters");
  const bool drop = training && config_.dropout > 0;

  Tensor h = layernorm(x, p[kLn1W], p[kLn1B]);
  Tensor qkv = tp::column_parallel_linear(h, p[kAttnW], p[kAttnB], tp_);  // [B, T, 3C]: this rank's [q; k; v]
  const int64_t T = qkv.size(1);  // the whole sequence, also under sequence parallelism
  Tensor a;
  if (selective_recompute_) {
    a = attention_core(qkv, H, /*recompute=*/true);
  } else {
    std::vector<Tensor> parts = split(qkv, C, -1);
    auto heads = [&](const Tensor& t) { return permute(reshape(t, {B, T, H, D}), {0, 2, 1, 3}); };
    a = scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), /*causal=*/true);
    a = reshape(permute(a, {0, 2, 1, 3}), {B, T, C});
  }
  a = tp::row_parallel_linear(a, p[kProjW], p[kProjB], tp_);
  if (drop) a = residual_dropout(a, rng.site_seed(unit, 0));
  Tensor x1 = add(x, a);

  Tensor h2 = layernorm(x1, p[kLn2W], p[kLn2B]);
  Tensor m;
  if (selective_recompute_) {
    Tensor hidden = gelu_linear(tp::enter_tp_region(h2, tp_), p[kFcW], p[kFcB], /*recompute=*/true);
    m = tp::row_parallel_linear(hidden, p[kFcProjW], p[kFcProjB], tp_);
  } else {
    m = tp::parallel_mlp(h2, p[kFcW], p[kFcB], p[kFcProjW], p[kFcProjB], tp_);
  }
  if (drop) m = residual_dropout(m, rng.site_seed(unit, 1));
  src.release(unit);
  return src.unit_output(unit, add(x1, m));
}

Tensor Gpt::final_norm(ParameterSource& src, const Tensor& x) {
  const int unit = static_cast<int>(config_.n_layer) + 1;
  std::vector<Tensor> p = acquire(src, unit);
  Tensor y = layernorm(x, p[0], p[1]);
  src.release(unit);
  return src.unit_output(unit, y);
}

Tensor Gpt::local_logits(ParameterSource& src, const Tensor& x_normed) {
  std::vector<Tensor> p = acquire(src, 0);  // tied head: the token embedding (this rank's vocabulary rows)
  Tensor y = tp::column_parallel_linear(x_normed, p[0], Tensor(), tp_);
  src.release(0);
  return src.unit_output(0, y);
}

Tensor Gpt::logits(ParameterSource& src, const Tensor& x_normed) {
  Tensor y = local_logits(src, x_normed);
  return tp_.active() ? tp::gather_from_tp(y, *tp_.comm, -1) : y;
}

Tensor Gpt::loss_from_hidden(ParameterSource& src, const Tensor& x_normed, const Tensor& targets) {
  if (config_.loss_chunk_rows > 0) {
    // Note [Chunked loss]; under vocabulary parallelism Note [Chunked vocabulary-parallel loss].
    std::vector<Tensor> p = acquire(src, 0);
    Tensor loss = tp_.active() ? tp::vocab_parallel_linear_cross_entropy(tp::enter_tp_region(x_normed, tp_), p[0], targets,
                                                                         config_.loss_chunk_rows, *tp_.comm, -100,
                                                                         config_.vocab_size)
                               : linear_cross_entropy(x_normed, p[0], targets, config_.loss_chunk_rows, -100,
                                                      config_.vocab_size);
    src.release(0);
    return src.unit_output(0, loss);
  }
  Tensor lg = local_logits(src, x_normed);
  const int64_t rows = lg.size(0) * lg.size(1);
  Tensor flat = reshape(lg, {rows, lg.size(2)});
  if (tp_.active())
    return tp::vocab_parallel_cross_entropy(flat, reshape(targets, {rows}), *tp_.comm, -100, config_.vocab_size);
  return cross_entropy(flat, reshape(targets, {rows}), -100, config_.vocab_size);
}

Tensor Gpt::forward_logits(ParameterSource& src, const Tensor& ids) {
  StepRng rng;
  Tensor x = embed(src, ids, rng, false);
  for (int l = 0; l < config_.n_layer; ++l) x = block(src, l, x, rng, false);
  return logits(src, final_norm(src, x));
}

Tensor Gpt::forward_loss(ParameterSource& src, const Tensor& ids, const Tensor& targets, const StepRng& rng,
                         bool training, const CheckpointPolicy& checkpointing) {
  Tensor x = embed(src, ids, rng, training);
  x = run_blocks(0, static_cast<int>(config_.n_layer), x,
                 [&](int l, const Tensor& h) { return block(src, l, h, rng, training); }, checkpointing, training);
  return loss_from_hidden(src, final_norm(src, x), targets);
}

std::vector<int32_t> Gpt::generate(ParameterSource& src, const std::vector<int32_t>& prompt, int64_t new_tokens, double temperature,
                                   int64_t top_k, uint64_t seed) {
  NoGradGuard no_grad;
  std::vector<int32_t> tokens = prompt.empty() ? std::vector<int32_t>{0} : prompt;
  const int64_t V = config_.vocab_size;
  for (int64_t n = 0; n < new_tokens; ++n) {
    const int64_t T = std::min<int64_t>(static_cast<int64_t>(tokens.size()), config_.seq_len);
    std::vector<int32_t> window(tokens.end() - T, tokens.end());
    // Sequence parallelism needs T divisible by tp: pad at the end, which the causal mask keeps
    // from affecting position T - 1 (seq_len itself divides by tp).
    if (tp_.splits_sequence())
      while (window.size() % static_cast<size_t>(tp_.size()) != 0) window.push_back(0);
    Tensor ids = from_vector(window, {1, static_cast<int64_t>(window.size())}, device_);
    Tensor lg = forward_logits(src, ids);
    std::vector<float> last = to(narrow(narrow(lg, 1, T - 1, 1), 2, 0, V), DType::f32).to_vector<float>();
    // Top-k with temperature; ties broken by index for determinism.
    std::vector<int32_t> order(static_cast<size_t>(V));
    for (int32_t i = 0; i < V; ++i) order[static_cast<size_t>(i)] = i;
    const int64_t k = top_k > 0 ? std::min(top_k, V) : V;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
    const double t = std::max(temperature, 1e-4);
    std::vector<double> prob(static_cast<size_t>(k));
    double total = 0;
    for (int64_t i = 0; i < k; ++i) {
      prob[static_cast<size_t>(i)] = std::exp((last[order[i]] - last[order[0]]) / t);
      total += prob[static_cast<size_t>(i)];
    }
    double u = rng::uniform(seed, static_cast<uint64_t>(n)) * total;
    int64_t pick = k - 1;
    for (int64_t i = 0; i < k; ++i) {
      u -= prob[static_cast<size_t>(i)];
      if (u <= 0) {
        pick = i;
        break;
      }
    }
    tokens.push_back(order[static_cast<size_t>(pick)]);
  }
  return std::vector<int32_t>(tokens.begin() + static_cast<int64_t>(prompt.empty() ? 1 : prompt.size()), tokens.end());
}

}  // namespace zt

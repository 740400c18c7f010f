// models/checkpointing: the recomputing ops against naive loops and finite differences (f64), the
// gradients of a tiny GPT with dropout under every checkpointing mode against the plain run (bit for
// bit in f32: the replay runs the same kernels on the same inputs), and the activation bytes that
// backward keeps, measured by the allocator, against the estimator (Note [Activation memory]).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/allocator.h"
#include "gradcheck.h"
#include "launch/estimate.h"
#include "models/checkpointing.h"
#include "reference.h"
#include "selective_block.h"

namespace zt::testing {
namespace {

// ---- the recomputing ops -----------------------------------------------------------------------

// Causal multi-head attention over qkv [B, T, 3C] by loops, heads merged: [B, T, C].
std::vector<double> naive_attention(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3, D = C / H;
  const std::vector<double> x = host(qkv);
  auto at = [&](int64_t b, int64_t t, int64_t c) { return x[static_cast<size_t>((b * T + t) * 3 * C + c)]; };
  std::vector<double> out(static_cast<size_t>(B * T * C), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> score(static_cast<size_t>(t + 1));
        double top = -INFINITY, total = 0;
        for (int64_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += at(b, t, h * D + d) * at(b, s, C + h * D + d);
          score[static_cast<size_t>(s)] = dot / std::sqrt(static_cast<double>(D));
          top = std::max(top, score[static_cast<size_t>(s)]);
        }
        for (double& v : score) total += (v = std::exp(v - top));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t s = 0; s <= t; ++s) acc += score[static_cast<size_t>(s)] / total * at(b, s, 2 * C + h * D + d);
          out[static_cast<size_t>((b * T + t) * C + h * D + d)] = acc;
        }
      }
  return out;
}

double naive_gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

// Gradients of sum(f(inputs) * probe) with respect to every input, for both recompute settings.
std::vector<Tensor> grads_of(const TensorFn& f, const std::vector<Tensor>& inputs, uint64_t probe_seed) {
  Tensor out = f(inputs);
  backward(sum(mul(out, randn(out.shape(), probe_seed, 0, out.dtype()))));
  std::vector<Tensor> g;
  for (const Tensor& x : inputs) {
    g.push_back(clone(x.grad()));
    Tensor(x).zero_grad();
  }
  return g;
}

TEST(Checkpointing, AttentionCoreMatchesLoopsAndRecomputesExactly) {
  const int64_t B = 2, T = 5, H = 2, C = 8;
  Tensor qkv = random_f64({B, T, 3 * C}, 3).set_requires_grad(true);
  const std::vector<double> want = naive_attention(qkv, H);
  for (bool recompute : {false, true}) {
    Tensor y = attention_core(qkv, H, recompute);
    EXPECT_EQ(y.shape(), (Shape{B, T, C}));
    expect_near_all(y, want, 1e-12, 1e-12, recompute ? "recomputed" : "plain");
    EXPECT_TRUE(y.requires_grad());
    EXPECT_EQ(y.grad_fn()->name() == "Checkpoint", recompute);
  }
  auto f = [&](bool recompute) {
    return [recompute, H](const std::vector<Tensor>& in) { return attention_core(in[0], H, recompute); };
  };
  const std::vector<Tensor> plain = grads_of(f(false), {qkv}, 9), again = grads_of(f(true), {qkv}, 9);
  EXPECT_EQ(max_abs_diff(plain[0], again[0]), 0.0);
  gradcheck(f(true), {random_f64({1, 4, 3 * 4}, 5).set_requires_grad(true)});
  // A non-contiguous qkv (a view, as the model's linear output never is) works the same.
  Tensor strided = random_noncontiguous_f64({2, 3 * C, T}, 6);
  Tensor view_qkv = transpose(strided, 1, 2);
  expect_near_all(attention_core(view_qkv, H, true), naive_attention(view_qkv, H), 1e-12, 1e-12, "strided");
}

TEST(Checkpointing, GeluLinearMatchesLoopsAndRecomputesExactly) {
  const int64_t N = 6, In = 5, Out = 7;
  Tensor x = random_f64({2, N / 2, In}, 11).set_requires_grad(true);
  Tensor w = random_f64({Out, In}, 12, 0.5).set_requires_grad(true);
  Tensor b = random_f64({Out}, 13).set_requires_grad(true);
  const std::vector<double> xs = host(x), ws = host(w), bs = host(b);
  for (bool with_bias : {true, false}) {
    std::vector<double> want(static_cast<size_t>(N * Out));
    for (int64_t r = 0; r < N; ++r)
      for (int64_t o = 0; o < Out; ++o) {
        double acc = with_bias ? bs[static_cast<size_t>(o)] : 0.0;
        for (int64_t i = 0; i < In; ++i) acc += xs[static_cast<size_t>(r * In + i)] * ws[static_cast<size_t>(o * In + i)];
        want[static_cast<size_t>(r * Out + o)] = naive_gelu(acc);
      }
    const Tensor bias = with_bias ? b : Tensor();
    for (bool recompute : {false, true}) expect_near_all(gelu_linear(x, w, bias, recompute), want, 1e-12, 1e-12);
    auto f = [&](bool recompute) {
      return [recompute](const std::vector<Tensor>& in) {
        return gelu_linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), recompute);
      };
    };
    const std::vector<Tensor> inputs = with_bias ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x, w};
    const std::vector<Tensor> plain = grads_of(f(false), inputs, 21), again = grads_of(f(true), inputs, 21);
    for (size_t i = 0; i < inputs.size(); ++i) EXPECT_EQ(max_abs_diff(plain[i], again[i]), 0.0) << "input " << i;
    gradcheck(f(true), inputs);
  }
  // Nothing requires grad, or grad mode is off: no node is recorded.
  EXPECT_FALSE(gelu_linear(x.detach(), w.detach(), b.detach(), true).requires_grad());
  NoGradGuard no_grad;
  EXPECT_FALSE(attention_core(random_f64({1, 2, 6}, 1), 1, true).requires_grad());
}

TEST(Checkpointing, BadInputIsRefused) {
  EXPECT_ZT_ERROR(attention_core(random_f64({2, 3}, 1), 2, true), "[attention_core]", "must be [B, T, 3C]", "[2, 3]");
  EXPECT_ZT_ERROR(attention_core(random_f64({1, 2, 9}, 1), 2, false), "[attention_core]", "3 x n_head x head_dim",
                  "n_head is 2");
  CheckpointPolicy p;
  p.every_k_blocks = 0;
  EXPECT_ZT_ERROR(p.validate(), "[checkpointing]", "every_k_blocks must be >= 1, got 0");
  p.every_k_blocks = 2;
  p.mode = Recompute::selective;
  EXPECT_ZT_ERROR(p.validate(), "[checkpointing]", "every_k_blocks (2) applies only to full recomputation");
  p.mode = Recompute::full;
  BlockFn identity = [](int, const Tensor& x) { return x; };
  EXPECT_ZT_ERROR(run_blocks(0, -1, random_f64({1}, 1), identity, p, true), "[checkpointing]", "block range [0, -1)");
}

// ---- a tiny GPT with dropout under every mode ---------------------------------------------------

GptConfig tiny(int64_t n_layer, double dropout, int64_t C = 32, int64_t T = 12) {
  GptConfig c;
  c.n_layer = n_layer;
  c.n_head = 4;
  c.d_model = C;
  c.vocab_size = 70;
  c.padded_vocab = pad_vocab(70);
  c.seq_len = T;
  c.dropout = dropout;
  return c;
}

struct RunResult {
  double loss = 0;
  std::vector<Tensor> grads;
  int block_calls = 0;
};

RunResult run_model(Gpt& model, const CheckpointPolicy& policy, bool selective, bool use_gpt_flag = false) {
  auto src = model.local_source();
  const int64_t T = model.config().seq_len;
  Tensor tok = randint({2, T + 1}, 70, 77);
  const StepRng rng{5, 3, 1};
  RunResult r;
  BlockFn inner = recompute_block_fn(model, *src, rng, true, selective);
  BlockFn counted = [&](int layer, const Tensor& x) {
    ++r.block_calls;
    return inner(layer, x);
  };
  Tensor ids = narrow(tok, 1, 0, T), targets = narrow(tok, 1, 1, T);
  Tensor loss = use_gpt_flag ? model.forward_loss(*src, ids, targets, rng, true, true)
                             : forward_loss_checkpointed(model, *src, ids, targets, rng, true, policy, counted);
  backward(loss);
  r.loss = loss.item();
  for (Parameter& p : model.parameters()) {
    r.grads.push_back(clone(p.tensor.grad()));
    p.tensor.zero_grad();
  }
  return r;
}

TEST(Checkpointing, BlockCopyMatchesGptBlock) {
  Gpt model(tiny(2, 0.2), Device::cpu(), 3);
  auto src = model.local_source();
  Tensor x = randn({2, 12, 32}, 4).set_requires_grad(true);
  const StepRng rng{1, 2, 3};
  Tensor a = model.block(*src, 1, x, rng, true);
  Tensor b = block_with_recompute(model, *src, 1, x, rng, true, /*selective=*/false);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  const Tensor probe = randn(a.shape(), 8);
  backward(sum(mul(a, probe)));
  std::vector<Tensor> ga;
  for (Parameter& p : model.parameters()) ga.push_back(p.tensor.grad().defined() ? clone(p.tensor.grad()) : Tensor());
  Tensor gx = clone(x.grad());
  for (Parameter& p : model.parameters()) p.tensor.zero_grad();
  x.zero_grad();
  backward(sum(mul(b, probe)));
  EXPECT_EQ(max_abs_diff(x.grad(), gx), 0.0);
  for (size_t i = 0; i < ga.size(); ++i) {
    const Tensor g = model.parameters()[i].tensor.grad();
    ASSERT_EQ(g.defined(), ga[i].defined()) << model.parameters()[i].name;
    if (g.defined()) {
      EXPECT_EQ(max_abs_diff(g, ga[i]), 0.0) << model.parameters()[i].name;
    }
  }
}

TEST(Checkpointing, EveryModeGivesBitIdenticalGradientsWithDropout) {
  Gpt model(tiny(5, 0.1), Device::cpu(), 11);
  const RunResult plain = run_model(model, {}, false);
  EXPECT_EQ(plain.block_calls, 5);
  {
    Gpt no_dropout(tiny(5, 0.0), Device::cpu(), 11);
    EXPECT_NE(run_model(no_dropout, {}, false).loss, plain.loss) << "dropout must be active in this test";
  }
  struct Mode {
    const char* name;
    CheckpointPolicy policy;
    bool selective;
    int calls;  // block runs: once in forward, again in backward for recomputed segments
  };
  const Mode modes[] = {
      {"full k=1", {Recompute::full, 1}, false, 10},   {"full k=2 (segments 2, 2, 1)", {Recompute::full, 2}, false, 10},
      {"full k=3", {Recompute::full, 3}, false, 10},   {"full k=7 (one segment)", {Recompute::full, 7}, false, 10},
      {"selective", {Recompute::selective, 1}, true, 5}, {"selective inside full k=2", {Recompute::full, 2}, true, 10},
  };
  for (const Mode& m : modes) {
    SCOPED_TRACE(m.name);
    const RunResult r = run_model(model, m.policy, m.selective);
    EXPECT_EQ(r.loss, plain.loss);
    EXPECT_EQ(r.block_calls, m.calls);
    for (size_t i = 0; i < r.grads.size(); ++i)
      EXPECT_EQ(max_abs_diff(r.grads[i], plain.grads[i]), 0.0) << model.parameters()[i].name;
  }
  // Gpt::forward_loss's own flag (full, every block) agrees too.
  const RunResult own = run_model(model, {}, false, /*use_gpt_flag=*/true);
  EXPECT_EQ(own.loss, plain.loss);
  for (size_t i = 0; i < own.grads.size(); ++i) EXPECT_EQ(max_abs_diff(own.grads[i], plain.grads[i]), 0.0);
}

// ---- activation memory against the estimator ---------------------------------------------------

struct Measured {
  int64_t kept = 0;  // activation bytes alive between forward and backward
  int64_t peak = 0;  // activation high-water mark over forward and backward
};

constexpr int64_t kB = 2, kT = 32, kC = 64;

Measured measure(int64_t n_layer, const CheckpointPolicy& policy, bool selective) {
  Gpt model(tiny(n_layer, 0.1, kC, kT), Device::cpu(), 5);
  auto src = model.local_source();
  Tensor tok = randint({kB, kT + 1}, 70, 78);
  Tensor ids = contiguous(narrow(tok, 1, 0, kT)), targets = contiguous(narrow(tok, 1, 1, kT));
  Allocator& alloc = allocator_for(Device::cpu());
  const int64_t base = alloc.stats()[MemoryCategory::activations].current;
  alloc.reset_peak_stats();
  Measured m;
  {
    MemoryCategoryScope scope(MemoryCategory::activations);  // as the trainer does
    const StepRng rng{1, 1, 0};
    Tensor loss = forward_loss_checkpointed(model, *src, ids, targets, rng, true, policy,
                                            recompute_block_fn(model, *src, rng, true, selective));
    m.kept = alloc.stats()[MemoryCategory::activations].current - base;
    backward(loss);
  }
  m.peak = alloc.stats()[MemoryCategory::activations].peak - base;
  return m;
}

MemoryEstimateInput estimate_input(int64_t n_layer, const CheckpointPolicy& policy) {
  const GptConfig c = tiny(n_layer, 0.1, kC, kT);
  MemoryEstimateInput in;
  in.dims = GptDims{c.n_layer, c.n_head, c.d_model, c.vocab_size, c.padded_vocab, c.seq_len};
  in.precision = Precision::f32;
  in.micro_batch_size = kB;
  in.seq_len = kT;
  in.dropout = true;
  in.checkpointing = policy.mode == Recompute::full        ? ActivationCheckpointing::full
                     : policy.mode == Recompute::selective ? ActivationCheckpointing::selective
                                                           : ActivationCheckpointing::none;
  in.checkpoint_every_k_blocks = policy.every_k_blocks;
  return in;
}

// Measured per block: the difference between a 6-block and a 2-block model, over 4 blocks, so that
// the embeddings and the head cancel. The estimator's per-block figure is Korthikanti's account; this
// implementation differs from it in two known ways (documented in the report): the merged-heads
// copy of the attention output is kept besides the head-layout output (+e B T C), and dropout keeps
// no masks (it redraws them from the counter-based RNG: -2 B T C).
TEST(Checkpointing, ActivationBytesFallAsTheEstimatorPredicts) {
  struct Mode {
    const char* name;
    CheckpointPolicy policy;
    bool selective;
  };
  const Mode modes[] = {{"none", {}, false},
                        {"selective", {Recompute::selective, 1}, true},
                        {"full k=1", {Recompute::full, 1}, false},
                        {"full k=2", {Recompute::full, 2}, false}};
  const int64_t e = 4, BTC = kB * kT * kC;
  int64_t previous_peak = 0;
  for (const Mode& m : modes) {
    SCOPED_TRACE(m.name);
    const Measured small = measure(2, m.policy, m.selective), large = measure(6, m.policy, m.selective);
    const double per_block = static_cast<double>(large.kept - small.kept) / 4.0;
    const MemoryEstimateInput in = estimate_input(6, m.policy);
    const GptDims& dims = *in.dims;
    const double est_block = m.policy.mode == Recompute::full
                                 ? static_cast<double>(e * BTC) / m.policy.every_k_blocks  // one input per segment
                                 : static_cast<double>(block_activation_bytes(in, dims));
    const int64_t est_peak = estimate_memory(in).worst().activations;
    std::printf("[ activation ] %-10s kept per block %9.0f B (%5.2f e BTC), estimate %9.0f B: ratio %.3f | peak (6 blocks) "
                "%8lld B, estimate %8lld B: ratio %.3f\n",
                m.name, per_block, per_block / static_cast<double>(e * BTC), est_block, per_block / est_block,
                static_cast<long long>(large.peak), static_cast<long long>(est_peak),
                static_cast<double>(large.peak) / static_cast<double>(est_peak));
    EXPECT_NEAR(per_block / est_block, 1.0, 0.10);
    EXPECT_NEAR(static_cast<double>(large.peak) / static_cast<double>(est_peak), 1.0, 0.25);
    if (previous_peak > 0 && m.policy.mode != Recompute::full) {
      EXPECT_LT(large.peak, previous_peak);
    }
    previous_peak = large.peak;
  }
}

}  // namespace
}  // namespace zt::testing

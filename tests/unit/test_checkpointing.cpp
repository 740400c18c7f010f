// models/checkpointing: the recomputing ops against naive loops and finite differences (f64), the
// gradients of a tiny GPT with dropout under every checkpointing mode against the plain run (bit for
// bit in f32: the replay runs the same kernels on the same inputs), which blocks run_blocks replays
// in which segments when only the first N are checkpointed, and the activation bytes that backward
// keeps, measured by the allocator, against the estimator (Note [Activation memory]).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/allocator.h"
#include "gradcheck.h"
#include "launch/estimate.h"
#include "models/checkpointing.h"
#include "reference.h"
#include "selective_block.h"
#include "activation_peak.h"

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
  p.every_k_blocks = 1;
  p.num_blocks = 2;
  EXPECT_ZT_ERROR(p.validate(), "[checkpointing]", "num_blocks (2) applies only to full recomputation");
  p.mode = Recompute::full;
  p.num_blocks = -1;
  EXPECT_ZT_ERROR(p.validate(), "[checkpointing]", "num_blocks must be >= 0 (0: all blocks), got -1");
  p.num_blocks = 0;
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

// use_gpt_flag: through Gpt::forward_loss (Gpt::block, so `selective` and the call count do not apply).
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
  Tensor loss = use_gpt_flag ? model.forward_loss(*src, ids, targets, rng, true, policy)
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
      // The first N of the 5 blocks checkpointed (N in 1, count - 1, count), one or two per segment.
      {"full first 1, k=1", {Recompute::full, 1, 1}, false, 6},
      {"full first 1, k=2", {Recompute::full, 2, 1}, false, 6},
      {"full first 4, k=1", {Recompute::full, 1, 4}, false, 9},
      {"full first 4, k=2", {Recompute::full, 2, 4}, false, 9},
      {"full first 5, k=1", {Recompute::full, 1, 5}, false, 10},
      {"full first 5, k=2", {Recompute::full, 2, 5}, false, 10},
      {"full first 3, k=2, selective", {Recompute::full, 2, 3}, true, 8},
  };
  for (const Mode& m : modes) {
    SCOPED_TRACE(m.name);
    const RunResult r = run_model(model, m.policy, m.selective);
    EXPECT_EQ(r.loss, plain.loss);
    EXPECT_EQ(r.block_calls, m.calls);
    for (size_t i = 0; i < r.grads.size(); ++i)
      EXPECT_EQ(max_abs_diff(r.grads[i], plain.grads[i]), 0.0) << model.parameters()[i].name;
  }
  // Gpt::forward_loss's own policy (full, every block; full, the first 3 in segments of 2) agrees too.
  for (const CheckpointPolicy& policy : std::vector<CheckpointPolicy>{{Recompute::full, 1}, {Recompute::full, 2, 3}}) {
    const RunResult own = run_model(model, policy, false, /*use_gpt_flag=*/true);
    EXPECT_EQ(own.loss, plain.loss);
    for (size_t i = 0; i < own.grads.size(); ++i) EXPECT_EQ(max_abs_diff(own.grads[i], plain.grads[i]), 0.0);
  }
}

// ---- partial full checkpointing: which blocks run again, in which segments ---------------------

// Blocks `first` .. first + count - 1 of a small f64 residual MLP, each with its own weights, run by
// run_blocks; every block call is logged. Returns the gradients of the weights and the input.
struct LoggedRun {
  std::vector<int> calls;  // layer of each block call, forward and replays, in order
  size_t forward_calls = 0;
  std::vector<Tensor> grads;
};

LoggedRun run_logged(int first, int count, const CheckpointPolicy& policy, bool training = true) {
  constexpr int64_t kWidth = 6;
  std::vector<Tensor> weights, biases;
  for (int l = 0; l < first + count; ++l) {
    weights.push_back(random_f64({kWidth, kWidth}, 100 + static_cast<uint64_t>(l), 0.4).set_requires_grad(true));
    biases.push_back(random_f64({kWidth}, 200 + static_cast<uint64_t>(l)).set_requires_grad(true));
  }
  Tensor x = random_f64({3, kWidth}, 7).set_requires_grad(true);
  LoggedRun r;
  BlockFn block = [&](int layer, const Tensor& h) {
    r.calls.push_back(layer);
    const size_t l = static_cast<size_t>(layer);
    return add(h, tanh(linear(h, weights[l], biases[l])));
  };
  Tensor y = run_blocks(first, count, x, block, policy, training);
  r.forward_calls = r.calls.size();
  backward(sum(mul(y, random_f64(y.shape(), 9))));
  for (int l = first; l < first + count; ++l) {
    r.grads.push_back(clone(weights[static_cast<size_t>(l)].grad()));
    r.grads.push_back(clone(biases[static_cast<size_t>(l)].grad()));
  }
  r.grads.push_back(clone(x.grad()));
  return r;
}

TEST(Checkpointing, FirstBlocksOnlyAreRecomputedInTheirSegments) {
  const int first = 2, count = 5;  // a pipeline chunk's range: num_blocks counts from `first`
  const LoggedRun plain = run_logged(first, count, {});
  for (int n : {1, count - 1, count, count + 3}) {  // more than count: all of them
    for (int k : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "num_blocks " << n << ", every_k_blocks " << k);
      const CheckpointPolicy policy{Recompute::full, k, n};
      const int checkpointed = std::min(n, count);
      EXPECT_EQ(policy.checkpointed_blocks(count), checkpointed);
      const LoggedRun r = run_logged(first, count, policy);
      // Forward runs every block once, in order.
      ASSERT_EQ(r.forward_calls, static_cast<size_t>(count));
      for (int i = 0; i < count; ++i) EXPECT_EQ(r.calls[static_cast<size_t>(i)], first + i);
      // Backward replays the checkpointed blocks, segment by segment from the last: for 4 blocks in
      // segments of 2, layers 4 5, then 2 3. The plain blocks are not run again.
      std::vector<int> replays;
      std::vector<std::vector<int>> segments;
      for (int begin = first; begin < first + checkpointed; begin += k) {
        segments.emplace_back();
        for (int l = begin; l < std::min(first + checkpointed, begin + k); ++l) segments.back().push_back(l);
      }
      for (auto it = segments.rbegin(); it != segments.rend(); ++it)
        replays.insert(replays.end(), it->begin(), it->end());
      EXPECT_EQ(std::vector<int>(r.calls.begin() + count, r.calls.end()), replays);
      // The replay is the same arithmetic: every gradient bit for bit.
      ASSERT_EQ(r.grads.size(), plain.grads.size());
      for (size_t i = 0; i < r.grads.size(); ++i)
        EXPECT_EQ(max_abs_diff(r.grads[i], plain.grads[i]), 0.0) << "gradient " << i;
    }
  }
  // num_blocks 0 is all of them; without training nothing is checkpointed.
  EXPECT_EQ(run_logged(first, count, {Recompute::full, 2, 0}).calls.size(), static_cast<size_t>(2 * count));
  EXPECT_EQ(run_logged(first, count, {Recompute::full, 1, 3}, /*training=*/false).calls.size(),
            static_cast<size_t>(count));
  EXPECT_EQ(CheckpointPolicy{}.checkpointed_blocks(count), 0);
  EXPECT_EQ((CheckpointPolicy{Recompute::selective, 1}.checkpointed_blocks(count)), 0);
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
  in.checkpoint_num_blocks = policy.num_blocks;
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

// Checkpointing the first N of 6 blocks: forward keeps one input per segment of the checkpointed
// blocks and all of the plain blocks' tensors, so the bytes kept and the peak lie between those of
// full and of none. Per plain block that is what a block keeps without checkpointing.
TEST(Checkpointing, PartialCheckpointingKeepsTheBytesTheEstimatorPredicts) {
  const int64_t e = 4, BTC = kB * kT * kC, n_layer = 6;
  const Measured none = measure(n_layer, {}, false), full = measure(n_layer, {Recompute::full, 1}, false);
  const int64_t outside_blocks = full.kept - n_layer * e * BTC;  // embeddings and head: full keeps 6 block inputs
  const MemoryEstimateInput plain_in = estimate_input(n_layer, {});
  const int64_t est_block = block_activation_bytes(plain_in, *plain_in.dims);
  const int64_t est_none = estimate_memory(plain_in).worst().activations;
  const int64_t est_full = estimate_memory(estimate_input(n_layer, {Recompute::full, 1})).worst().activations;
  // Segments 1+1+1+1, 2+2, 1, and 3+2 (whose re-run of 3 blocks outgrows the one plain block).
  const std::vector<CheckpointPolicy> policies = {
      {Recompute::full, 1, 4}, {Recompute::full, 2, 4}, {Recompute::full, 1, 1}, {Recompute::full, 3, 5}};
  for (const CheckpointPolicy& policy : policies) {
    SCOPED_TRACE(::testing::Message() << "first " << policy.num_blocks << ", every " << policy.every_k_blocks);
    const Measured m = measure(n_layer, policy, false);
    const int64_t plain = n_layer - policy.num_blocks;
    const int64_t segments = (policy.num_blocks + policy.every_k_blocks - 1) / policy.every_k_blocks;
    const double per_plain_block =
        static_cast<double>(m.kept - outside_blocks - segments * e * BTC) / static_cast<double>(plain);
    const int64_t est_peak = estimate_memory(estimate_input(n_layer, policy)).worst().activations;
    std::printf("[ activation ] first %d of 6, k=%d: kept per plain block %9.0f B, estimate %9lld B: ratio %.3f | peak "
                "%8lld B, estimate %8lld B: ratio %.3f\n",
                policy.num_blocks, policy.every_k_blocks, per_plain_block, static_cast<long long>(est_block),
                per_plain_block / static_cast<double>(est_block), static_cast<long long>(m.peak),
                static_cast<long long>(est_peak), static_cast<double>(m.peak) / static_cast<double>(est_peak));
    EXPECT_NEAR(per_plain_block / static_cast<double>(est_block), 1.0, 0.10);
    EXPECT_NEAR(static_cast<double>(m.peak) / static_cast<double>(est_peak), 1.0, 0.25);
    EXPECT_GT(m.kept, full.kept);
    EXPECT_LT(m.kept, none.kept);
    EXPECT_GT(m.peak, full.peak);
    EXPECT_LT(m.peak, none.peak);
    EXPECT_GT(est_peak, est_full);
    EXPECT_LT(est_peak, est_none);
  }
}

// The chunked head and loss (Note [Chunked loss]) against whole logits, on a head-heavy model (a
// vocabulary of 2000, N = 256 rows, C = 32): the activation peak falls by what the estimator says,
// and the peak with either is the estimator's.
TEST(Checkpointing, ChunkedLossKeepsTheBytesTheEstimatorPredicts) {
  constexpr int64_t B = 4, T = 64, C = 32, V = 2000;
  GptConfig c = tiny(1, 0.0, C, T);
  c.vocab_size = V;
  c.padded_vocab = pad_vocab(V);
  auto peak_of = [&](int64_t chunk_rows) {
    GptConfig mc = c;
    mc.loss_chunk_rows = chunk_rows;
    Gpt model(mc, Device::cpu(), 5);
    return test::activation_peak_of_step(model, B, T, V);
  };
  auto estimate = [&](int64_t chunk_rows) {
    MemoryEstimateInput in;
    in.dims = GptDims{c.n_layer, c.n_head, c.d_model, c.vocab_size, c.padded_vocab, c.seq_len};
    in.precision = Precision::f32;
    in.micro_batch_size = B;
    in.seq_len = T;
    in.loss_chunk_rows = chunk_rows;
    EXPECT_EQ(resolved_loss_chunk_rows(in), chunk_rows);
    return estimate_memory(in).worst().activations;
  };
  const int64_t whole = peak_of(0), chunked = peak_of(32), est_whole = estimate(0), est_chunked = estimate(32);
  std::printf("[ activation ] head: whole logits %lld B (estimate %lld), chunks of 32 rows %lld B (estimate %lld); "
              "saved %lld B, estimate %lld B\n",
              static_cast<long long>(whole), static_cast<long long>(est_whole), static_cast<long long>(chunked),
              static_cast<long long>(est_chunked), static_cast<long long>(whole - chunked),
              static_cast<long long>(est_whole - est_chunked));
  EXPECT_NEAR(static_cast<double>(whole) / static_cast<double>(est_whole), 1.0, 0.25);
  EXPECT_NEAR(static_cast<double>(chunked) / static_cast<double>(est_chunked), 1.0, 0.25);
  EXPECT_NEAR(static_cast<double>(whole - chunked) / static_cast<double>(est_whole - est_chunked), 1.0, 0.15);
  EXPECT_LT(chunked, whole / 2);
}

}  // namespace
}  // namespace zt::testing

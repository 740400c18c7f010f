// ranks: 2 4
// Tensor and sequence parallelism against one process. The world is the tensor-parallel group
// (TP = 2 or 4), and on 4 ranks also a 2 (dp) x 2 (tp) mesh. Every op's forward and gradient is
// checked against the single-process op on the whole tensors (each rank can build every rank's
// inputs: they come from counter-based draws); the GPT's initial shards, logits, loss and gradients
// equal the single-process model's; several AdamW steps (accumulation, clipping, dropout) give the
// same parameters; bad meshes are refused with their reason.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "unit/activation_peak.h"
#include "launch/config.h"
#include "launch/estimate.h"
#include "launch/model_parallel.h"
#include "launch/trainer.h"
#include "models/gpt.h"
#include "models/hf_gpt2.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/mesh.h"
#include "parallel/tensor_parallel/comm_ops.h"
#include "parallel/tensor_parallel/cross_entropy.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/sharding.h"
#include "parallel/zero/zero_engine.h"

namespace zt {
namespace {

using tp::TpGroup;
using tp::TpSplit;

double rel_err(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return 1e30;
  const double scale = std::max(norm(want), 1e-12);
  return norm(sub(to(got, DType::f64), to(want, DType::f64))) / scale;
}

Tensor leaf(const Tensor& t) {
  Tensor c = clone(t);
  c.set_requires_grad(true);
  return c;
}

Tensor draw(const Shape& s, uint64_t seed) { return randn(s, seed); }

// Rank r's chunk of dim, and all ranks' tensors joined along dim.
Tensor chunk(const Tensor& x, int64_t dim, int rank, int size) {
  const int64_t n = x.size(dim) / size;
  return contiguous(narrow(x, dim, rank * n, n));
}

class TensorParallel : public ::testing::Test {
 protected:
  void SetUp() override { world = comm::MpiCommunicator::world(); }
  int rank() const { return world->rank(); }
  int size() const { return world->size(); }
  std::unique_ptr<comm::Communicator> world;
};

// ---- the collectives as autograd ops --------------------------------------------------------

TEST_F(TensorParallel, CommOpsForwardAndBackward) {
  const int r = rank(), n = size();
  comm::Communicator& g = *world;
  for (int64_t dim : {0, 1, 2}) {
    Shape local{2, 3, 5};
    Shape whole = local;
    whole[static_cast<size_t>(dim)] *= n;
    auto per_rank = [&](uint64_t seed, const Shape& s) {  // every rank's tensor of a family
      std::vector<Tensor> v;
      for (int k = 0; k < n; ++k) v.push_back(draw(s, seed + static_cast<uint64_t>(k)));
      return v;
    };
    auto total = [&](const std::vector<Tensor>& v) {
      Tensor s = v[0];
      for (size_t k = 1; k < v.size(); ++k) s = add(s, v[k]);
      return s;
    };
    const std::string where = fmt::format("dim {} rank {}", dim, r);

    {  // gather_from_tp: all-gather forward, own chunk backward
      std::vector<Tensor> xs = per_rank(100, local);
      Tensor x = leaf(xs[static_cast<size_t>(r)]), grad_out = draw(whole, 150);
      Tensor y = tp::gather_from_tp(x, g, dim);
      EXPECT_EQ(max_abs_diff(y, cat(xs, dim)), 0.0) << where;
      backward(y, grad_out);
      EXPECT_EQ(max_abs_diff(x.grad(), chunk(grad_out, dim, r, n)), 0.0) << where;
    }
    {  // scatter_to_tp: own chunk forward, all-gather backward
      Tensor x = leaf(draw(whole, 200));
      std::vector<Tensor> gs = per_rank(210, local);
      Tensor y = tp::scatter_to_tp(x, g, dim);
      EXPECT_EQ(max_abs_diff(y, chunk(x.detach(), dim, r, n)), 0.0) << where;
      backward(y, gs[static_cast<size_t>(r)]);
      EXPECT_EQ(max_abs_diff(x.grad(), cat(gs, dim)), 0.0) << where;
    }
    {  // gather_from_sequence_parallel: all-gather forward, reduce-scatter backward
      std::vector<Tensor> xs = per_rank(300, local), gs = per_rank(310, whole);
      Tensor x = leaf(xs[static_cast<size_t>(r)]);
      Tensor y = tp::gather_from_sequence_parallel(x, g, dim);
      EXPECT_EQ(max_abs_diff(y, cat(xs, dim)), 0.0) << where;
      backward(y, gs[static_cast<size_t>(r)]);
      EXPECT_LT(rel_err(x.grad(), chunk(total(gs), dim, r, n)), 1e-6) << where;
    }
    {  // reduce_scatter_to_sequence_parallel: reduce-scatter forward, all-gather backward
      std::vector<Tensor> xs = per_rank(400, whole), gs = per_rank(410, local);
      Tensor x = leaf(xs[static_cast<size_t>(r)]);
      Tensor y = tp::reduce_scatter_to_sequence_parallel(x, g, dim);
      EXPECT_LT(rel_err(y, chunk(total(xs), dim, r, n)), 1e-6) << where;
      backward(y, gs[static_cast<size_t>(r)]);
      EXPECT_EQ(max_abs_diff(x.grad(), cat(gs, dim)), 0.0) << where;
    }
  }
  // copy_to_tp: identity forward, all-reduce backward; reduce_from_tp: the reverse.
  std::vector<Tensor> gs, xs;
  for (int k = 0; k < n; ++k) gs.push_back(draw({3, 4}, 500 + static_cast<uint64_t>(k)));
  for (int k = 0; k < n; ++k) xs.push_back(draw({3, 4}, 600 + static_cast<uint64_t>(k)));
  Tensor x = leaf(draw({3, 4}, 499));
  Tensor y = tp::copy_to_tp(x, g);
  EXPECT_EQ(max_abs_diff(y, x.detach()), 0.0);
  backward(y, gs[static_cast<size_t>(r)]);
  Tensor want = gs[0];
  for (int k = 1; k < n; ++k) want = add(want, gs[static_cast<size_t>(k)]);
  EXPECT_LT(rel_err(x.grad(), want), 1e-6);
  Tensor x2 = leaf(xs[static_cast<size_t>(r)]), grad_out = draw({3, 4}, 700);
  Tensor y2 = tp::reduce_from_tp(x2, g);
  Tensor sum_x = xs[0];
  for (int k = 1; k < n; ++k) sum_x = add(sum_x, xs[static_cast<size_t>(k)]);
  EXPECT_LT(rel_err(y2, sum_x), 1e-6);
  backward(y2, grad_out);
  EXPECT_EQ(max_abs_diff(x2.grad(), grad_out), 0.0);
  // A dim that does not divide is refused by name.
  try {
    tp::reduce_scatter_to_sequence_parallel(draw({2, 2 * n + 1, 3}, 1), g, 1);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the tensor-parallel size"), std::string::npos) << e.what();
  }
}

// ---- sharding ---------------------------------------------------------------------------------

TEST_F(TensorParallel, ShardsRoundTripAndRandnShardsEqualTheWholeDraw) {
  const int r = rank(), n = size();
  const Shape whole{12 * n, 8};
  for (TpSplit split : {TpSplit::replicated, TpSplit::rows, TpSplit::columns, TpSplit::qkv_rows}) {
    Shape s = whole;
    if (split == TpSplit::columns) s = {8, 12 * n};
    Tensor full = draw(s, 42);
    Tensor mine = tp::take_shard(full, split, r, n);
    EXPECT_EQ(max_abs_diff(tp::randn_shard(s, split, r, n, 42, Device::cpu()), mine), 0.0) << tp::tp_split_name(split);
    EXPECT_EQ(max_abs_diff(tp::gather_shards(mine, split, *world), full), 0.0) << tp::tp_split_name(split);
  }
  // qkv_rows: rank r's rows are q, k and v rows of its own heads.
  Tensor qkv = arange(12 * n, DType::f32);
  std::vector<float> got = tp::take_shard(qkv, TpSplit::qkv_rows, r, n).to_vector<float>();
  const int m = 4;  // rows of one section per rank
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < m; ++i)
      EXPECT_EQ(got[static_cast<size_t>(s * m + i)], static_cast<float>(s * 4 * n + r * m + i));
}

// ---- layers ---------------------------------------------------------------------------------

TEST_F(TensorParallel, VocabParallelCrossEntropyMatchesTheWholeVocabulary) {
  const int r = rank(), n = size();
  const int64_t V = 128, valid = 70, N = 10;  // with 4 ranks the last shard is all padding
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor whole = to(mul_scalar(draw({2, N / 2, V}, 5), 3.0), dt);
    std::vector<int64_t> t = randint({N}, valid, 9).to_vector<int64_t>();
    t[1] = -100;
    t[7] = -100;
    t[3] = valid - 1;
    t[4] = 0;
    Tensor targets = from_vector(t, {2, N / 2});
    Tensor ref_in = leaf(whole);
    Tensor ref = cross_entropy(ref_in, targets, -100, valid);
    backward(mul_scalar(ref, 0.7));
    Tensor mine = leaf(chunk(whole, 2, r, n));
    Tensor loss = tp::vocab_parallel_cross_entropy(mine, targets, *world, -100, valid);
    backward(mul_scalar(loss, 0.7));
    const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
    EXPECT_LT(std::abs(loss.item() - ref.item()) / std::abs(ref.item()), tol) << dtype_name(dt);
    EXPECT_LT(rel_err(mine.grad(), chunk(ref_in.grad(), 2, r, n)), tol) << dtype_name(dt) << " rank " << r;
  }
  // Every target ignored: loss and gradient 0.
  Tensor x = leaf(draw({4, 128 / n}, 3));
  Tensor loss = tp::vocab_parallel_cross_entropy(x, full({4}, -100, DType::i64), *world, -100, valid);
  backward(loss);
  EXPECT_EQ(loss.item(), 0.0);
  EXPECT_EQ(norm(x.grad()), 0.0);
  // Bad targets and vocabularies are named.
  auto expect_error = [](const std::function<void()>& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error([&] { tp::vocab_parallel_cross_entropy(x, full({4}, valid, DType::i64), *world, -100, valid); },
               "target 70 at row 0 is out of range [0, 70)");
  expect_error([&] { tp::vocab_parallel_cross_entropy(x, full({4}, 1, DType::i64), *world, -100, 129); },
               "valid_vocab 129 must be in [1, 128]");
}

// Note [Chunked vocabulary-parallel loss]: the head and loss chunk by chunk on each rank's rows of
// the vocabulary against one process's cross_entropy(linear(x, W)) in f64, for chunks of one row,
// a few rows, all rows and more, with ignored rows, vocabulary padding and (on 4 ranks) a shard
// that is all padding. x's gradient is the sum of the ranks' parts (enter_tp_region's backward).
TEST_F(TensorParallel, ChunkedVocabParallelLossMatchesOneProcess) {
  const int r = rank(), n = size();
  const int64_t V = 128, valid = 70, B = 2, T = 5, N = B * T, C = 12;
  Tensor X = draw({B, T, C}, 31), W = mul_scalar(draw({V, C}, 32), 0.5);
  std::vector<int64_t> t = randint({N}, valid, 33).to_vector<int64_t>();
  t[2] = -100;
  t[5] = valid - 1;
  t[6] = 0;
  Tensor targets = from_vector(t, {B, T});
  Tensor ref_x = leaf(to(X, DType::f64)), ref_w = leaf(to(W, DType::f64));
  Tensor ref = cross_entropy(linear(ref_x, ref_w, Tensor()), targets, -100, valid);
  backward(mul_scalar(ref, 0.7));
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    for (int64_t rows : {int64_t{1}, int64_t{3}, N, N + 5}) {
      const std::string what = fmt::format("{} chunks of {} rows, rank {}", dtype_name(dt), rows, r);
      Tensor x = leaf(to(X, dt)), w = leaf(to(tp::take_shard(W, TpSplit::rows, r, n), dt));
      Tensor loss = tp::vocab_parallel_linear_cross_entropy(tp::enter_tp_region(x, TpGroup{world.get(), false}), w,
                                                            targets, rows, *world, -100, valid);
      backward(mul_scalar(loss, 0.7));
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 3e-2;
      EXPECT_LT(std::abs(loss.item() - ref.item()) / std::abs(ref.item()), tol) << what;
      EXPECT_LT(rel_err(to(x.grad(), DType::f64), ref_x.grad()), tol) << what;
      EXPECT_LT(rel_err(to(w.grad(), DType::f64), tp::take_shard(ref_w.grad(), TpSplit::rows, r, n)), tol) << what;
    }
  }
  // Every target ignored: loss and gradients 0. Bad input is named.
  Tensor x = leaf(X), w = leaf(tp::take_shard(W, TpSplit::rows, r, n));
  Tensor loss = tp::vocab_parallel_linear_cross_entropy(x, w, full({B, T}, -100, DType::i64), 4, *world, -100, valid);
  backward(loss);
  EXPECT_EQ(loss.item(), 0.0);
  EXPECT_EQ(norm(x.grad()), 0.0);
  EXPECT_EQ(norm(w.grad()), 0.0);
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(error_of([&] { tp::vocab_parallel_linear_cross_entropy(X, w, targets, 0, *world); })
                .find("chunk_rows must be >= 1, got 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tp::vocab_parallel_linear_cross_entropy(X, w, full({B, T}, valid, DType::i64), 4, *world, -100, valid); })
                .find("target 70 at row 0 is out of range [0, 70)"),
            std::string::npos);
}

TEST_F(TensorParallel, VocabParallelEmbeddingMatchesTheWholeTable) {
  const int r = rank(), n = size();
  const int64_t V = 16 * n, C = 6, T = 4 * n;
  Tensor table = draw({V, C}, 11);
  Tensor ids = randint({2, T}, V, 12);
  Tensor ref_w = leaf(table);
  Tensor ref = embedding(ref_w, ids);
  Tensor grad_out = draw({2, T, C}, 13);
  backward(ref, grad_out);
  for (bool sp : {false, true}) {
    Tensor w = leaf(tp::take_shard(table, TpSplit::rows, r, n));
    Tensor y = tp::vocab_parallel_embedding(w, ids, TpGroup{world.get(), sp});
    const Tensor want = sp ? chunk(ref.detach(), 1, r, n) : ref.detach();
    EXPECT_LT(rel_err(y, want), 1e-7) << "sp " << sp;
    backward(y, sp ? chunk(grad_out, 1, r, n) : grad_out);
    EXPECT_LT(rel_err(w.grad(), tp::take_shard(ref_w.grad(), TpSplit::rows, r, n)), 1e-6) << "sp " << sp;
  }
  try {
    tp::vocab_parallel_embedding(tp::take_shard(table, TpSplit::rows, r, n), full({1, 2}, V, DType::i64),
                                 TpGroup{world.get(), false});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("token id {} at position 0 is outside the vocabulary", V)),
              std::string::npos)
        << e.what();
  }
}

// y = row(gelu(column(x))) + b2: the MLP pattern, replicated or sequence-parallel activations.
TEST_F(TensorParallel, ColumnThenRowParallelLinearMatchOneProcess) {
  const int r = rank(), n = size();
  const int64_t B = 2, T = 2 * n, C = 8, F = 8 * n;
  Tensor X = draw({B, T, C}, 20), W1 = draw({F, C}, 21), B1 = draw({F}, 22), W2 = draw({C, F}, 23), B2 = draw({C}, 24);
  Tensor G = draw({B, T, C}, 25);
  std::vector<Tensor> ref{leaf(X), leaf(W1), leaf(B1), leaf(W2), leaf(B2)};
  Tensor want = linear(gelu(linear(ref[0], ref[1], ref[2])), ref[3], ref[4]);
  backward(want, G);
  for (bool sp : {false, true}) {
    const TpGroup g{world.get(), sp};
    Tensor x = leaf(sp ? chunk(X, 1, r, n) : X);
    Tensor w1 = leaf(tp::take_shard(W1, TpSplit::rows, r, n)), b1 = leaf(tp::take_shard(B1, TpSplit::rows, r, n));
    Tensor w2 = leaf(tp::take_shard(W2, TpSplit::columns, r, n)), b2 = leaf(B2);
    // Under sequence parallelism the replicated bias sees part of the sequence: the model passes
    // such parameters through copy_to_tp, which sums their gradients over ranks.
    Tensor b2_use = sp ? tp::copy_to_tp(b2, *world) : b2;
    Tensor y = tp::row_parallel_linear(gelu(tp::column_parallel_linear(x, w1, b1, g)), w2, b2_use, g);
    EXPECT_LT(rel_err(y, sp ? chunk(want.detach(), 1, r, n) : want.detach()), 1e-6) << "sp " << sp;
    backward(y, sp ? chunk(G, 1, r, n) : G);
    const std::string at = fmt::format("sp {} rank {}", sp, r);
    EXPECT_LT(rel_err(x.grad(), sp ? chunk(ref[0].grad(), 1, r, n) : ref[0].grad()), 1e-6) << at;
    EXPECT_LT(rel_err(w1.grad(), tp::take_shard(ref[1].grad(), TpSplit::rows, r, n)), 1e-6) << at;
    EXPECT_LT(rel_err(b1.grad(), tp::take_shard(ref[2].grad(), TpSplit::rows, r, n)), 1e-6) << at;
    EXPECT_LT(rel_err(w2.grad(), tp::take_shard(ref[3].grad(), TpSplit::columns, r, n)), 1e-6) << at;
    EXPECT_LT(rel_err(b2.grad(), ref[4].grad()), 1e-6) << at;
    // gather_output gives the whole column-parallel output on every rank.
    Tensor full_out = tp::column_parallel_linear(x.detach(), w1.detach(), b1.detach(), g, true);
    Tensor whole_in = sp ? X : x.detach();
    EXPECT_LT(rel_err(full_out, linear(whole_in, W1, B1)), 1e-6) << at;
  }
}

// ---- the GPT ------------------------------------------------------------------------------------

constexpr int64_t kB = 2, kT = 16, kAccum = 2, kSteps = 3;
constexpr double kLr = 3e-3, kClip = 0.5;

GptConfig tiny_config(double dropout) {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 4;  // divisible by tp 2 and 4
  c.d_model = 32;
  c.vocab_size = 70;
  c.padded_vocab = pad_vocab(70);  // 128: with tp 4 the last vocabulary shard is all padding
  c.seq_len = kT;
  c.dropout = dropout;
  return c;
}

AdamWConfig adamw_config() {  // eps as in test_zero.cpp (zero-in-exact-arithmetic gradients)
  AdamWConfig a;
  a.eps = 1e-5;
  a.beta1 = 0.9;
  a.beta2 = 0.95;
  a.weight_decay = 0.1;
  return a;
}

Tensor global_tokens(int64_t step, int64_t micro, int64_t rows) {
  return randint({rows, kT + 1}, 70, 2000 + static_cast<uint64_t>(step * 16 + micro), 0, DType::i64);
}

StepRng step_rng(int64_t step, int64_t micro) {
  return StepRng{99, static_cast<uint64_t>(step), static_cast<uint64_t>(micro)};
}

// One process over the global batch of `rows` sequences: the reference parameters after training.
std::vector<Tensor> reference_parameters(const GptConfig& cfg, int64_t rows) {
  Gpt model(cfg, Device::cpu(), 7);
  auto src = model.local_source();
  AdamW opt(adamw_config());
  for (Parameter& p : model.parameters()) opt.add_param(p.tensor, p.decay, p.name);
  for (int64_t s = 0; s < kSteps; ++s) {
    for (Parameter& p : model.parameters()) p.tensor.zero_grad();
    for (int64_t m = 0; m < kAccum; ++m) {
      Tensor tok = global_tokens(s, m, rows);
      Tensor loss = model.forward_loss(*src, narrow(tok, 1, 0, kT), narrow(tok, 1, 1, kT), step_rng(s, m), true);
      backward(mul_scalar(loss, 1.0 / kAccum));
    }
    std::vector<Tensor> grads;
    for (Parameter& p : model.parameters()) grads.push_back(p.tensor.grad());
    opt.step(grads, kLr, clip_scale(std::sqrt(grad_norm_squared(grads)), kClip));
  }
  std::vector<Tensor> out;
  for (Parameter& p : model.parameters()) out.push_back(clone(p.tensor.detach()));
  return out;
}

class TpGpt : public TensorParallel, public ::testing::WithParamInterface<bool> {};

TEST_P(TpGpt, InitLogitsLossAndGradientsEqualOneProcess) {
  const bool sp = GetParam();
  const int r = rank(), n = size();
  const GptConfig cfg = tiny_config(0.0);
  Gpt ref(cfg, Device::cpu(), 7);
  Gpt model(cfg, Device::cpu(), 7, {}, TpGroup{world.get(), sp});
  ASSERT_EQ(model.parameters().size(), ref.parameters().size());
  for (size_t i = 0; i < ref.parameters().size(); ++i) {
    const Parameter& p = model.parameters()[i];
    EXPECT_EQ(max_abs_diff(p.tensor, tp::take_shard(ref.parameters()[i].tensor, p.tp_split, r, n)), 0.0) << p.name;
    EXPECT_EQ(p.tp_replicated, p.tp_split == TpSplit::replicated) << p.name;
  }
  auto ref_src = ref.local_source();
  auto src = model.local_source();
  Tensor tok = global_tokens(0, 0, kB);
  Tensor ids = narrow(tok, 1, 0, kT), targets = narrow(tok, 1, 1, kT);
  EXPECT_LT(rel_err(model.forward_logits(*src, ids), ref.forward_logits(*ref_src, ids)), 1e-5);
  Tensor want = ref.forward_loss(*ref_src, ids, targets, StepRng{}, true);
  Tensor got = model.forward_loss(*src, ids, targets, StepRng{}, true);
  EXPECT_LT(std::abs(got.item() - want.item()), 1e-5 * std::abs(want.item()));
  backward(want);
  backward(got);
  for (size_t i = 0; i < ref.parameters().size(); ++i) {
    const Parameter& p = model.parameters()[i];
    Tensor whole = tp::gather_shards(p.tensor.grad(), p.tp_split, *world);
    EXPECT_LT(rel_err(whole, ref.parameters()[i].tensor.grad()), 1e-5) << p.name << " sp " << sp << " rank " << r;
    // Replicated parameters' gradients are the same on every rank.
    if (p.tp_replicated) {
      EXPECT_LT(rel_err(p.tensor.grad(), ref.parameters()[i].tensor.grad()), 1e-5) << p.name;
    }
  }
  // Sampling runs (padding the window under sequence parallelism) and agrees with one process.
  std::vector<int32_t> a = model.generate(*src, {1, 2, 3}, 5, 0.8, 10, 3);
  std::vector<int32_t> b = ref.generate(*ref_src, {1, 2, 3}, 5, 0.8, 10, 3);
  EXPECT_EQ(a, b);
}

// Training with ZeroEngine: dp groups of `dp` ranks (stage `stage`), tp groups of the rest.
void train_and_compare(comm::Communicator& world, MeshShape shape, int stage, bool sp) {
  Mesh mesh(world, shape);
  // Dropout on with one dp rank: the masks must match one process's too. (Across dp ranks the masks
  // are drawn per local batch, so they differ from one process over the global batch by design.)
  const GptConfig cfg = tiny_config(shape.dp == 1 ? 0.1 : 0.0);
  const std::vector<Tensor> want = reference_parameters(cfg, kB * shape.dp);
  Gpt model(cfg, Device::cpu(), 7, {}, TpGroup{&mesh.tp(), sp});
  zero::ZeroConfig zc;
  zc.stage = stage;
  zc.bucket_mb = 0.01;
  zero::ZeroEngine engine(model.parameters(), model.num_units(), mesh.dp(), adamw_config(), zc);
  engine.set_grad_norm_groups({&mesh.tp()}, mesh.coord().tp);
  for (int64_t s = 0; s < kSteps; ++s) {
    for (int64_t m = 0; m < kAccum; ++m) {
      engine.begin_micro_batch(m == kAccum - 1);
      Tensor tok = narrow(global_tokens(s, m, kB * shape.dp), 0, mesh.coord().dp * kB, kB);
      Tensor loss = model.forward_loss(engine, narrow(tok, 1, 0, kT), narrow(tok, 1, 1, kT), step_rng(s, m), true);
      backward(mul_scalar(loss, 1.0 / kAccum));
      engine.end_backward();
    }
    EXPECT_FALSE(engine.step(kLr, kClip).skipped);
  }
  for (int u = 0; u < model.num_units(); ++u) {
    std::vector<Tensor> got = engine.acquire(u);
    std::vector<int> idx = model.unit_parameter_indices(u);
    for (size_t k = 0; k < idx.size(); ++k) {
      const Parameter& p = model.parameters()[static_cast<size_t>(idx[k])];
      Tensor whole = tp::gather_shards(got[k], p.tp_split, mesh.tp());
      EXPECT_LT(rel_err(whole, want[static_cast<size_t>(idx[k])]), 1e-5)
          << p.name << " " << shape.str() << " stage " << stage << " sp " << sp << " rank " << world.rank();
    }
    engine.release(u);
  }
}

TEST_P(TpGpt, AdamWStepsEqualOneProcess) { train_and_compare(*world, MeshShape{1, size(), 1}, 1, GetParam()); }

TEST_P(TpGpt, TpTimesDpWithZeroEqualsOneProcess) {
  if (size() != 4) GTEST_SKIP() << "needs 4 ranks (dp 2 x tp 2)";
  for (int stage : {0, 1, 2, 3}) train_and_compare(*world, MeshShape{2, 2, 1}, stage, GetParam());
}

INSTANTIATE_TEST_SUITE_P(SequenceParallel, TpGpt, ::testing::Bool(),
                         [](const auto& info) { return info.param ? std::string("sp") : std::string("no_sp"); });

TEST_F(TensorParallel, BadMeshesAreRefused) {
  const TpGroup g{world.get(), true};
  auto expect_error = [](const std::function<void()>& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  GptConfig heads = tiny_config(0.0);
  heads.n_head = 3;
  heads.d_model = 24;
  expect_error([&] { Gpt(heads, Device::cpu(), 7, {}, g); },
               fmt::format("model.n_head (3) is not divisible by the tensor-parallel size ({})", size()));
  GptConfig vocab = tiny_config(0.0);
  vocab.padded_vocab = 129;
  expect_error([&] { Gpt(vocab, Device::cpu(), 7, {}, g); },
               fmt::format("the padded vocabulary (129) is not divisible by the tensor-parallel size ({})", size()));
  Gpt model(tiny_config(0.0), Device::cpu(), 7, {}, g);
  auto src = model.local_source();
  const int64_t T = 2 * size() + 1;
  const Tensor ids = zeros({1, T}, DType::i64);
  expect_error([&] { model.forward_loss(*src, ids, ids, StepRng{}, false); },
               fmt::format("sequence length {} is not divisible by the tensor-parallel size {}", T, size()));
}

// The chunked vocabulary-parallel loss keeps the activation bytes per rank the estimator says: the
// head's peak with whole local logits against chunks of 32 rows, f32 on the CPU.
// The vocabulary-parallel loss keeps the activation bytes per rank the estimator says: the head's
// peak with whole local logits and with chunks of 32 rows, in f32 and bf16 on the CPU.
TEST_F(TensorParallel, ChunkedLossKeepsTheBytesTheEstimatorPredicts) {
  constexpr int64_t B = 4, T = 64, V = 4000;
  GptConfig c = tiny_config(0.0);
  c.seq_len = T;
  c.vocab_size = V;
  c.padded_vocab = pad_vocab(V);
  for (DType dt : {DType::f32, DType::bf16}) {
  auto peak_of = [&](int64_t chunk_rows) {
    GptConfig mc = c;
    mc.compute_dtype = dt;
    mc.loss_chunk_rows = chunk_rows;
    Gpt model(mc, Device::cpu(), 5, {}, TpGroup{world.get(), false});
    return test::activation_peak_of_step(model, B, T, V);
  };
  auto estimate = [&](int64_t chunk_rows) {
    MemoryEstimateInput in;
    in.dims = GptDims{c.n_layer, c.n_head, c.d_model, c.vocab_size, c.padded_vocab, c.seq_len};
    in.precision = dt == DType::f32 ? Precision::f32 : Precision::bf16;
    in.micro_batch_size = B;
    in.seq_len = T;
    in.tp = size();
    in.loss_chunk_rows = chunk_rows;
    return estimate_memory(in).worst().activations;
  };
  const int64_t whole = peak_of(0), chunked = peak_of(32), est_whole = estimate(0), est_chunked = estimate(32);
  if (rank() == 0)
    std::printf("[ activation ] %s tp %d head: whole local logits %lld B (estimate %lld), chunks of 32 rows %lld B "
                "(estimate %lld)\n",
                dtype_name(dt), size(), static_cast<long long>(whole), static_cast<long long>(est_whole),
                static_cast<long long>(chunked), static_cast<long long>(est_chunked));
  EXPECT_NEAR(static_cast<double>(whole) / static_cast<double>(est_whole), 1.0, 0.25) << dtype_name(dt);
  EXPECT_NEAR(static_cast<double>(chunked) / static_cast<double>(est_chunked), 1.0, 0.25) << dtype_name(dt);
  EXPECT_LT(chunked, whole / 2) << dtype_name(dt);
  }
}

// ---- `zerotrain train` with tp > 1 ---------------------------------------------------------------

// f32, and optimizer.eps as adamw_config()'s: zero-in-exact-arithmetic gradients stay below it.
TrainConfig train_config(int tp, bool sp, const std::string& dir, int64_t loss_chunk_rows = -1) {
  TrainConfig cfg = parse_config_text(fmt::format(R"(
    model {{ preset: tiny seq_len: 32 dropout: 0.1 }}
    optimizer {{ eps: 1e-5 }}
    precision {{ dtype: f32 }}
    schedule {{ warmup_steps: 1 }}
    train {{ steps: 3 micro_batch_size: 2 grad_accumulation: 2 seed: 5 device: cpu }}
    data {{ train: "embedded:" val: "embedded:" val_every: 3 val_steps: 1 tokenizer: "byte" }}
    checkpoint {{ dir: "{}" resume: "none" }}
    logging {{ every: 100 sample_every: 0 }}
    parallel {{ tp: {} sequence_parallel: {} zero_stage: 1 loss_chunk_rows: {} }})",
                                                  dir, tp, sp ? "true" : "false", loss_chunk_rows));
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

TEST_F(TensorParallel, TrainerRunsTpAndMatchesOneProcess) {
  const std::filesystem::path root = std::filesystem::temp_directory_path() / fmt::format("zt_tp_train_{}", size());
  if (rank() == 0) std::filesystem::remove_all(root);
  world->barrier()->wait();
  // The reference: every rank trains the same single-process model on a group of its own.
  std::unique_ptr<comm::Communicator> alone = world->split(rank(), 0);
  const TrainOutcome want = train(train_config(1, false, (root / fmt::format("one_{}", rank())).string()), *alone,
                                  Device::cpu());
  const TrainOutcome got = train(train_config(size(), true, (root / "tp").string()), *world, Device::cpu());
  EXPECT_EQ(got.steps_done, 3);
  EXPECT_LT(std::abs(got.last_loss - want.last_loss), 1e-5 * want.last_loss);
  EXPECT_LT(std::abs(got.last_val_loss - want.last_val_loss), 1e-5 * want.last_val_loss);
  // Note [TP checkpoints]: one series per tp rank.
  const auto series = root / "tp" / fmt::format("tp_{}_of_{}", rank(), size());
  EXPECT_TRUE(std::filesystem::is_directory(series / "step_00000003")) << series;
  // Note [Chunked vocabulary-parallel loss]: the loss in chunks of 16 of a micro-batch's 64 rows
  // trains the same model.
  const TrainOutcome chunked = train(train_config(size(), true, (root / "tp_chunked").string(), 16), *world, Device::cpu());
  EXPECT_LT(std::abs(chunked.last_loss - want.last_loss), 1e-5 * want.last_loss);
  EXPECT_LT(std::abs(chunked.last_val_loss - want.last_val_loss), 1e-5 * want.last_val_loss);
  world->barrier()->wait();
}

TEST_F(TensorParallel, TrainerModelFromHuggingFaceWeightsIsTheWholeModelSharded) {
  const GptConfig mc = tiny_config(0.0);
  const std::string path =
      (std::filesystem::temp_directory_path() / fmt::format("zt_tp_hf_{}.safetensors", size())).string();
  Gpt source(mc, Device::cpu(), 5);  // other values than the seed-7 initialisation
  if (rank() == 0) save_hf_gpt2(source.parameters(), mc, path);
  world->barrier()->wait();
  Gpt whole(mc, Device::cpu(), 7);
  load_hf_gpt2(whole, path);
  TrainConfig cfg = train_config(size(), false, "unused");
  TensorParallelTraining tpt(cfg, *world);
  std::unique_ptr<Gpt> model = tpt.make_model(mc, Device::cpu(), 7, path);
  for (size_t i = 0; i < whole.parameters().size(); ++i) {
    const Parameter& p = model->parameters()[i];
    EXPECT_EQ(max_abs_diff(p.tensor, tp::take_shard(whole.parameters()[i].tensor, p.tp_split, rank(), size())), 0.0)
        << p.name;
  }
  EXPECT_EQ(tpt.num_parameters(mc), gpt2_parameter_count(GptDims{mc.n_layer, mc.n_head, mc.d_model, mc.vocab_size,
                                                                   mc.padded_vocab, mc.seq_len}));
  // tp together with pp > 1: tests/dist/test_tp_pp.cpp.
  world->barrier()->wait();
}

}  // namespace
}  // namespace zt

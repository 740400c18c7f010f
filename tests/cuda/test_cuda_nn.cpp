// The fused nn kernels on the GPU against the CPU backend: layernorm and rmsnorm, embedding,
// cross entropy, and AdamW; and the determinism of the gradients that sum over rows.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "core/ops.h"
#include "kernels/cuda/cross_entropy.h"

namespace zt {
namespace {

using namespace zt::test;

// The magnitude of the terms dx is made of (rstd * w * dy), before they cancel.
double dx_scale(const Tensor& dy, const Tensor& w, const Tensor& rstd) {
  return max_abs(as_doubles(dy)) * max_abs(as_doubles(w)) * max_abs(as_doubles(rstd));
}

// Row widths: GPT-2's 768 (16-byte packs), odd widths (element by element), a tiny one.
const std::vector<Shape> kNormShapes = {{1, 768}, {37, 768}, {64, 1000}, {17, 129}, {4096, 768}, {2, 1}, {15, 24}};

TEST(CudaNorm, LayerNormMatchesCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 10;
  for (DType dtype : float_types()) {
    for (const Shape& shape : kNormShapes) {
      for (bool with_bias : {true, false}) {
        const int64_t c = shape.back();
        const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape) + (with_bias ? " bias" : "");
        Tensor x = randn_cpu(shape, dtype, ++seed, 2.0, 0.5), w = randn_cpu({c}, dtype, ++seed, 0.5, 1.0);
        Tensor b = with_bias ? randn_cpu({c}, dtype, ++seed) : Tensor();
        Tensor dy = randn_cpu(shape, dtype, ++seed);
        LayerNormResult want = cpu().layernorm(x, w, b, 1e-5);
        LayerNormResult got = gpu().layernorm(to_gpu(x), to_gpu(w), with_bias ? to_gpu(b) : Tensor(), 1e-5);
        Tol t = tol_for(dtype);
        expect_close(got.y, want.y, t, "layernorm y " + what);
        expect_close(got.mean, want.mean, {1e-5}, "layernorm mean " + what, 1.0);
        expect_close(got.rstd, want.rstd, {1e-5}, "layernorm rstd " + what);
        // The backward from the CPU's saved statistics, so both sides start from the same numbers.
        NormGrads gw = cpu().layernorm_backward(dy, x, w, want.mean, want.rstd, with_bias);
        NormGrads gg = gpu().layernorm_backward(to_gpu(dy), to_gpu(x), to_gpu(w), to_gpu(want.mean), to_gpu(want.rstd),
                                                with_bias);
        expect_close(gg.dx, gw.dx, {t.rel * 2}, "layernorm dx " + what, dx_scale(dy, w, want.rstd));
        const double rows = static_cast<double>(x.numel() / c);
        expect_close(gg.dweight, gw.dweight, t, "layernorm dweight " + what, std::sqrt(rows) * 4);
        if (with_bias) {
          expect_close(gg.dbias, gw.dbias, t, "layernorm dbias " + what, std::sqrt(rows) * 4);
        } else {
          EXPECT_FALSE(gg.dbias.defined()) << what;
        }
      }
    }
  }
}

TEST(CudaNorm, RmsNormMatchesCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 20;
  for (DType dtype : float_types()) {
    for (const Shape& shape : kNormShapes) {
      const int64_t c = shape.back();
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape);
      Tensor x = randn_cpu(shape, dtype, ++seed, 2.0), w = randn_cpu({c}, dtype, ++seed, 0.5, 1.0);
      Tensor dy = randn_cpu(shape, dtype, ++seed);
      LayerNormResult want = cpu().rmsnorm(x, w, 1e-6);
      LayerNormResult got = gpu().rmsnorm(to_gpu(x), to_gpu(w), 1e-6);
      Tol t = tol_for(dtype);
      expect_close(got.y, want.y, t, "rmsnorm y " + what);
      expect_close(got.rstd, want.rstd, {1e-5}, "rmsnorm rstd " + what);
      EXPECT_FALSE(got.mean.defined());
      NormGrads gw = cpu().rmsnorm_backward(dy, x, w, want.rstd);
      NormGrads gg = gpu().rmsnorm_backward(to_gpu(dy), to_gpu(x), to_gpu(w), to_gpu(want.rstd));
      expect_close(gg.dx, gw.dx, {t.rel * 2}, "rmsnorm dx " + what, dx_scale(dy, w, want.rstd));
      expect_close(gg.dweight, gw.dweight, t, "rmsnorm dweight " + what,
                   std::sqrt(static_cast<double>(x.numel() / c)) * 4);
    }
  }
}

TEST(CudaNorm, ParameterGradientsAreBitwiseReproducible) {
  ZT_REQUIRE_GPU();
  Tensor x = to_gpu(randn_cpu({16384, 768}, DType::bf16, 1)), w = to_gpu(randn_cpu({768}, DType::bf16, 2));
  Tensor b = to_gpu(randn_cpu({768}, DType::bf16, 3)), dy = to_gpu(randn_cpu({16384, 768}, DType::bf16, 4));
  LayerNormResult f = gpu().layernorm(x, w, b, 1e-5);
  NormGrads first = gpu().layernorm_backward(dy, x, w, f.mean, f.rstd, true);
  NormGrads second = gpu().layernorm_backward(dy, x, w, f.mean, f.rstd, true);
  expect_same_bits(second.dweight, first.dweight, "dweight");
  expect_same_bits(second.dbias, first.dbias, "dbias");
  expect_same_bits(second.dx, first.dx, "dx");
}

TEST(CudaNorm, BadInputs) {
  ZT_REQUIRE_GPU();
  Tensor x = to_gpu(randn_cpu({4, 8}, DType::f32, 1));
  expect_error([&] { gpu().layernorm(x, to_gpu(randn_cpu({7}, DType::f32, 2)), Tensor(), 1e-5); },
               {"[layernorm]", "must be [8] f32"});
  expect_error([&] { gpu().layernorm(x, to_gpu(randn_cpu({8}, DType::bf16, 2)), Tensor(), 1e-5); },
               {"[layernorm]", "bf16"});
}

TEST(CudaEmbedding, ForwardAndBackwardMatchCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 30;
  struct Case {
    int64_t vocab, c, n;
  };
  // Few ids over many positions, so ids repeat (the backward must sum them).
  for (const Case& cs : {Case{50, 768, 1000}, Case{7, 33, 300}, Case{1000, 64, 5}, Case{3, 8, 1}}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (DType id_type : {DType::i32, DType::i64}) {
        const std::string what = std::string(dtype_name(dtype)) + "/" + dtype_name(id_type) + " V=" +
                                 std::to_string(cs.vocab) + " C=" + std::to_string(cs.c) + " N=" + std::to_string(cs.n);
        Tensor w = randn_cpu({cs.vocab, cs.c}, dtype, ++seed);
        Tensor ids = randint_cpu({cs.n}, id_type, ++seed, 0, cs.vocab);
        Tensor wg = to_gpu(w), idg = to_gpu(ids);
        expect_same_bits(gpu().embedding(wg, idg), cpu().embedding(w, ids), "embedding " + what);
        Tensor g = randn_cpu({cs.n, cs.c}, dtype, ++seed);
        Tensor want = cpu().embedding_backward(g, ids, cs.vocab);
        Tensor got = gpu().embedding_backward(to_gpu(g), idg, cs.vocab);
        expect_close(got, want, tol_for(dtype), "embedding backward " + what,
                     std::sqrt(static_cast<double>(cs.n)) * 4);
        expect_same_bits(gpu().embedding_backward(to_gpu(g), idg, cs.vocab), got, "embedding backward repeat " + what);
      }
    }
  }
}

TEST(CudaEmbedding, BadIdsAreReported) {
  ZT_REQUIRE_GPU();
  Tensor w = to_gpu(randn_cpu({10, 16}, DType::f32, 1));
  Tensor g = to_gpu(randn_cpu({3, 16}, DType::f32, 2));
  Tensor bad = to_gpu(make_cpu({3}, DType::i32, [](int64_t i) { return i == 1 ? -4.0 : 2.0; }));
  Tensor dw = gpu().embedding_backward(g, bad, 10);
  expect_error([&] { (void)as_doubles(dw); }, {"[embedding_backward]", "id -4 is out of range [0, 10)"});
  expect_error([&] { gpu().embedding(w, to_gpu(randn_cpu({3}, DType::f32, 1))); }, {"[embedding]", "i32 or i64"});
}

TEST(CudaCrossEntropy, ForwardAndBackwardMatchCpu) {
  ZT_REQUIRE_GPU();
  uint64_t seed = 60;
  struct Case {
    int64_t n, v, valid;
  };
  for (const Case& cs : {Case{37, 1000, 997}, Case{64, 50304, 50257}, Case{9, 333, 333}, Case{4, 7, 7}}) {
    for (DType dtype : float_types()) {
      for (DType target_type : {DType::i64, DType::i32}) {
        const int64_t valid = cs.valid;
        const std::string what = std::string(dtype_name(dtype)) + " [" + std::to_string(cs.n) + ", " +
                                 std::to_string(cs.v) + "] valid " + std::to_string(valid);
        Tensor logits = randn_cpu({cs.n, cs.v}, dtype, ++seed, 3.0);
        // Every fifth target ignored.
        Tensor targets = make_cpu({cs.n}, target_type, [&](int64_t i) {
          return i % 5 == 3 ? -100.0 : static_cast<double>(static_cast<int64_t>(rng::uniform(seed, static_cast<uint64_t>(i)) * valid));
        });
        Tensor lg = to_gpu(logits), tg = to_gpu(targets);
        // f32 is checked against the CPU in f64 (its f32 sums over 50k columns are the less exact side).
        Tensor ref_logits = reference(logits);
        CrossEntropyResult want = cpu().cross_entropy(ref_logits, targets, -100, cs.valid);
        CrossEntropyResult got = gpu().cross_entropy(lg, tg, -100, cs.valid);
        expect_close(got.losses, want.losses, {1e-5}, "losses " + what);
        expect_close(got.lse, want.lse, {1e-5}, "lse " + what);
        const double scale = 1.0 / static_cast<double>(cs.n);
        // Both backward passes start from the GPU's lse.
        Tensor lse_ref = empty({cs.n}, want.lse.dtype(), Device::cpu());
        cpu().copy_strided(to_cpu(got.lse), lse_ref);
        Tensor dwant = cpu().cross_entropy_backward(ref_logits, targets, lse_ref, -100, cs.valid, scale, Tensor(), false);
        Tensor dgot = gpu().cross_entropy_backward(lg, tg, got.lse, -100, cs.valid, scale, Tensor(), false);
        expect_close(dgot, dwant, tol_for(dtype), "dlogits " + what);
        // 1 / count on the device, and the backward's scale taken from a device scalar.
        expect_close(got.inv_count, want.inv_count, {1e-7}, "inv_count " + what);
        Tensor on_device = to_gpu(make_cpu({}, DType::f32, [&](int64_t) { return scale * 4.0; }));
        expect_close(gpu().cross_entropy_backward(lg, tg, got.lse, -100, cs.valid, 0.25, on_device, false), dwant,
                     tol_for(dtype), "dlogits, scale on the device " + what);
        Tensor over = to_gpu(logits);
        Tensor overwritten = gpu().cross_entropy_backward(over, tg, got.lse, -100, cs.valid, scale, Tensor(), true);
        EXPECT_EQ(overwritten.storage(), over.storage());
        expect_close(overwritten, dwant, tol_for(dtype), "dlogits in place " + what);
        // The fused pass, into a fresh buffer and in place over a copy of the logits.
        Tensor dfused;
        CrossEntropyResult fused = cuda::cross_entropy_forward_backward(lg, tg, -100, cs.valid, scale, dfused);
        expect_close(fused.losses, want.losses, {1e-5}, "fused losses " + what);
        expect_close(dfused, dwant, tol_for(dtype), "fused dlogits " + what);
        Tensor in_place = to_gpu(logits);
        cuda::cross_entropy_forward_backward(in_place, tg, -100, cs.valid, scale, in_place);
        expect_close(in_place, dwant, tol_for(dtype), "fused in-place dlogits " + what);
      }
    }
  }
}

TEST(CudaCrossEntropy, BadTargetsAreReported) {
  ZT_REQUIRE_GPU();
  Tensor logits = to_gpu(randn_cpu({4, 10}, DType::f32, 1));
  Tensor targets = to_gpu(make_cpu({4}, DType::i64, [](int64_t i) { return i == 2 ? 9.0 : 1.0; }));
  CrossEntropyResult r = gpu().cross_entropy(logits, targets, -100, 8);  // 9 is in the padding
  expect_error([&] { (void)as_doubles(r.losses); }, {"[cross_entropy]", "target 9 is out of range [0, 8)"});
  expect_error([&] { gpu().cross_entropy(logits, targets, -100, 11); }, {"[cross_entropy]", "valid_vocab 11"});
}

// The chunked loss (Note [Chunked loss]) and the three kernels under it: the f32-out product of
// 16-bit operands, the fused loss-and-gradient pass over the logits, and the target count.
TEST(CudaLinearCrossEntropy, KernelsAndOpMatchCpu) {
  ZT_REQUIRE_GPU();
  for (DType dtype : {DType::bf16, DType::f16}) {
    const std::string what = dtype_name(dtype);
    Tensor a = randn_cpu({300, 64}, dtype, 1), b = randn_cpu({300, 40}, dtype, 2), c = randn_cpu({300, 64}, dtype, 3);
    Tensor want = empty({64, 40}, DType::f32, Device::cpu()), got = to_gpu(want);
    cpu().gemm_into(a, b, true, false, want, false);
    cpu().gemm_into(c, b, true, false, want, true);
    gpu().gemm_into(to_gpu(a), to_gpu(b), true, false, got, false);
    gpu().gemm_into(to_gpu(c), to_gpu(b), true, false, got, true);
    expect_close(got, want, {1e-5}, "gemm_into f32 out " + what);
  }
  Tensor targets = make_cpu({300}, DType::i64, [](int64_t i) { return i % 7 == 2 ? -100.0 : static_cast<double>((i * 37) % 997); });
  expect_close(gpu().inverse_target_count(to_gpu(targets), -100, 997, DType::f32),
               cpu().inverse_target_count(targets, -100, 997, DType::f32), {1e-7}, "inverse_target_count");
  for (DType dtype : float_types()) {
    const std::string what = dtype_name(dtype);
    Tensor logits = randn_cpu({300, 1000}, dtype, 4, 3.0);
    Tensor ref = reference(logits), on_gpu = to_gpu(logits);
    CrossEntropyResult want = cpu().cross_entropy_with_grad(ref, targets, -100, 997, 1.0);
    CrossEntropyResult got = gpu().cross_entropy_with_grad(on_gpu, to_gpu(targets), -100, 997, 1.0);
    expect_close(got.losses, want.losses, {1e-5}, "cross_entropy_with_grad losses " + what);
    expect_close(on_gpu, ref, tol_for(dtype), "cross_entropy_with_grad dlogits " + what);

    // The op, forward and backward on the GPU, against the same op on the CPU.
    Tensor x = randn_cpu({3, 100, 64}, dtype, 5), w = randn_cpu({1000, 64}, dtype, 6, 0.2);
    Tensor t3 = reshape(targets, {3, 100});
    auto head = [&](const Tensor& x0, const Tensor& w0, const Tensor& t0) {
      Tensor xi = clone(x0).set_requires_grad(true), wi = clone(w0).set_requires_grad(true);
      Tensor loss = linear_cross_entropy(xi, wi, t0, 128, -100, 997);
      backward(mul_scalar(loss, 2.0));
      return std::vector<Tensor>{loss, xi.grad(), wi.grad()};
    };
    const std::vector<Tensor> c = head(reference(x), reference(w), t3);
    const std::vector<Tensor> g = head(to_gpu(x), to_gpu(w), to_gpu(t3));
    const Tol t = dtype == DType::f32 ? Tol{1e-5} : Tol{3e-2};
    expect_close(g[0], c[0], {dtype == DType::f32 ? 1e-5 : 1e-2}, "linear_cross_entropy loss " + what);
    expect_close(g[1], c[1], t, "linear_cross_entropy dx " + what);
    expect_close(g[2], c[2], t, "linear_cross_entropy dw " + what);
  }
}

TEST(CudaAdamW, StepsMatchCpu) {
  ZT_REQUIRE_GPU();
  for (DType grad_type : {DType::f32, DType::bf16}) {
    for (int64_t n : {1, 1000, 100003}) {
      Tensor p = randn_cpu({n}, DType::f32, 1), m = randn_cpu({n}, DType::f32, 2, 0.1);
      Tensor v = uniform_cpu({n}, DType::f32, 3, 0.0, 0.01);
      Tensor pg = to_gpu(p), mg = to_gpu(m), vg = to_gpu(v);
      AdamWArgs args;
      args.lr = 1e-3;
      args.beta1 = 0.9;
      args.beta2 = 0.95;
      args.eps = 1e-8;
      args.weight_decay = 0.1;
      args.grad_scale = 0.5;
      for (int64_t step = 1; step <= 3; ++step) {
        args.step = step;
        Tensor g = randn_cpu({n}, grad_type, 10 + static_cast<uint64_t>(step));
        cpu().adamw_step(p, g, m, v, args);
        gpu().adamw_step(pg, to_gpu(g), mg, vg, args);
      }
      const std::string what = std::string(dtype_name(grad_type)) + " grads, n=" + std::to_string(n);
      expect_close(pg, p, {1e-5}, "param " + what);
      expect_close(mg, m, {1e-5}, "exp_avg " + what);
      expect_close(vg, v, {1e-5}, "exp_avg_sq " + what);
    }
  }
  // Views that start 1 or 2 elements into their memory take the narrower (2- or 1-wide) kernels.
  for (int64_t offset : {1, 2}) {
    const int64_t n = 1001;
    Tensor p = randn_cpu({n}, DType::f32, 4), m = randn_cpu({n}, DType::f32, 5, 0.1);
    Tensor v = uniform_cpu({n}, DType::f32, 6, 0.0, 0.01), g = randn_cpu({n}, DType::f32, 7);
    auto shifted = [&](const Tensor& t) {
      Tensor whole = to_gpu(randn_cpu({n + offset}, DType::f32, 8));
      Tensor view = make_view(whole, {n}, {1}, offset);
      gpu().copy_strided(to_gpu(t), view);
      return view;
    };
    Tensor pg = shifted(p), mg = shifted(m), vg = shifted(v), gg = shifted(g);
    AdamWArgs args;
    args.lr = 1e-3;
    args.weight_decay = 0.1;
    cpu().adamw_step(p, g, m, v, args);
    gpu().adamw_step(pg, gg, mg, vg, args);
    const std::string what = "offset " + std::to_string(offset);
    expect_close(pg, p, {1e-5}, "param " + what);
    expect_close(mg, m, {1e-5}, "exp_avg " + what);
    expect_close(vg, v, {1e-5}, "exp_avg_sq " + what);
  }
  Tensor p = to_gpu(randn_cpu({8}, DType::bf16, 1));
  Tensor m = to_gpu(randn_cpu({8}, DType::f32, 1));
  expect_error([&] { gpu().adamw_step(p, m, m, m, AdamWArgs{}); }, {"[adamw_step]", "must be f32"});
}

// adamw_step_runs (one launch for all runs of a shard) against the CPU backend's run-by-run
// default: runs of different lengths and weight decays, starts that are not 4-aligned (the launch
// then takes the narrow kernel for all), an empty run, and more runs than one launch carries.
TEST(CudaAdamW, RunsMatchCpu) {
  ZT_REQUIRE_GPU();
  for (DType grad_type : {DType::f32, DType::bf16}) {
    for (bool aligned : {true, false}) {
      std::vector<AdamWRun> runs;
      int64_t at = 0;
      for (int r = 0; r < 20; ++r) {  // 20 > AdamWRuns::kMax: two launches
        const int64_t n = r == 3 ? 0 : (aligned ? 4 : 1) * (1 + 37 * r);
        runs.push_back({at, n, r % 2 == 0 ? 0.1 : 0.0});
        at += n;
      }
      const int64_t total = at + 5;  // a tail no run covers must stay untouched
      Tensor p = randn_cpu({total}, DType::f32, 1), m = randn_cpu({total}, DType::f32, 2, 0.1);
      Tensor v = uniform_cpu({total}, DType::f32, 3, 0.0, 0.01), g = randn_cpu({total}, grad_type, 4);
      Tensor pg = to_gpu(p), mg = to_gpu(m), vg = to_gpu(v);
      AdamWArgs args;
      args.lr = 1e-3;
      args.step = 2;
      args.grad_scale = 0.5;
      cpu().adamw_step_runs(p, g, m, v, runs, args);
      gpu().adamw_step_runs(pg, to_gpu(g), mg, vg, runs, args);
      const std::string what = std::string(dtype_name(grad_type)) + (aligned ? " aligned" : " unaligned");
      expect_close(pg, p, {1e-5}, "param " + what);
      expect_close(mg, m, {1e-5}, "exp_avg " + what);
      expect_close(vg, v, {1e-5}, "exp_avg_sq " + what);
    }
  }
  Tensor p = to_gpu(randn_cpu({8}, DType::f32, 1));
  expect_error([&] { gpu().adamw_step_runs(p, p, p, p, {{4, 8, 0.0}}, AdamWArgs{}); },
               {"[adamw_step_runs]", "outside the 8 elements"});
}

}  // namespace
}  // namespace zt

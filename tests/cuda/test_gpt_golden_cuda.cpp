// GPT-2 parity with PyTorch on the GPU: the tiny model of tests/golden/make_gpt2_golden.py (PyTorch,
// f32) run through the CUDA backend in f32 and in bf16 compute (f32 master weights).
//
// Tolerances (relative norm error ||got - ref|| / ||ref|| per tensor):
//   f32:  logits 1e-5, loss 1e-5, gradients 1e-4, AdamW losses 1e-5 (as on the CPU; cuBLASLt runs
//         f32 GEMMs in full f32, TF32 off).
//   bf16: logits 2e-2, loss 1e-2, gradients 5e-2, AdamW losses 1e-2: bf16 keeps 8 bits of mantissa,
//         so one rounding is 4e-3 relative and two layers of matrix products compound a few of them.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "models/gpt.h"
#include "models/safetensors.h"
#include "optim/adamw.h"

namespace zt {
namespace {

struct Tolerances {
  double logits, loss, grads, steps;
};

double rel(const Tensor& got, const Tensor& ref) {
  Tensor g = to(to(got, Device::cpu()), DType::f64), r = to(ref, DType::f64);
  return norm(sub(g, r)) / norm(r);
}

void run_parity(DType compute, Tolerances tol) {
  SafetensorsFile file = read_safetensors(std::string(ZT_TEST_DATA_DIR) + "/gpt2_tiny.safetensors");
  auto meta = [&](const char* k) { return std::stoll(file.metadata.at(k)); };
  GptConfig c;
  c.n_layer = meta("n_layer");
  c.n_head = meta("n_head");
  c.d_model = meta("d_model");
  c.vocab_size = meta("vocab_size");
  c.padded_vocab = meta("padded_vocab");
  c.seq_len = meta("seq_len");
  c.compute_dtype = compute;
  const Device dev = Device::cuda(0);
  Gpt model(c, dev, 1);
  for (Parameter& p : model.parameters()) copy_(p.tensor, file.at("param." + p.name));
  Tensor tokens = to(file.at("tokens"), dev);
  Tensor x = narrow(tokens, 1, 0, c.seq_len), y = narrow(tokens, 1, 1, c.seq_len);
  auto src = model.local_source();
  {
    NoGradGuard no_grad;
    EXPECT_LT(rel(model.forward_logits(*src, x), file.at("logits")), tol.logits);
  }
  Tensor loss = model.forward_loss(*src, x, y, StepRng{}, true);
  const double ref_loss = file.at("loss").item();
  EXPECT_LT(std::abs(loss.item() - ref_loss) / ref_loss, tol.loss);
  backward(loss);
  for (Parameter& p : model.parameters())
    EXPECT_LT(rel(p.tensor.grad(), file.at("grad." + p.name)), tol.grads) << p.name;

  AdamWConfig ac;
  ac.beta1 = std::stod(file.metadata.at("beta1"));
  ac.beta2 = std::stod(file.metadata.at("beta2"));
  ac.eps = std::stod(file.metadata.at("eps"));
  ac.weight_decay = std::stod(file.metadata.at("weight_decay"));
  AdamW opt(ac);
  for (Parameter& p : model.parameters()) opt.add_param(p.tensor, p.tensor.dim() >= 2, p.name);
  std::vector<float> want = file.at("adamw_losses").to_vector<float>();
  for (size_t step = 0; step < want.size(); ++step) {
    for (Parameter& p : model.parameters()) p.tensor.zero_grad();
    Tensor l = model.forward_loss(*src, x, y, StepRng{}, true);
    EXPECT_LT(std::abs(l.item() - want[step]) / want[step], tol.steps) << "step " << step;
    backward(l);
    std::vector<Tensor> grads;
    for (Parameter& p : model.parameters()) grads.push_back(p.tensor.grad());
    opt.step(grads, std::stod(file.metadata.at("lr")));
  }
}

TEST(GptGoldenCuda, F32MatchesPyTorch) {
  ZT_REQUIRE_GPU();
  run_parity(DType::f32, {1e-5, 1e-5, 1e-4, 1e-5});
}

TEST(GptGoldenCuda, Bf16MatchesPyTorchWithinBf16Tolerances) {
  ZT_REQUIRE_GPU();
  run_parity(DType::bf16, {2e-2, 1e-2, 5e-2, 1e-2});
}

}  // namespace
}  // namespace zt

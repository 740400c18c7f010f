// GPT-2 parity with PyTorch: tests/golden/make_gpt2_golden.py computed, in f32 on the CPU, the
// logits, loss and every parameter gradient of a tiny GPT-2, and the losses of 10 AdamW steps.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "models/gpt.h"
#include "models/safetensors.h"
#include "optim/adamw.h"

namespace zt {
namespace {

struct Golden {
  SafetensorsFile file = read_safetensors(std::string(ZT_TEST_DATA_DIR) + "/gpt2_tiny.safetensors");
  int64_t meta(const std::string& key) const { return std::stoll(file.metadata.at(key)); }
  double meta_f(const std::string& key) const { return std::stod(file.metadata.at(key)); }

  Gpt make_model() const {
    GptConfig c;
    c.n_layer = meta("n_layer");
    c.n_head = meta("n_head");
    c.d_model = meta("d_model");
    c.vocab_size = meta("vocab_size");
    c.padded_vocab = meta("padded_vocab");
    c.seq_len = meta("seq_len");
    Gpt model(c, Device::cpu(), 1);
    for (Parameter& p : model.parameters()) copy_(p.tensor, file.at("param." + p.name));
    return model;
  }
  Tensor inputs() const { return narrow(file.at("tokens"), 1, 0, meta("seq_len")); }
  Tensor targets() const { return narrow(file.at("tokens"), 1, 1, meta("seq_len")); }
};

TEST(GptGolden, LogitsLossAndGradientsMatchPyTorch) {
  Golden g;
  Gpt model = g.make_model();
  auto src = model.local_source();
  Tensor logits;
  {
    NoGradGuard no_grad;
    logits = model.forward_logits(*src, g.inputs());
  }
  EXPECT_LT(testing::relative_error(logits, g.file.at("logits")), 1e-5);

  Tensor loss = model.forward_loss(*src, g.inputs(), g.targets(), StepRng{}, /*training=*/true);
  const double ref_loss = g.file.at("loss").item();
  EXPECT_NEAR(loss.item(), ref_loss, 1e-5 * std::abs(ref_loss));
  backward(loss);
  for (Parameter& p : model.parameters()) {
    const Tensor& ref = g.file.at("grad." + p.name);
    ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
    std::vector<float> got = p.tensor.grad().to_vector<float>(), want = ref.to_vector<float>();
    double scale = 0;
    for (float w : want) scale = std::max(scale, static_cast<double>(std::abs(w)));
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-4 * std::max(scale, 1e-3)) << p.name << " element " << i;
  }
}

TEST(GptGolden, TenAdamWStepsMatchPyTorch) {
  Golden g;
  Gpt model = g.make_model();
  auto src = model.local_source();
  AdamWConfig cfg;
  cfg.beta1 = g.meta_f("beta1");
  cfg.beta2 = g.meta_f("beta2");
  cfg.eps = g.meta_f("eps");
  cfg.weight_decay = g.meta_f("weight_decay");
  AdamW opt(cfg);
  for (Parameter& p : model.parameters()) opt.add_param(p.tensor, p.tensor.dim() >= 2, p.name);
  std::vector<float> want = g.file.at("adamw_losses").to_vector<float>();
  for (size_t step = 0; step < want.size(); ++step) {
    for (Parameter& p : model.parameters()) p.tensor.zero_grad();
    Tensor loss = model.forward_loss(*src, g.inputs(), g.targets(), StepRng{}, true);
    EXPECT_NEAR(loss.item(), want[step], 1e-5 * std::abs(want[step])) << "step " << step;
    backward(loss);
    std::vector<Tensor> grads;
    for (Parameter& p : model.parameters()) grads.push_back(p.tensor.grad());
    opt.step(grads, g.meta_f("lr"));
  }
}

}  // namespace
}  // namespace zt

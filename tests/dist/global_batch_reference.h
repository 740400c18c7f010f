// The single-process reference for the model-parallel equality tests (test_pipeline, test_tp_pp):
// a tiny GPT trained on the whole global batch with AdamW and clipping, recording each step's loss
// and gradient norm and the final parameters.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "parallel/comm/communicator.h"

namespace zt::reference {

struct Setup {
  int64_t batch = 2, seq_len = 16, steps = 3;
  int micro_batches = 4;
  double lr = 3e-3, clip = 0.5;
  uint64_t token_seed = 500;
};

inline GptConfig tiny_config(const Setup& s, double dropout) {
  GptConfig c;
  c.n_layer = 4;
  c.n_head = 2;
  c.d_model = 24;
  c.vocab_size = 70;
  c.padded_vocab = pad_vocab(70);
  c.seq_len = s.seq_len;
  c.dropout = dropout;
  return c;
}

// eps above the rounding noise of gradients that are zero in exact arithmetic (see test_zero.cpp).
inline AdamWConfig adamw_config() {
  AdamWConfig a;
  a.eps = 1e-5;
  a.beta2 = 0.95;
  a.weight_decay = 0.1;
  return a;
}

// Tokens of micro-batch m of step s: [dp * batch, seq_len + 1]; replica d's rows are [d * batch, (d + 1) * batch).
inline Tensor global_tokens(const Setup& s, int64_t step, int64_t micro, int dp) {
  return randint({dp * s.batch, s.seq_len + 1}, 70, s.token_seed + static_cast<uint64_t>(step * 16 + micro), 0,
                 DType::i64);
}

// Data-parallel replica `replica`'s inputs and targets for every micro-batch of a step.
struct MicroBatches {
  std::vector<Tensor> inputs, targets;
};
inline MicroBatches replica_micro_batches(const Setup& s, int64_t step, int dp, int replica) {
  MicroBatches out;
  for (int m = 0; m < s.micro_batches; ++m) {
    Tensor tok = narrow(global_tokens(s, step, m, dp), 0, replica * s.batch, s.batch);
    out.inputs.push_back(contiguous(narrow(tok, 1, 0, s.seq_len)));
    out.targets.push_back(contiguous(narrow(tok, 1, 1, s.seq_len)));
  }
  return out;
}

struct Result {
  std::vector<double> losses, grad_norms;
  std::map<std::string, Tensor> params;
};

// One process, whole global batch, the same dropout streams (StepRng{11, step, micro-batch}).
inline Result run(const Setup& s, int dp, double dropout) {
  Gpt model(tiny_config(s, dropout), Device::cpu(), 7);
  auto src = model.local_source();
  AdamW opt(adamw_config());
  for (Parameter& p : model.parameters()) opt.add_param(p.tensor, p.decay, p.name);
  Result ref;
  for (int64_t step = 0; step < s.steps; ++step) {
    for (Parameter& p : model.parameters()) p.tensor.zero_grad();
    double loss_sum = 0;
    for (int64_t m = 0; m < s.micro_batches; ++m) {
      Tensor tok = global_tokens(s, step, m, dp);
      StepRng rng{11, static_cast<uint64_t>(step), static_cast<uint64_t>(m)};
      Tensor loss = model.forward_loss(*src, narrow(tok, 1, 0, s.seq_len), narrow(tok, 1, 1, s.seq_len), rng, true);
      backward(mul_scalar(loss, 1.0 / s.micro_batches));
      loss_sum += loss.item();
    }
    std::vector<Tensor> grads;
    for (Parameter& p : model.parameters()) grads.push_back(p.tensor.grad());
    const double norm_value = std::sqrt(grad_norm_squared(grads));
    opt.step(grads, s.lr, clip_scale(norm_value, s.clip));
    ref.losses.push_back(loss_sum / s.micro_batches);
    ref.grad_norms.push_back(norm_value);
  }
  for (Parameter& p : model.parameters()) ref.params[p.name] = clone(p.tensor.detach());
  return ref;
}

// A per-run temporary path, the same on every rank (rank 0's process id), so that concurrent runs
// of this binary do not share files.
inline std::string shared_temp_path(comm::Communicator& world, const std::string& stem) {
  Tensor pid = full({1}, world.rank() == 0 ? static_cast<double>(getpid()) : 0.0, DType::i64, Device::cpu());
  world.all_reduce(pid, comm::ReduceOp::max)->wait();
  return ::testing::TempDir() + stem + "_" + std::to_string(static_cast<int64_t>(pid.item())) + "_np" +
         std::to_string(world.size());
}

inline double relative_error(const Tensor& got, const Tensor& want) { return norm(sub(got, want)) / norm(want); }

}  // namespace zt::reference

// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, bias-corrected moments.
//
// The optimizer owns f32 moments for each parameter it steps. Parameters are f32 master tensors
// (the model's own parameters in a single process, or a rank's flat ZeRO shard); weight decay is
// applied per parameter group (GPT: matrices decay, norms, biases and position/token embeddings'
// ... see models/gpt.h for which). The update is the backend's fused adamw_step kernel, so the
// same code runs on the CPU, on a GPU, or on a host-offloaded shard.
#pragma once

#include <string>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"

namespace zt {

struct AdamWConfig {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct OptimizerSlot {
  Tensor param;        // f32, updated in place
  Tensor exp_avg;      // f32, same shape
  Tensor exp_avg_sq;   // f32, same shape
  bool decay = true;   // whether weight decay applies
  std::string name;
};

class AdamW {
 public:
  explicit AdamW(AdamWConfig config) : config_(config) {}

  // Adds a parameter (f32, any device); its moments are allocated beside it as optimizer memory.
  void add_param(const Tensor& param, bool decay, std::string name = "");
  // One step: param -= update(grad * grad_scale). grads[i] matches slots()[i].param (undefined = skip).
  // lr is this step's learning rate (the schedule's); step counts from 1.
  void step(const std::vector<Tensor>& grads, double lr, double grad_scale = 1.0);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  const AdamWConfig& config() const { return config_; }
  std::vector<OptimizerSlot>& slots() { return slots_; }
  const std::vector<OptimizerSlot>& slots() const { return slots_; }

 private:
  AdamWConfig config_;
  std::vector<OptimizerSlot> slots_;
  int64_t step_ = 0;
};

}  // namespace zt

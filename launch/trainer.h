// The main job: `zerotrain train CONFIG`. One process or many (mpirun), CPU or GPUs; data parallel
// with ZeRO stages 0-3 through zero::ZeroEngine. Each step: for every micro-batch read this rank's
// slice, forward, backward (the engine reduces gradients from autograd hooks), then one optimizer
// step; log, validate, sample and checkpoint on their schedules; resume from the newest checkpoint.
#pragma once

#include <memory>
#include <string>

#include "launch/config.h"
#include "parallel/comm/communicator.h"

namespace zt {

struct TrainOutcome {
  int64_t steps_done = 0;
  double first_loss = 0;  // the first logged training loss of this run
  double last_loss = 0;
  double last_val_loss = -1;  // -1 when no validation ran
  std::string final_checkpoint;
};

// Collective over `world`. Prints progress on rank 0. Throws zt::Error with the cause.
TrainOutcome train(const TrainConfig& cfg, comm::Communicator& world, Device device);

}  // namespace zt

// `zerotrain train CONFIG [--set field=value ...]`: one process, or one per GPU under mpirun.
#include <cstdio>
#include <fmt/format.h>

#include "core/cuda_support.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/launcher.h"
#include "launch/trainer.h"
#include "parallel/comm/mpi_session.h"

namespace zt::cli {

int run_train(const TrainArgs& args, int argc, char** argv) {
  TrainConfig cfg = load_config(args.config, args.overrides);
  // Choose the device before MPI and CUDA start, from the launcher's rank variables.
  DeviceChoice choice = device_choice(cfg);
  DeviceType type = choice == DeviceChoice::cpu    ? DeviceType::cpu
                    : choice == DeviceChoice::cuda ? DeviceType::cuda
                    : cuda::is_available()          ? DeviceType::cuda
                                                    : DeviceType::cpu;
  ProcessPlacement placement = place_process(type);
  comm::MpiSession mpi(&argc, &argv);
  check_placement_matches_mpi(placement.env, mpi.world_rank(), mpi.world_size());
  validate_parallel(cfg, mpi.world_size());
  auto world = comm::make_world_communicator(placement.device);
  if (world->rank() == 0) std::printf("%s\n", placement.str().c_str());
  TrainOutcome outcome = train(cfg, *world, placement.device);
  (void)outcome;
  return 0;
}

}  // namespace zt::cli

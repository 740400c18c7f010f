// Where this process runs: its rank and world from the launcher (mpirun), and its device.
//
// Rank discovery reads Open MPI's variables (parallel/comm/environment.h), so the GPU is chosen
// before MPI or CUDA start. Each rank on a node takes the GPU numbered by its local rank; two ranks
// on one GPU are refused (NCCL rejects it, and they would share its memory). scripts/zt-mpirun
// starts jobs with the right options for one node or several.
#pragma once

#include <string>

#include "core/device.h"
#include "parallel/comm/environment.h"

namespace zt {

struct ProcessPlacement {
  comm::LaunchEnvironment env;
  Device device;
  std::string str() const;  // "rank 3 of 8 (local 1 of 4) on cuda:1"
};

// The GPU index for a rank: local_rank mod device_count. Throws when the node runs more ranks than
// it has GPUs, except when the launcher pinned each rank to its own single GPU (then every rank
// sees one device, number 0): pass pinned = true for that case (CUDA_VISIBLE_DEVICES names one GPU).
int choose_cuda_device(int local_rank, int local_size, int device_count, bool pinned);

// Reads the launch environment and chooses the device: cpu, or cuda:N by choose_cuda_device with
// the GPUs this process sees. Throws, naming the rank, when a GPU is asked for and none is usable.
ProcessPlacement place_process(DeviceType type);

// Throws unless MPI agrees with the launcher's variables (for example a binary linked against one
// MPI but started by another's mpirun, which leaves every process rank 0 of 1).
void check_placement_matches_mpi(const comm::LaunchEnvironment& env, int mpi_rank, int mpi_size);

}  // namespace zt

// What the launcher told this process about its place in the job. mpirun (Open MPI) sets
// OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK and _LOCAL_SIZE in every rank's environment before
// MPI starts, so the GPU can be chosen before any CUDA or MPI call. A process started without a
// launcher is rank 0 of 1.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace zt::comm {

struct LaunchEnvironment {
  int rank = 0;        // in the world
  int world_size = 1;
  int local_rank = 0;  // among the ranks on this node
  int local_size = 1;
  bool from_launcher = false;  // the launcher's variables were found
};

// Reads the process environment.
LaunchEnvironment read_launch_environment();

// The same from any lookup (name -> value or nullopt), for tests. Throws naming the variable when
// one is malformed or inconsistent (a rank outside its size, only some of the variables set).
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
LaunchEnvironment parse_launch_environment(const EnvLookup& lookup);

}  // namespace zt::comm

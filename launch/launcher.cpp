#include "launch/launcher.h"

#include <cstdlib>
#include <string_view>

#include "core/cuda_support.h"
#include "core/error.h"

namespace zt {

std::string ProcessPlacement::str() const {
  return detail::concat("rank ", env.rank, " of ", env.world_size, " (local ", env.local_rank, " of ",
                        env.local_size, ") on ", device.str());
}

int choose_cuda_device(int local_rank, int local_size, int device_count, bool pinned) {
  ZT_CHECK(device_count > 0, "launch", "local rank ", local_rank, " needs a GPU but this process sees none");
  ZT_CHECK(local_rank >= 0 && local_rank < local_size, "launch", "local rank ", local_rank, " is outside 0..",
           local_size - 1);
  if (pinned && device_count == 1) return 0;
  ZT_CHECK(local_size <= device_count, "launch", local_size, " ranks run on this node but it has ", device_count,
           " GPU(s): start at most ", device_count, " ranks per node (mpirun --npernode ", device_count,
           ", or scripts/zt-mpirun), or pin one GPU to each rank with CUDA_VISIBLE_DEVICES");
  return local_rank % device_count;
}

namespace {
// CUDA_VISIBLE_DEVICES naming exactly one device ("3", "GPU-uuid"): the launcher pinned this rank.
bool pinned_to_one_gpu() {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (visible == nullptr) return false;
  std::string_view text(visible);
  return !text.empty() && text.find(',') == std::string_view::npos;
}
}  // namespace

ProcessPlacement place_process(DeviceType type) {
  ProcessPlacement placement{comm::read_launch_environment(), Device::cpu()};
  if (type == DeviceType::cpu) return placement;
  const comm::LaunchEnvironment& env = placement.env;
  ZT_CHECK(cuda::built_with_cuda(), "launch", "rank ", env.rank,
           " asked for a GPU but zerotrain was built without CUDA");
  const int count = cuda::device_count();
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  ZT_CHECK(count > 0, "launch", "rank ", env.rank, " asked for a GPU but sees none (CUDA_VISIBLE_DEVICES=",
           visible ? visible : "<unset>", ")");
  placement.device = Device::cuda(choose_cuda_device(env.local_rank, env.local_size, count, pinned_to_one_gpu()));
  return placement;
}

void check_placement_matches_mpi(const comm::LaunchEnvironment& env, int mpi_rank, int mpi_size) {
  if (!env.from_launcher) return;  // started without mpirun: MPI is a singleton, nothing to compare
  ZT_CHECK(env.rank == mpi_rank && env.world_size == mpi_size, "launch", "mpirun says rank ", env.rank, " of ",
           env.world_size, " but MPI says rank ", mpi_rank, " of ", mpi_size,
           "; the binary and mpirun probably come from different MPI installations");
}

}  // namespace zt

// make_world_communicator: the one place that picks a backend by device. NCCL is compiled in
// only when CMake found it (ZT_HAVE_NCCL, parallel/comm/nccl_*.cpp).
#include "parallel/comm/communicator.h"
#include "parallel/comm/mpi_communicator.h"

#ifdef ZT_HAVE_NCCL
#include "parallel/comm/nccl_communicator.h"
#endif

namespace zt::comm {

std::unique_ptr<Communicator> make_world_communicator(Device device) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::world();
  if (device.is_cpu()) return world;
#ifdef ZT_HAVE_NCCL
  return std::make_unique<NcclCommunicator>(*world, device.index);
#else
  ZT_FAIL("comm", "communication between ", device.str(),
          " tensors needs NCCL, but this zerotrain was built without it; accepted here: cpu "
          "(or rebuild with CUDA and NCCL_ROOT set)");
#endif
}

}  // namespace zt::comm

#include "parallel/comm/mpi_session.h"

#include <cstdio>

#include "parallel/comm/mpi_check.h"

namespace zt::comm {

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  ZT_MPI_CHECK(MPI_Initialized(&initialized));
  ZT_MPI_CHECK(MPI_Finalized(&finalized));
  ZT_CHECK(!finalized, "mpi", "MPI was already finalised in this process; it cannot be started again");
  if (initialized) {
    ZT_MPI_CHECK(MPI_Query_thread(&thread_level_));
    return;
  }
  ZT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
  initialized_here_ = true;
  if (thread_level_ < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    initialized_here_ = false;
    ZT_FAIL("mpi", "the MPI library grants thread level ", thread_level_,
            "; zerotrain needs at least MPI_THREAD_FUNNELED");
  }
}

MpiSession::~MpiSession() {
  if (!initialized_here_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && MPI_Finalize() != MPI_SUCCESS) std::fprintf(stderr, "[mpi] MPI_Finalize failed\n");
}

int MpiSession::world_rank() const {
  int rank = 0;
  ZT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

int MpiSession::world_size() const {
  int size = 0;
  ZT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

}  // namespace zt::comm

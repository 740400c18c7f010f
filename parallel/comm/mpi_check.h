// ZT_MPI_CHECK(call): throws zt::Error naming the failing MPI call, MPI's own message, file and
// line. Communicators made here use MPI_ERRORS_RETURN so that errors reach this check instead of
// aborting the job.
#pragma once

// Only MPI's C API is used; skip the deprecated C++ bindings (slower to compile, noisy warnings).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <string>

#include "core/error.h"

namespace zt::comm::detail {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace zt::comm::detail

#define ZT_MPI_CHECK(call)                                                                            \
  do {                                                                                                \
    int zt_mpi_rc_ = (call);                                                                          \
    if (zt_mpi_rc_ != MPI_SUCCESS)                                                                    \
      ZT_FAIL("mpi", #call, " failed: ", ::zt::comm::detail::mpi_error_string(zt_mpi_rc_), " (", __FILE__, \
              ":", __LINE__, ")");                                                                    \
  } while (0)

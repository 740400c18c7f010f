# Dependencies are found on the system, never vendored. scripts/test installs the Debian packages.
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(Protobuf REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 QUIET CONFIG)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()

# OpenBLAS: Debian ships CMake config for it only in newer releases; look for the library and cblas.h.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(ZT_CBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include
  REQUIRED)
add_library(zt_blas INTERFACE)
target_link_libraries(zt_blas INTERFACE ${BLAS_LIBRARIES})
target_include_directories(zt_blas SYSTEM INTERFACE ${ZT_CBLAS_INCLUDE_DIR})

if(ZT_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# ZT_CUDA=AUTO builds the CUDA backend when a CUDA toolkit is found; ON requires it; OFF skips it.
# The backend compiles and links on machines without a GPU; its tests skip there.
set(ZT_HAVE_CUDA OFF)
set(ZT_HAVE_NCCL OFF)
set(ZT_HAVE_CUDNN OFF)
set(ZT_HAVE_CUDNN_FRONTEND OFF)
if(NOT ZT_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # sm_90 machine code plus PTX, so newer GPUs can still run it.
      set(CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual" CACHE STRING "CUDA architectures")
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 flags (newer CMake does); tell it, then ask for C++20.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(ZT_HAVE_CUDA ON)
  elseif(ZT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ZT_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER or CUDAToolkit_ROOT)")
  endif()
endif()

if(ZT_HAVE_CUDA)
  # NCCL and cuDNN: standard places, then NCCL_ROOT / CUDNN_ROOT (the GPU machines keep them inside
  # the PyTorch environment's nvidia packages, with only versioned library names).
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(ZT_HAVE_NCCL ON)
    add_library(zt_nccl INTERFACE)
    target_include_directories(zt_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(zt_nccl INTERFACE ${NCCL_LIBRARY})
  endif()
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES include)
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
    set(ZT_HAVE_CUDNN ON)
    add_library(zt_cudnn INTERFACE)
    target_include_directories(zt_cudnn SYSTEM INTERFACE ${CUDNN_INCLUDE_DIR})
    target_link_libraries(zt_cudnn INTERFACE ${CUDNN_LIBRARY})
  endif()
  # cuDNN's C++ frontend (header-only) for the cuDNN attention path: CUDNN_FRONTEND_ROOT, or where
  # scripts/lib/setup.sh puts it (.deps/cudnn_frontend). Without it attention uses our kernels only.
  if(ZT_HAVE_CUDNN)
    find_path(CUDNN_FRONTEND_INCLUDE_DIR cudnn_frontend.h
              HINTS ${CUDNN_FRONTEND_ROOT} $ENV{CUDNN_FRONTEND_ROOT} ${PROJECT_SOURCE_DIR}/.deps/cudnn_frontend
              PATH_SUFFIXES include)
    if(CUDNN_FRONTEND_INCLUDE_DIR)
      set(ZT_HAVE_CUDNN_FRONTEND ON)
      target_include_directories(zt_cudnn SYSTEM INTERFACE ${CUDNN_FRONTEND_INCLUDE_DIR})
      target_compile_definitions(zt_cudnn INTERFACE ZT_HAVE_CUDNN_FRONTEND=1 CUDNN_FRONTEND_SKIP_JSON_LIB=1)
      # The frontend's own (non-cuDNN) engines compile kernels at run time with NVRTC.
      target_link_libraries(zt_cudnn INTERFACE CUDA::nvrtc)
    endif()
  endif()
  if(ZT_CUDA STREQUAL "ON" AND NOT ZT_HAVE_NCCL)
    message(FATAL_ERROR "ZT_CUDA=ON but NCCL was not found: set NCCL_ROOT to the folder holding include/nccl.h and lib/")
  endif()
endif()

// What the core needs from the CUDA backend. Implemented in kernels/cuda/ when zerotrain is built
// with CUDA, and in kernels/no_cuda/ otherwise, where every call that needs a GPU throws
// "built without CUDA".
#pragma once

#include <string>

#include "core/allocator.h"

namespace zt {
class Backend;
}

namespace zt::cuda {

bool built_with_cuda();
int device_count();          // 0 without a usable GPU (never throws)
bool is_available();         // device_count() > 0
Allocator& allocator(int device);  // the caching allocator of cuda:device
// Page-locked host memory (cudaHostAlloc) for host <-> device staging: copies from and to it run
// at the link's full speed. Where no GPU is usable (or without CUDA) it is the CPU allocator.
Allocator& pinned_host_allocator();
const Backend& backend();
std::string device_name(int device);
void synchronize(int device);
// Versions of the CUDA runtime, driver, cuBLASLt and cuDNN, for `zerotrain info`.
std::string version_info();

}  // namespace zt::cuda

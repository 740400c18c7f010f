// What the core needs from the CUDA backend. Implemented in kernels/cuda/ when zerotrain is built
// with CUDA, and in kernels/no_cuda/ otherwise, where every call that needs a GPU throws
// "built without CUDA".
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/allocator.h"
#include "core/gemm_tuning.h"

namespace zt {
class Backend;
}

namespace zt::cuda {

bool built_with_cuda();
int device_count();          // 0 without a usable GPU (never throws)
bool is_available();         // device_count() > 0
Allocator& allocator(int device);  // the caching allocator of cuda:device
// Caps what the caching allocator of cuda:device hands out (0: no cap beyond the card).
void set_memory_limit(int device, size_t bytes);
// Page-locked host memory (cudaHostAlloc) for host <-> device staging: copies from and to it run
// at the link's full speed. Where no GPU is usable (or without CUDA) it is the CPU allocator.
Allocator& pinned_host_allocator();
const Backend& backend();
std::string device_name(int device);
void synchronize(int device);
// Note [GEMM tuning file] (core/gemm_tuning.h): whether cuda:device times cuBLASLt's candidates at
// the first call of each new product (off: cuBLASLt's first heuristic choice); the library and GPU
// the choices are valid for; the choices timed so far (with those taken from a table and not yet
// used), sorted; and a table to use from now on, replacing earlier choices for its problems. A
// table for another library or GPU is not used (returns false).
void set_gemm_autotune(int device, bool on);
std::string gemm_library(int device);
GemmTuning gemm_tuning(int device);
bool use_gemm_tuning(int device, const GemmTuning& tuning);
// Versions of the CUDA runtime, driver, cuBLASLt and cuDNN, for `zerotrain info`.
std::string version_info();

// A host-waitable marker of a device stream's progress (a CUDA event behind the scenes). A
// default-constructed fence is already passed.
class StreamFence {
 public:
  StreamFence() = default;
  explicit StreamFence(std::shared_ptr<void> event) : event_(std::move(event)) {}
  void wait() const;  // blocks the host until the stream has reached the marker
 private:
  std::shared_ptr<void> event_;
};

// Host -> device copy on the device's current stream that returns at once (Backend::copy_bytes
// waits for host <-> device copies to finish, to protect the host memory; this is the exception,
// for hot paths such as a step's token ids). `src` must be page-locked (pinned_host_allocator) and
// stay unchanged until the returned fence has been waited for.
StreamFence upload_async(void* dst, int device, const void* src, size_t bytes);
// The other direction: device `src` -> page-locked host `dst`, queued on the device's current
// stream; `dst` holds the bytes once the fence has passed (and `src` must stay allocated until then).
StreamFence download_async(void* dst, const void* src, int device, size_t bytes);

}  // namespace zt::cuda

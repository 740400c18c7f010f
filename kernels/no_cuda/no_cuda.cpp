// The CUDA backend's stand-in for builds without a CUDA toolkit (ZT_CUDA=OFF or none found).
#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/error.h"

namespace zt::cuda {

namespace {
[[noreturn]] void no_cuda(const char* api) {
  ZT_FAIL(api, "zerotrain was built without CUDA; reconfigure with -DZT_CUDA=ON on a machine with the CUDA toolkit");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count() { return 0; }
bool is_available() { return false; }
Allocator& allocator(int) { no_cuda("cuda.allocator"); }
void set_memory_limit(int, size_t) { no_cuda("cuda.set_memory_limit"); }
Allocator& pinned_host_allocator() { return allocator_for(Device::cpu()); }
const Backend& backend() { no_cuda("cuda.backend"); }
std::string device_name(int) { no_cuda("cuda.device_name"); }
void synchronize(int) { no_cuda("cuda.synchronize"); }
void set_gemm_autotune(int, bool) { no_cuda("cuda.set_gemm_autotune"); }
std::string gemm_library(int) { no_cuda("cuda.gemm_library"); }
GemmTuning gemm_tuning(int) { no_cuda("cuda.gemm_tuning"); }
bool use_gemm_tuning(int, const GemmTuning&) { no_cuda("cuda.use_gemm_tuning"); }
std::string version_info() { return "CUDA: not built"; }
void StreamFence::wait() const {}
StreamFence upload_async(void*, int, const void*, size_t) { no_cuda("cuda.upload_async"); }
StreamFence download_async(void*, const void*, int, size_t) { no_cuda("cuda.download_async"); }

}  // namespace zt::cuda

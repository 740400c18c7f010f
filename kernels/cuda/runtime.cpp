// The CUDA runtime layer: check-macro errors, RAII types, the per-device contexts, and the
// functions core/cuda_support.h asks of the backend.
#include "kernels/cuda/runtime.h"

#include <cstdlib>
#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/cuda_support.h"
#include "core/error.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/gemm_state.h"

#if defined(ZT_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace zt::cuda {

namespace {

// Paths in messages are relative to the repository ("kernels/cuda/x.cu"), not the build machine.
const char* short_path(const char* file) {
  std::string_view f(file);
  for (std::string_view root : {"/kernels/", "/core/", "/tests/", "/bench/", "/parallel/"}) {
    size_t at = f.rfind(root);
    if (at != std::string_view::npos) return file + at + 1;
  }
  return file;
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

constexpr int kMaxDevices = 64;

// Note [Per-device context]: created on first use, never destroyed.
std::array<std::atomic<DeviceContext*>, kMaxDevices>& context_slots() {
  static std::array<std::atomic<DeviceContext*>, kMaxDevices> slots{};
  return slots;
}

std::mutex& context_creation_mutex() {
  static std::mutex m;
  return m;
}

std::string version_string(int v) {  // CUDA encodes 13.0 as 13000
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}

}  // namespace

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  // Reported now: clear the runtime's last-error state, or the next launch check would report it
  // again (sticky errors, which break the context, stay whatever we do).
  (void)cudaGetLastError();
  std::string msg = fmt::format("[cuda] {} failed: {} ({}) at {}:{}", call, cudaGetErrorString(err),
                                cudaGetErrorName(err), short_path(file), line);
  if (err == cudaErrorMemoryAllocation) throw OutOfMemoryError(msg);
  throw Error(msg);
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw Error(fmt::format("[cublas] {} failed: {} ({}) at {}:{}", call, cublasLtGetStatusString(status),
                          cublas_status_name(status), short_path(file), line));
}

// ---- RAII types ----------------------------------------------------------------------------------
// Destructors never throw: a failure while releasing (the runtime shutting down at exit) is ignored.

DeviceGuard::DeviceGuard(int device) : device_(device) {
  ZT_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) ZT_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != device_) (void)cudaSetDevice(previous_);
}

Stream::Stream(int device, Priority priority) : device_(device) {
  DeviceGuard guard(device);
  int least = 0, greatest = 0;
  ZT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  ZT_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking,
                                             priority == Priority::high ? greatest : least));
}

Stream::~Stream() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

Stream::Stream(Stream&& other) noexcept : stream_(other.stream_), device_(other.device_) { other.stream_ = nullptr; }

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = other.stream_;
    device_ = other.device_;
    other.stream_ = nullptr;
  }
  return *this;
}

void Stream::synchronize() const { ZT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Event::Event(int device, bool timing) : device_(device) {
  DeviceGuard guard(device);
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

Event::Event(Event&& other) noexcept : event_(other.event_), device_(other.device_) { other.event_ = nullptr; }

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = other.event_;
    device_ = other.device_;
    other.event_ = nullptr;
  }
  return *this;
}

void Event::record(cudaStream_t stream) {
  DeviceGuard guard(device_);
  ZT_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::wait(cudaStream_t stream) const { ZT_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }

void Event::synchronize() const { ZT_CUDA_CHECK(cudaEventSynchronize(event_)); }

bool Event::query() const {
  cudaError_t err = cudaEventQuery(event_);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it so later checks do not see it
    return false;
  }
  ZT_CUDA_CHECK(err);
  return true;
}

float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0;
  ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

PinnedHostBuffer::PinnedHostBuffer(size_t bytes) : size_(bytes) {
  if (bytes > 0) ZT_CUDA_CHECK(cudaHostAlloc(&data_, bytes, cudaHostAllocDefault));
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (data_ != nullptr) (void)cudaFreeHost(data_);
}

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaFreeHost(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

// ---- the per-device context ------------------------------------------------------------------

DeviceContext& DeviceContext::get(int device) {
  if (device >= 0 && device < kMaxDevices) {
    DeviceContext* ctx = context_slots()[static_cast<size_t>(device)].load(std::memory_order_acquire);
    if (ctx != nullptr) return *ctx;  // the common case: no runtime call
  }
  const int count = device_count();
  ZT_CHECK(device >= 0 && device < count && device < kMaxDevices, "cuda", "device cuda:", device,
           " does not exist; this process sees ", count, " GPU(s)");
  auto& slot = context_slots()[static_cast<size_t>(device)];
  DeviceContext* ctx = nullptr;
  std::lock_guard<std::mutex> lock(context_creation_mutex());
  ctx = slot.load(std::memory_order_acquire);
  if (ctx == nullptr) {
    ctx = new DeviceContext(device);  // never deleted: Note [Per-device context]
    slot.store(ctx, std::memory_order_release);
  }
  return *ctx;
}

DeviceContext::DeviceContext(int device) : device_(device) {
  DeviceGuard guard(device);
  ZT_CUDA_CHECK(cudaGetDeviceProperties(&properties_, device));
  ZT_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&error_host_), sizeof(DeviceErrorRecord), cudaHostAllocMapped));
  *error_host_ = DeviceErrorRecord{0, 0, 0, 0};
  ZT_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&error_device_), error_host_, 0));
  ZT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&error_claim_), sizeof(int)));
  ZT_CUDA_CHECK(cudaMemset(error_claim_, 0, sizeof(int)));
  allocator_ = std::make_unique<CachingAllocator>(device, [this] { return current_stream(); });
}

DeviceContext::~DeviceContext() {
  if (error_host_ != nullptr) (void)cudaFreeHost(error_host_);
  if (error_claim_ != nullptr) (void)cudaFree(error_claim_);
}

SdpaState& DeviceContext::sdpa_state() {
  std::lock_guard<std::mutex> lock(sdpa_mutex_);
  if (!sdpa_) sdpa_ = std::make_unique<SdpaState>(device_);
  return *sdpa_;
}

GemmState& DeviceContext::gemm_state() {
  std::lock_guard<std::mutex> lock(gemm_mutex_);
  if (!gemm_) gemm_ = std::make_unique<GemmState>(device_);
  return *gemm_;
}

void DeviceContext::check_kernel_errors() {
  volatile DeviceErrorRecord* rec = error_host_;
  const auto code = static_cast<DeviceErrorCode>(rec->code);
  if (code == DeviceErrorCode::none) return;
  const int64_t value = rec->value, bound = rec->bound;
  rec->value = 0;
  rec->bound = 0;
  rec->code = 0;
  {
    DeviceGuard guard(device_);
    ZT_CUDA_CHECK(cudaMemset(error_claim_, 0, sizeof(int)));  // let the next finding be reported
  }
  const char* what = "kernel";
  const char* item = "value";
  switch (code) {
    case DeviceErrorCode::embedding_id: what = "embedding"; item = "id"; break;
    case DeviceErrorCode::embedding_backward_id: what = "embedding_backward"; item = "id"; break;
    case DeviceErrorCode::cross_entropy_target: what = "cross_entropy"; item = "target"; break;
    case DeviceErrorCode::none: break;
  }
  ZT_FAIL(what, item, " ", value, " is out of range [0, ", bound, ") on cuda:", device_,
          " (found by a kernel and reported at the next synchronisation; the affected outputs are zero)");
}

StreamGuard::StreamGuard(int device, cudaStream_t stream)
    : context_(&DeviceContext::get(device)), previous_(context_->current_stream()) {
  context_->set_current_stream(stream);
}

StreamGuard::~StreamGuard() { context_->set_current_stream(previous_); }

void copy_bytes(void* dst, int dst_device, const void* src, int src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device < 0 && src_device < 0) {
    std::memcpy(dst, src, bytes);
    return;
  }
  // Order on the device side's current stream; for two devices, on the source's.
  const int device = src_device >= 0 ? src_device : dst_device;
  DeviceContext& ctx = DeviceContext::get(device);
  DeviceGuard guard(device);
  cudaStream_t stream = ctx.current_stream();
  if (src_device >= 0 && dst_device >= 0 && src_device != dst_device) {
    // The destination's stream may still be using dst: wait for its queued work first.
    DeviceContext& dst_ctx = DeviceContext::get(dst_device);
    {
      DeviceGuard dst_guard(dst_device);
      ZT_CUDA_CHECK(cudaStreamSynchronize(dst_ctx.current_stream()));
    }
    ZT_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, stream));
  } else {
    ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
    // Within one device the copy is ordered like a kernel: no host memory to protect, no wait.
    if (src_device == dst_device) return;
  }
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
  ctx.check_kernel_errors();
}

// ---- core/cuda_support.h -----------------------------------------------------------------------

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no GPU: clear the error, report none
    return 0;
  }
  return n;
}

bool is_available() { return device_count() > 0; }

Allocator& allocator(int device) { return DeviceContext::get(device).allocator(); }

void set_memory_limit(int device, size_t bytes) { DeviceContext::get(device).allocator().set_memory_limit(bytes); }

// ZT_CUDNN_ATTENTION=0 keeps attention on zerotrain's own kernels (for comparisons and as an escape
// hatch should a cuDNN version misbehave); =nondeterministic lets cuDNN's backward accumulate with
// atomics (Note [Deterministic attention]); unset or =1, the default, lets cuDNN take the problems
// it accepts with its deterministic backward. Any other value is an error, not a silent default.
static CudaBackend::AttentionImpl attention_impl_from_env() {
  const char* env = std::getenv("ZT_CUDNN_ATTENTION");
  if (env == nullptr || std::strcmp(env, "1") == 0 || env[0] == '\0') return CudaBackend::AttentionImpl::automatic;
  if (std::strcmp(env, "0") == 0) return CudaBackend::AttentionImpl::kernels;
  if (std::strcmp(env, "nondeterministic") == 0) return CudaBackend::AttentionImpl::automatic_nondeterministic;
  throw Error(fmt::format("cuda::backend: ZT_CUDNN_ATTENTION='{}' is not one of 1 (default: cuDNN, deterministic "
                          "backward), nondeterministic, 0 (zerotrain's kernels)",
                          env));
}

const Backend& backend() {
  static const CudaBackend instance(attention_impl_from_env());  // its state lives in the device contexts
  return instance;
}

std::string device_name(int device) { return DeviceContext::get(device).properties().name; }

void StreamFence::wait() const {
  if (event_) static_cast<const Event*>(event_.get())->synchronize();
}

namespace {
// One page-locked <-> device copy queued on the device's current stream, and the fence after it.
StreamFence copy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, int device) {
  if (bytes == 0) return {};
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  auto event = std::make_shared<Event>(device);
  event->record(stream);
  return StreamFence(std::move(event));
}
}  // namespace

StreamFence upload_async(void* dst, int device, const void* src, size_t bytes) {
  return copy_async(dst, src, bytes, cudaMemcpyHostToDevice, device);
}

StreamFence download_async(void* dst, const void* src, int device, size_t bytes) {
  return copy_async(dst, src, bytes, cudaMemcpyDeviceToHost, device);
}

void synchronize(int device) {
  DeviceGuard guard(device);
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  DeviceContext::get(device).check_kernel_errors();
}

std::string version_info() {
  int runtime = 0, driver = 0;
  (void)cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  (void)cudaGetLastError();
  const size_t lt = cublasLtGetVersion();  // major * 10000 + minor * 100 + patch
  std::string out = fmt::format("CUDA runtime {}, driver {}, cuBLASLt {}.{}.{}", version_string(runtime),
                                driver > 0 ? version_string(driver) : std::string("none"), lt / 10000,
                                (lt / 100) % 100, lt % 100);
#if defined(ZT_HAVE_CUDNN)
  const size_t dnn = cudnnGetVersion();  // major * 10000 + minor * 100 + patch (cuDNN 9)
  out += fmt::format(", cuDNN {}.{}.{}", dnn / 10000, (dnn / 100) % 100, dnn % 100);
#else
  out += ", cuDNN not built";
#endif
  const int n = device_count();
  if (n == 0) return out + "; no GPU visible";
  out += fmt::format("; {} GPU(s)", n);
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) == cudaSuccess)
      out += fmt::format("{} cuda:{} {} ({:.1f} GiB, sm_{}{})", d == 0 ? ":" : ",", d, p.name,
                         p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.major, p.minor);
  }
  return out;
}

}  // namespace zt::cuda

// The CUDA runtime layer of the backend: check macros, RAII owners of GPU resources, and the
// per-device context that holds everything the kernels share on one GPU.
//
// Note [Per-device context]: DeviceContext::get(d) creates, on first use, the one context of
// cuda:d. It holds the device's current stream, its caching allocator, the cuBLASLt state (handle,
// workspaces, heuristic cache) and a small pinned error record that kernels write to when they
// find bad input (an out-of-range id) instead of crashing the context. Contexts live until the
// process exits and are never destroyed: tensors in static objects may free memory after main()
// returns, and the CUDA runtime may already be shutting down then. This is the only process-wide
// state of the backend; everything else is passed explicitly (launchers take their stream).
//
// Note [Current stream]: every backend kernel runs on DeviceContext::current_stream() of the
// tensors' device. It starts as the legacy default stream (nullptr), so that code which uses plain
// cudaMemcpy or the default stream stays ordered with the kernels. Communication code keeps its
// own non-blocking streams and orders them against this one with events. The current stream is
// per device and process-wide (not thread-local); change it with StreamGuard.
//
// Note [Asynchronous kernel errors]: kernels cannot throw. A kernel that finds bad input (an id
// out of range) writes the first such finding into the context's DeviceErrorRecord (mapped pinned
// memory, so reading it costs no copy) and produces zeros for that element. The record is read and cleared at the next
// synchronisation point of the backend (a device-to-host copy, synchronize(), sum_squares,
// all_finite), which then throws zt::Error naming the kernel and the bad value.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace zt::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);

// ZT_CUDA_CHECK(cudaMalloc(&p, n)) throws zt::Error (OutOfMemoryError for allocation failures)
// "[cuda] cudaMalloc(&p, n) failed: out of memory (cudaErrorMemoryAllocation) at file:line".
#define ZT_CUDA_CHECK(call)                                                                  \
  do {                                                                                       \
    const cudaError_t zt_cuda_status_ = (call);                                              \
    if (zt_cuda_status_ != cudaSuccess)                                                      \
      ::zt::cuda::throw_cuda_error(zt_cuda_status_, #call, __FILE__, __LINE__);              \
  } while (0)

#define ZT_CUBLAS_CHECK(call)                                                                \
  do {                                                                                       \
    const cublasStatus_t zt_cublas_status_ = (call);                                         \
    if (zt_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                          \
      ::zt::cuda::throw_cublas_error(zt_cublas_status_, #call, __FILE__, __LINE__);          \
  } while (0)

// After every kernel launch: reports bad launch configurations at the launch site.
#define ZT_CUDA_CHECK_LAUNCH() ZT_CUDA_CHECK(cudaGetLastError())

// Makes `device` current for the scope and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  int device_ = -1;
};

// An owned non-blocking stream on one device.
class Stream {
 public:
  enum class Priority : uint8_t { normal, high };
  explicit Stream(int device, Priority priority = Priority::normal);
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

// An owned event. Timing is off unless asked for (timing events cost more to record).
class Event {
 public:
  explicit Event(int device, bool timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream);
  void wait(cudaStream_t stream) const;  // work queued on `stream` later waits for this event
  void synchronize() const;
  bool query() const;                            // true when the recorded work has completed
  float elapsed_ms_since(const Event& start) const;  // both recorded with timing on

 private:
  cudaEvent_t event_ = nullptr;
  int device_ = 0;
};

// Page-locked host memory (fast, asynchronous host<->device copies).
class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  explicit PinnedHostBuffer(size_t bytes);
  ~PinnedHostBuffer();
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// What a kernel found wrong. Note [Asynchronous kernel errors].
enum class DeviceErrorCode : int32_t { none = 0, embedding_id, embedding_backward_id, cross_entropy_target };

struct DeviceErrorRecord {
  int32_t code;   // DeviceErrorCode
  int32_t unused;
  int64_t value;  // the offending value
  int64_t bound;  // the accepted range is [0, bound)
};

// What a kernel needs to report: the first thread to win `claim` (device memory, atomicCAS from
// 0) writes `record` (mapped pinned host memory, plain stores: atomics on host memory are not
// guaranteed over PCIe).
struct DeviceErrorSink {
  int* claim;
  DeviceErrorRecord* record;
};

class CachingAllocator;
struct GemmState;
struct SdpaState;

// Note [Per-device context].
class DeviceContext {
 public:
  static DeviceContext& get(int device);  // throws naming the devices that exist

  int device() const { return device_; }
  const cudaDeviceProp& properties() const { return properties_; }
  int multiprocessor_count() const { return properties_.multiProcessorCount; }

  // Note [Current stream].
  cudaStream_t current_stream() const { return current_stream_.load(std::memory_order_relaxed); }
  void set_current_stream(cudaStream_t stream) { current_stream_.store(stream, std::memory_order_relaxed); }

  CachingAllocator& allocator() { return *allocator_; }
  GemmState& gemm_state();  // created on first use (kernels/cuda/gemm.cu)
  SdpaState& sdpa_state();  // created on first use (kernels/cuda/attention_cudnn.cpp)

  // Where kernels report bad input. Note [Asynchronous kernel errors].
  DeviceErrorSink error_sink() const { return {error_claim_, error_device_}; }
  // Throws if a kernel reported an error (call after synchronising), and clears the record.
  void check_kernel_errors();

  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

 private:
  explicit DeviceContext(int device);

  int device_;
  cudaDeviceProp properties_{};
  std::atomic<cudaStream_t> current_stream_{nullptr};
  std::unique_ptr<CachingAllocator> allocator_;
  std::mutex gemm_mutex_;
  std::unique_ptr<GemmState> gemm_;
  std::mutex sdpa_mutex_;
  std::unique_ptr<SdpaState> sdpa_;
  DeviceErrorRecord* error_host_ = nullptr;    // mapped pinned memory
  DeviceErrorRecord* error_device_ = nullptr;  // its device address
  int* error_claim_ = nullptr;                 // device memory, 0 until a kernel reports
};

inline cudaStream_t current_stream(int device) { return DeviceContext::get(device).current_stream(); }

// Sets the current stream of a device for the scope, restoring the previous one after.
class StreamGuard {
 public:
  StreamGuard(int device, cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  DeviceContext* context_;
  cudaStream_t previous_;
};

// Copies between host and device memory or two devices, ordered on the current stream of the
// device side (the source's for device-to-device). A copy that touches host memory or crosses
// devices returns only when it is complete (so the host buffer may be reused at once, and a
// device-to-host copy can be read) and then reports kernel errors; a copy within one device is
// only enqueued, like a kernel. A faster path for hot host-to-device copies (pinned staging
// buffers, no wait) is a later addition.
void copy_bytes(void* dst, int dst_device, const void* src, int src_device, size_t bytes);

}  // namespace zt::cuda

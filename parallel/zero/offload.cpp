// Note [Optimizer offload] and Note [Parameter offload] in parallel/zero/offload.h.
#include "parallel/zero/offload.h"

#include <chrono>

#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/ops.h"

namespace zt::zero {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The backend that moves bytes between these devices: the CUDA one whenever a GPU is involved.
const Backend& mover(Device a, Device b) { return backend_for(a.is_cuda() ? a : b); }

void copy_bytes_of(const Tensor& src, const Tensor& dst) {
  ZT_CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel() && src.is_contiguous() && dst.is_contiguous(),
           "zero.offload", "copy needs contiguous tensors of one dtype and size, got ", src.describe(), " -> ",
           dst.describe());
  if (src.numel() == 0 || src.raw_data() == dst.raw_data()) return;
  mover(src.device(), dst.device()).copy_bytes(dst.raw_data(), dst.device(), src.raw_data(), src.device(), src.nbytes());
}

}  // namespace

Tensor empty_host(int64_t n, DType dtype, MemoryCategory category, bool pinned) {
  if (!pinned) return empty({n}, dtype, Device::cpu(), category);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), cuda::pinned_host_allocator(),
                                            category);
  impl->shape = {n};
  impl->strides = {1};
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

void HostStaging::pin() {
  pinned_ = true;
  buffer_ = Tensor();
}

Tensor HostStaging::get(int64_t n, DType dtype) {
  const int64_t bytes = n * static_cast<int64_t>(dtype_size(dtype));
  if (!buffer_.defined() || buffer_.numel() < bytes) {
    buffer_ = empty_host(bytes, DType::u8, MemoryCategory::communication, pinned_);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = buffer_.storage();  // 64-byte aligned: any dtype may view it
  impl->shape = {n};
  impl->strides = {1};
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

void copy_to_host(const Tensor& device_src, const Tensor& host_dst, OffloadTraffic& traffic) {
  ZT_CHECK(host_dst.device().is_cpu(), "zero.offload", "host buffer ", host_dst.describe(), " is not on the cpu");
  const auto start = Clock::now();
  copy_bytes_of(device_src, host_dst);
  traffic.copy_seconds += seconds_since(start);
  traffic.device_to_host_bytes += static_cast<int64_t>(device_src.nbytes());
}

void copy_to_device(const Tensor& host_src, const Tensor& device_dst, OffloadTraffic& traffic) {
  ZT_CHECK(host_src.device().is_cpu(), "zero.offload", "host buffer ", host_src.describe(), " is not on the cpu");
  const auto start = Clock::now();
  copy_bytes_of(host_src, device_dst);
  traffic.copy_seconds += seconds_since(start);
  traffic.host_to_device_bytes += static_cast<int64_t>(host_src.nbytes());
}

void GradientLanding::pin() {
  for (HostStaging& slot : slots_) slot.pin();
}

void GradientLanding::land(const Tensor& reduced, const Tensor& host_grad, bool first, OffloadTraffic& traffic) {
  ZT_CHECK(host_grad.device().is_cpu() && host_grad.dtype() == DType::f32 && host_grad.numel() == reduced.numel(),
           "zero.offload", "host gradient ", host_grad.describe(), " does not fit reduced gradient ", reduced.describe());
  ZT_CHECK(reduced.is_contiguous(), "zero.offload", "reduced gradient must be contiguous, got ", reduced.describe());
  if (static_cast<int>(pending_.size()) == kSlots) absorb_front(traffic);  // frees slots_[next_slot_]
  Pending p;
  p.reduced = reduced;
  p.landed = slots_[static_cast<size_t>(next_slot_)].get(reduced.numel(), reduced.dtype());  // compute dtype crosses
  next_slot_ = (next_slot_ + 1) % kSlots;
  p.host_grad = host_grad;
  p.first = first;
  const auto start = Clock::now();
  if (reduced.device().is_cuda()) {
    p.fence = cuda::download_async(p.landed.raw_data(), reduced.raw_data(), reduced.device().index, reduced.nbytes());
  } else {
    copy_bytes_of(reduced, p.landed);
  }
  traffic.copy_seconds += seconds_since(start);
  traffic.device_to_host_bytes += static_cast<int64_t>(reduced.nbytes());
  pending_.push_back(std::move(p));
}

void GradientLanding::absorb_front(OffloadTraffic& traffic) {
  Pending& p = pending_.front();
  const auto wait_start = Clock::now();
  p.fence.wait();
  traffic.copy_seconds += seconds_since(wait_start);
  const auto start = Clock::now();
  if (p.first) {
    copy_(p.host_grad, p.landed);  // widens
  } else {
    add_(p.host_grad, p.landed);  // widens on the fly (Backend::axpy), one pass over all cores
  }
  traffic.host_math_seconds += seconds_since(start);
  pending_.pop_front();
}

void GradientLanding::absorb_all(OffloadTraffic& traffic) {
  while (!pending_.empty()) absorb_front(traffic);
}

ParameterReturn::~ParameterReturn() { wait_all(); }

void ParameterReturn::pin() {
  wait_all();
  for (HostStaging& slot : slots_) slot.pin();
}

Tensor ParameterReturn::slot(int64_t n, DType dtype) {
  fences_[static_cast<size_t>(next_)].wait();  // its last upload has read it (a new buffer may replace it)
  fences_[static_cast<size_t>(next_)] = {};
  return slots_[static_cast<size_t>(next_)].get(n, dtype);
}

void ParameterReturn::send(const Tensor& host, const Tensor& device_dst, OffloadTraffic& traffic) {
  ZT_CHECK(host.device().is_cpu() && host.dtype() == device_dst.dtype() && host.numel() == device_dst.numel() &&
               device_dst.is_contiguous(),
           "zero.offload", "parameter slot ", host.describe(), " does not fit ", device_dst.describe());
  const auto start = Clock::now();
  if (device_dst.device().is_cuda()) {
    fences_[static_cast<size_t>(next_)] =
        cuda::upload_async(device_dst.raw_data(), device_dst.device().index, host.raw_data(), host.nbytes());
  } else {
    copy_bytes_of(host, device_dst);
  }
  traffic.copy_seconds += seconds_since(start);
  traffic.host_to_device_bytes += static_cast<int64_t>(host.nbytes());
  next_ = (next_ + 1) % kSlots;
}

void ParameterReturn::wait_all() const {
  for (const cuda::StreamFence& f : fences_) f.wait();
}

void write_master_to_device(const Tensor& master, const Tensor& compute, HostBuffers& buffers,
                            OffloadTraffic& traffic) {
  ZT_CHECK(master.device().is_cpu() && master.dtype() == DType::f32 && master.numel() == compute.numel(),
           "zero.offload", "master ", master.describe(), " does not fit compute shard ", compute.describe());
  if (compute.dtype() == DType::f32) {
    copy_to_device(master, compute, traffic);
    return;
  }
  const auto start = Clock::now();
  Tensor rounded = buffers.parameters.slot(master.numel(), compute.dtype());
  copy_(rounded, master);  // rounds on the host, so only compute-dtype bytes cross
  traffic.host_math_seconds += seconds_since(start);
  buffers.parameters.send(rounded, compute, traffic);  // Note [Parameter return]
}

}  // namespace zt::zero

// Host <-> device traffic of ZeRO offload (ZeRO-Offload, Ren et al. 2021; ZeRO-Infinity's
// parameter offload), used by the engine (parallel/zero/zero_engine.h).
//
// Note [Optimizer offload]: with ZeroConfig::offload_optimizer, this rank's optimizer shard (f32
// masters, Adam moments) and an f32 gradient shard live in host memory, for every unit or for the
// share of units Note [Partial optimizer offload] picks (the others keep theirs on the device):
//   backward   as soon as a unit's gradient is reduced (ZeroEngine::finalize_reduction), its shard
//              is copied to the host in the compute dtype and added into the f32 host gradient
//              (accumulating micro-batches in f32); under stages 2-3 the device then keeps no
//              gradient shard at all, only the unit's full gradient while it is being reduced.
//   step       the global norm and AdamW run on the host (the CPU backend's OpenMP adamw_step).
//   write back the updated masters are cast to the compute dtype on the host (half the bytes to
//              move for bf16), in AdamW's own pass (Note [Offloaded step]), and copied to the
//              device's compute shard asynchronously (Note [Parameter return]).
// The same code runs when "device" and host are both the CPU (CPU-only runs and tests): it moves the
// same bytes through the same buffers, so it is tested everywhere and costs only memcpys there.
//
// Note [Parameter offload]: with ZeroConfig::offload_params (stage 3), a unit's compute shard lives
// in host memory; gathering the unit first copies it into this rank's slice of the unit's gathered
// device buffer, then all-gathers in place. With f32 compute and both offloads on, the f32 master
// is that host shard itself.
//
// Every byte that crosses goes through page-locked buffers on GPU runs (HostStaging::pin). The
// gradients' trip is asynchronous (Note [Gradient landing]: queued on the device's current stream,
// so ordered after the reduce-scatter, widened on the host one unit later), and so is the updated
// parameters' trip back after the step (Note [Parameter return]). Still synchronous: under
// parameter offload the fetch of a unit's shard, which
// would go on a host-to-device stream one unit ahead (with the prefetch), the all-gather waiting on
// its event instead of the host.
#pragma once

#include <array>
#include <cstdint>
#include <deque>

#include "core/cuda_support.h"
#include "core/tensor.h"

namespace zt::zero {

// Bytes moved between host and device buffers, counted by role: a CPU-only run, where both sides
// are the CPU, counts the same bytes as a GPU run would move.
struct OffloadTraffic {
  int64_t device_to_host_bytes = 0;
  int64_t host_to_device_bytes = 0;
  // Host wall time, for logs and benchmarks (every step here is synchronous, so it is exact).
  double copy_seconds = 0;       // both directions
  double host_math_seconds = 0;  // widening and adding gradients, rounding masters
};

// One reusable host buffer (communication memory), grown to the largest request. Reusing it keeps
// the allocator from handing fresh pages to every unit of every step (page faults cost as much as
// the copy itself on large units).
class HostStaging {
 public:
  // The first n elements of a host buffer of `dtype`; valid until the next call.
  Tensor get(int64_t n, DType dtype);
  // Page-locked from now on (the buffer is made anew at the next get): for the buffer that copies
  // to and from a GPU go through, so they run at the link's speed (cuda::pinned_host_allocator,
  // which is the plain CPU allocator where no GPU is usable).
  void pin();

 private:
  Tensor buffer_;  // u8 bytes
  bool pinned_ = false;
};

// A contiguous [n] host tensor, page-locked when `pinned` (see HostStaging::pin).
Tensor empty_host(int64_t n, DType dtype, MemoryCategory category, bool pinned);

// dst = src for two contiguous tensors of the same dtype and size (a byte copy): from a device
// buffer to a host one, and back.
void copy_to_host(const Tensor& device_src, const Tensor& host_dst, OffloadTraffic& traffic);
void copy_to_device(const Tensor& host_src, const Tensor& device_dst, OffloadTraffic& traffic);

// Note [Gradient landing]: host_grad (f32, host) += reduced (compute dtype, on the device), for
// each unit as backward reduces it. land() queues the copy to the host in the compute dtype into
// one of kSlots page-locked slots and returns at once (cuda::download_async on a GPU run; a
// memcpy on the CPU); the widening into host_grad happens at a later land() that needs the slot,
// or at absorb_all() before the optimizer step. So backward keeps the GPU busy while the previous
// unit's gradient crosses and is widened, instead of draining the stream at every unit. With
// `first` (the step's first gradient for that host_grad) its old values are ignored and the
// widened gradient is written over them (one pass, and no zeroing after each step).
class GradientLanding {
 public:
  static constexpr int kSlots = 2;
  void pin();  // page-locked slots from now on (GPU runs)
  void land(const Tensor& reduced, const Tensor& host_grad, bool first, OffloadTraffic& traffic);
  void absorb_all(OffloadTraffic& traffic);  // every queued gradient is in its host_grad on return
  bool idle() const { return pending_.empty(); }

 private:
  struct Pending {
    Tensor reduced;  // kept alive (and its device memory unreused) until the copy has run
    Tensor landed;   // the slot's view, compute dtype
    Tensor host_grad;
    bool first = false;
    cuda::StreamFence fence;
  };
  void absorb_front(OffloadTraffic& traffic);
  std::array<HostStaging, kSlots> slots_;
  int next_slot_ = 0;
  std::deque<Pending> pending_;
};

// Note [Parameter return]: the offloaded step's updated parameters (rounded to the compute dtype
// on the host, Note [Offloaded step]) go back to the device through kSlots page-locked slots:
// slot() hands out the next slot once its previous upload has run, send() queues the upload
// (cuda::upload_async on the device's current stream; a memcpy on the CPU) and returns at once. So
// the host rounds and steps the next unit while this one crosses, and the next forward, queued
// behind the uploads on the same stream (collectives wait on it too), needs no host wait.
class ParameterReturn {
 public:
  static constexpr int kSlots = 2;
  ParameterReturn() = default;
  ParameterReturn(const ParameterReturn&) = delete;
  ParameterReturn& operator=(const ParameterReturn&) = delete;
  ~ParameterReturn();  // waits for uploads still reading the slots
  void pin();  // page-locked slots from now on (GPU runs)
  // The next slot as n elements of `dtype`, valid until the next slot() call after send().
  Tensor slot(int64_t n, DType dtype);
  // Queues host (the tensor the last slot() returned, filled) -> device_dst, same dtype and size.
  void send(const Tensor& host, const Tensor& device_dst, OffloadTraffic& traffic);
  void wait_all() const;

 private:
  std::array<HostStaging, kSlots> slots_;
  std::array<cuda::StreamFence, kSlots> fences_;
  int next_ = 0;
};

struct HostBuffers {
  GradientLanding gradients;   // Note [Gradient landing]
  ParameterReturn parameters;  // Note [Parameter return]: masters rounded for the trip back
};

// compute (compute dtype, on the device) = master (f32, host), cast on the host and sent back
// through buffers.parameters (Note [Parameter return]).
void write_master_to_device(const Tensor& master, const Tensor& compute, HostBuffers& buffers,
                            OffloadTraffic& traffic);

}  // namespace zt::zero

// NcclCommunicator: the Communicator over NCCL, for CUDA tensors, one GPU per rank. Compiled only
// when CMake finds NCCL (ZT_HAVE_NCCL).
//
// Note [comm ordering]: each communicator owns a communication stream (non-blocking, high
// priority) so collectives overlap with compute. An operation is ordered against the compute
// stream with events, never with a host synchronisation:
//   1. record `ready` on the compute stream, make the comm stream wait for it (the inputs are
//      written by kernels queued before the call);
//   2. launch the NCCL kernel on the comm stream;
//   3. record the Work's `done` event on the comm stream.
// Work::wait() makes the compute stream wait for `done`: kernels queued after wait() see the
// result, and the host never blocks. is_completed() queries `done` without blocking.
//
// Note [NCCL buffers and streams]: a Work keeps its tensors' storage alive until it is destroyed.
// A dropped or destroyed Work has made the compute stream wait for `done`, so memory the caching
// allocator hands out again on the compute stream cannot be touched before NCCL has finished.
// Tensors must therefore be allocated on the compute stream this communicator is given.
//
// The compute stream defaults to the legacy default stream (0); set_compute_stream() changes it
// (splits inherit it). Tags of send/recv are ignored: NCCL matches messages between a pair of
// ranks in issue order. barrier() is a host rendezvous over the MPI bootstrap communicator.
// bf16 and f16 reduce natively; avg is NCCL's ncclAvg.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>

#include "parallel/comm/communicator.h"
#include "parallel/comm/mpi_communicator.h"

namespace zt::comm {

namespace detail {

// Owning handles for a stream and an event; destructors never throw.
class CudaStream {
 public:
  CudaStream(int device, int priority);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent();  // on the current device, without timing (cheaper to record and wait for)
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace detail

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: its rank 0 makes the NCCL unique id, MPI broadcasts it, and every
  // rank joins with its GPU `device`. NCCL ranks equal the bootstrap's ranks.
  NcclCommunicator(const MpiCommunicator& bootstrap, int device, cudaStream_t compute_stream = nullptr);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }

  cudaStream_t comm_stream() const { return comm_stream_->get(); }
  cudaStream_t compute_stream() const { return compute_stream_; }
  void set_compute_stream(cudaStream_t stream) { compute_stream_ = stream; }
  ncclComm_t handle() const { return comm_; }

 protected:
  WorkPtr do_all_reduce(const Tensor& tensor, ReduceOp op) override;
  WorkPtr do_reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) override;
  WorkPtr do_all_gather(const Tensor& input, const Tensor& output) override;
  WorkPtr do_broadcast(const Tensor& tensor, int root) override;
  WorkPtr do_batch_send_recv(const std::vector<PeerOp>& ops) override;
  WorkPtr do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key) override;

 private:
  NcclCommunicator(std::unique_ptr<MpiCommunicator> bootstrap, ncclComm_t comm, int device,
                   cudaStream_t compute_stream);
  void init_streams();
  // Steps 1-3 of Note [comm ordering] around `launch(comm_stream)`.
  template <typename Launch>
  WorkPtr enqueue(std::vector<Tensor> buffers, Launch&& launch);

  std::unique_ptr<MpiCommunicator> bootstrap_;  // a private duplicate: unique id, barrier, split
  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  int rank_ = 0;
  int size_ = 1;
  cudaStream_t compute_stream_ = nullptr;
  std::unique_ptr<detail::CudaStream> comm_stream_;
  std::unique_ptr<detail::CudaEvent> ready_;
};

}  // namespace zt::comm

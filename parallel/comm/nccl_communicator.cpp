#include "parallel/comm/nccl_communicator.h"

#include <cstdio>
#include <utility>

#include "parallel/comm/mpi_check.h"

#define ZT_CUDA_COMM_CHECK(call)                                                                     \
  do {                                                                                               \
    cudaError_t zt_cuda_rc_ = (call);                                                                \
    if (zt_cuda_rc_ != cudaSuccess)                                                                  \
      ZT_FAIL("nccl", #call, " failed: ", cudaGetErrorString(zt_cuda_rc_), " (", __FILE__, ":", __LINE__, ")"); \
  } while (0)

#define ZT_NCCL_CHECK(call)                                                                          \
  do {                                                                                               \
    ncclResult_t zt_nccl_rc_ = (call);                                                               \
    if (zt_nccl_rc_ != ncclSuccess)                                                                  \
      ZT_FAIL("nccl", #call, " failed: ", ncclGetErrorString(zt_nccl_rc_), " (", ncclGetLastError(nullptr), ") (", \
              __FILE__, ":", __LINE__, ")");                                                         \
  } while (0)

namespace zt::comm {

namespace {

// Makes `device` current for a scope and restores the previous one (CUDA calls act on the current
// device; the caller's choice must survive communication calls).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    ZT_CUDA_COMM_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) ZT_CUDA_COMM_CHECK(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8:
    case DType::boolean: return ncclUint8;  // bool is one byte holding 0 or 1; max is logical or
  }
  ZT_FAIL("nccl", "no NCCL type for dtype ", dtype_name(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
  }
  ZT_FAIL("nccl", "unknown reduce op");
}

size_t count_of(const Tensor& t) { return static_cast<size_t>(t.numel()); }

// See Note [comm ordering] and Note [NCCL buffers and streams].
class NcclWork final : public Work {
 public:
  NcclWork(int device, cudaStream_t compute_stream, std::vector<Tensor> buffers)
      : device_(device), compute_stream_(compute_stream), buffers_(std::move(buffers)) {}

  ~NcclWork() override {
    if (waited_) return;
    // Order the compute stream after the operation so its buffers are not reused under it.
    DeviceGuard guard(device_);
    if (cudaStreamWaitEvent(compute_stream_, done_.get(), 0) != cudaSuccess)
      std::fprintf(stderr, "[nccl] could not order the compute stream after a dropped operation\n");
  }

  cudaEvent_t done_event() const { return done_.get(); }

  void wait() override {
    if (waited_) return;
    DeviceGuard guard(device_);
    ZT_CUDA_COMM_CHECK(cudaStreamWaitEvent(compute_stream_, done_.get(), 0));
    waited_ = true;
  }

  bool is_completed() override {
    cudaError_t status = cudaEventQuery(done_.get());
    if (status == cudaErrorNotReady) return false;
    ZT_CUDA_COMM_CHECK(status);
    return true;
  }

 private:
  int device_;
  cudaStream_t compute_stream_;
  std::vector<Tensor> buffers_;
  detail::CudaEvent done_;  // created on the current device, which enqueue() has set
  bool waited_ = false;
};

}  // namespace

namespace detail {

CudaStream::CudaStream(int device, int priority) {
  DeviceGuard guard(device);
  ZT_CUDA_COMM_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, priority));
}
CudaStream::~CudaStream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

CudaEvent::CudaEvent() { ZT_CUDA_COMM_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
CudaEvent::~CudaEvent() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

}  // namespace detail

NcclCommunicator::NcclCommunicator(const MpiCommunicator& bootstrap, int device, cudaStream_t compute_stream)
    : device_(device), compute_stream_(compute_stream) {
  int devices = 0;
  ZT_CUDA_COMM_CHECK(cudaGetDeviceCount(&devices));
  ZT_CHECK(device >= 0 && device < devices, "nccl", "cuda:", device, " does not exist; this process sees ", devices,
           " GPU(s)");
  MPI_Comm dup = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_dup(bootstrap.handle(), &dup));
  bootstrap_ = std::make_unique<MpiCommunicator>(dup);
  rank_ = bootstrap_->rank();
  size_ = bootstrap_->size();

  ncclUniqueId id{};
  if (rank_ == 0) ZT_NCCL_CHECK(ncclGetUniqueId(&id));
  ZT_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap_->handle()));
  DeviceGuard guard(device_);
  ZT_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
  init_streams();
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> bootstrap, ncclComm_t comm, int device,
                                   cudaStream_t compute_stream)
    : bootstrap_(std::move(bootstrap)), comm_(comm), device_(device), compute_stream_(compute_stream) {
  ZT_NCCL_CHECK(ncclCommCount(comm_, &size_));
  ZT_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  init_streams();
}

void NcclCommunicator::init_streams() {
  DeviceGuard guard(device_);
  int lowest = 0, highest = 0;  // numerically, "highest" priority is the smallest number
  ZT_CUDA_COMM_CHECK(cudaDeviceGetStreamPriorityRange(&lowest, &highest));
  comm_stream_ = std::make_unique<detail::CudaStream>(device_, highest);
  ready_ = std::make_unique<detail::CudaEvent>();
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  if (comm_stream_) cudaStreamSynchronize(comm_stream_->get());  // let queued operations finish
  if (ncclCommDestroy(comm_) != ncclSuccess) std::fprintf(stderr, "[nccl] ncclCommDestroy failed\n");
  cudaSetDevice(previous);
}

template <typename Launch>
WorkPtr NcclCommunicator::enqueue(std::vector<Tensor> buffers, Launch&& launch) {
  DeviceGuard guard(device_);
  cudaStream_t stream = comm_stream_->get();
  ZT_CUDA_COMM_CHECK(cudaEventRecord(ready_->get(), compute_stream_));
  ZT_CUDA_COMM_CHECK(cudaStreamWaitEvent(stream, ready_->get(), 0));
  auto work = std::make_unique<NcclWork>(device_, compute_stream_, std::move(buffers));
  launch(stream);
  ZT_CUDA_COMM_CHECK(cudaEventRecord(work->done_event(), stream));
  return work;
}

WorkPtr NcclCommunicator::do_all_reduce(const Tensor& tensor, ReduceOp op) {
  return enqueue({tensor}, [&](cudaStream_t stream) {
    ZT_NCCL_CHECK(ncclAllReduce(tensor.raw_data(), tensor.raw_data(), count_of(tensor), nccl_type(tensor.dtype()),
                                nccl_op(op), comm_, stream));
  });
}

// NCCL's in-place forms are exactly the aliases the public checks allow: output at input's slice
// for reduce-scatter, input at output's slice for all-gather.
WorkPtr NcclCommunicator::do_reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) {
  return enqueue({input, output}, [&](cudaStream_t stream) {
    ZT_NCCL_CHECK(ncclReduceScatter(input.raw_data(), output.raw_data(), count_of(output), nccl_type(input.dtype()),
                                    nccl_op(op), comm_, stream));
  });
}

WorkPtr NcclCommunicator::do_all_gather(const Tensor& input, const Tensor& output) {
  return enqueue({input, output}, [&](cudaStream_t stream) {
    ZT_NCCL_CHECK(ncclAllGather(input.raw_data(), output.raw_data(), count_of(input), nccl_type(input.dtype()), comm_,
                                stream));
  });
}

WorkPtr NcclCommunicator::do_broadcast(const Tensor& tensor, int root) {
  return enqueue({tensor}, [&](cudaStream_t stream) {
    ZT_NCCL_CHECK(ncclBroadcast(tensor.raw_data(), tensor.raw_data(), count_of(tensor), nccl_type(tensor.dtype()), root,
                                comm_, stream));
  });
}

WorkPtr NcclCommunicator::do_batch_send_recv(const std::vector<PeerOp>& ops) {
  std::vector<Tensor> buffers;
  for (const PeerOp& op : ops) buffers.push_back(op.tensor);
  return enqueue(std::move(buffers), [&](cudaStream_t stream) {
    ZT_NCCL_CHECK(ncclGroupStart());
    for (const PeerOp& op : ops) {
      ncclResult_t rc = op.kind == PeerOp::Kind::send
                            ? ncclSend(op.tensor.raw_data(), count_of(op.tensor), nccl_type(op.tensor.dtype()),
                                       op.peer, comm_, stream)
                            : ncclRecv(op.tensor.raw_data(), count_of(op.tensor), nccl_type(op.tensor.dtype()),
                                       op.peer, comm_, stream);
      if (rc != ncclSuccess) {
        ncclGroupEnd();  // close the group so the communicator stays usable
        ZT_NCCL_CHECK(rc);
      }
    }
    ZT_NCCL_CHECK(ncclGroupEnd());
  });
}

WorkPtr NcclCommunicator::do_barrier() { return bootstrap_->barrier(); }

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key) {
  MPI_Comm child_mpi = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_split(bootstrap_->handle(), color < 0 ? MPI_UNDEFINED : color, key, &child_mpi));
  DeviceGuard guard(device_);
  ncclComm_t child = nullptr;
  ZT_NCCL_CHECK(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr));
  if (child_mpi == MPI_COMM_NULL || child == nullptr) {
    ZT_CHECK(child_mpi == MPI_COMM_NULL && child == nullptr, "nccl", "MPI and NCCL disagree about split(", color,
             ", ", key, ") on rank ", rank_);
    return nullptr;
  }
  auto bootstrap = std::make_unique<MpiCommunicator>(child_mpi);
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(bootstrap), child, device_, compute_stream_));
}

}  // namespace zt::comm

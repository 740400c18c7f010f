#include "parallel/comm/mpi_communicator.h"

#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "parallel/comm/mpi_check.h"

namespace zt::comm {

namespace {

// The MPI type that moves a dtype's bits (halves as 16-bit integers: Note [MPI half precision]).
MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::bf16:
    case DType::f16: return MPI_UINT16_T;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u8:
    case DType::boolean: return MPI_UINT8_T;  // bool is stored as one byte holding 0 or 1
  }
  ZT_FAIL("comm", "no MPI type for dtype ", dtype_name(dtype));
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

int mpi_count(const char* api, int64_t numel) {
  ZT_CHECK(numel <= INT_MAX, api, "the MPI backend moves at most ", INT_MAX, " elements per call, got ", numel,
           "; split the buffer");
  return static_cast<int>(numel);
}

// A half-precision reduction operand, widened to f32 (Note [MPI half precision]).
Tensor widen_to_f32(const Tensor& src) {
  Tensor wide = empty(src.shape(), DType::f32, Device::cpu(), MemoryCategory::communication);
  float* out = static_cast<float*>(wide.raw_data());
  const int64_t n = src.numel();
  if (src.dtype() == DType::bf16) {
    const bf16* in = static_cast<const bf16*>(src.raw_data());
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
  } else {
    const f16* in = static_cast<const f16*>(src.raw_data());
    for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(in[i]);
  }
  return wide;
}

// dst = src / divisor (divisor 1 for sum and max), src of dst's dtype or f32 for half dst.
// Division rather than multiplication by 1/divisor, so avg matches sum / n computed elsewhere.
void store_result(const Tensor& src, const Tensor& dst, int divisor) {
  const int64_t n = dst.numel();
  if (is_half(dst.dtype())) {
    const float* in = static_cast<const float*>(src.raw_data());
    const float d = static_cast<float>(divisor);
    if (dst.dtype() == DType::bf16) {
      bf16* out = static_cast<bf16*>(dst.raw_data());
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i] / d);
    } else {
      f16* out = static_cast<f16*>(dst.raw_data());
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_f16(in[i] / d);
    }
    return;
  }
  if (!src.same(dst) && src.raw_data() != dst.raw_data()) std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
  if (divisor == 1) return;
  dispatch_float(dst.dtype(), "comm", [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>) {
      T* out = static_cast<T*>(dst.raw_data());
      const T d = static_cast<T>(divisor);
      for (int64_t i = 0; i < n; ++i) out[i] /= d;
    }
  });
}

// One or more MPI requests, the tensors they use, and what to do once they are complete.
class MpiWork final : public Work {
 public:
  MpiWork(std::vector<Tensor> buffers, std::function<void()> finish)
      : buffers_(std::move(buffers)), finish_(std::move(finish)) {}

  ~MpiWork() override {
    if (done_) return;
    try {
      wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[comm] an MPI operation dropped without wait() failed: %s\n", e.what());
    }
  }

  // A slot for the next request; MPI writes the handle during the call that starts it.
  MPI_Request* add_request() {
    requests_.push_back(MPI_REQUEST_NULL);
    return &requests_.back();
  }

  void wait() override {
    if (done_) return;
    done_ = true;  // also on failure: the requests are gone either way
    ZT_MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
    complete();
  }

  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    ZT_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE));
    if (!flag) return false;
    done_ = true;
    complete();
    return true;
  }

 private:
  void complete() {
    if (finish_) finish_();
    buffers_.clear();
  }

  std::vector<MPI_Request> requests_;
  std::vector<Tensor> buffers_;  // kept alive while MPI reads or writes them
  std::function<void()> finish_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  MPI_Comm dup = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  return std::make_unique<MpiCommunicator>(dup);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  ZT_CHECK(comm != MPI_COMM_NULL, "comm", "MpiCommunicator needs a communicator, got MPI_COMM_NULL");
  ZT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  ZT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  ZT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  void* value = nullptr;
  int found = 0;
  ZT_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &value, &found));
  if (found) tag_upper_bound_ = *static_cast<int*>(value);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

WorkPtr MpiCommunicator::do_all_reduce(const Tensor& tensor, ReduceOp op) {
  const int count = mpi_count("comm.all_reduce", tensor.numel());
  const int divisor = op == ReduceOp::avg ? size_ : 1;
  if (is_half(tensor.dtype())) {
    Tensor wide = widen_to_f32(tensor);
    auto work = std::make_unique<MpiWork>(std::vector<Tensor>{tensor, wide},
                                          [wide, tensor, divisor] { store_result(wide, tensor, divisor); });
    ZT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, wide.raw_data(), count, MPI_FLOAT, mpi_op(op), comm_,
                                work->add_request()));
    return work;
  }
  std::function<void()> finish;
  if (divisor != 1) finish = [tensor, divisor] { store_result(tensor, tensor, divisor); };
  auto work = std::make_unique<MpiWork>(std::vector<Tensor>{tensor}, std::move(finish));
  ZT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.raw_data(), count, mpi_type(tensor.dtype()), mpi_op(op), comm_,
                              work->add_request()));
  return work;
}

WorkPtr MpiCommunicator::do_reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) {
  mpi_count("comm.reduce_scatter", input.numel());
  const int count = mpi_count("comm.reduce_scatter", output.numel());
  const int divisor = op == ReduceOp::avg ? size_ : 1;
  const bool half = is_half(input.dtype());
  // MPI's in-place reduce-scatter puts the result at the start of the buffer, not at the rank's
  // slice, so an aliased output (the rank's own slice of input) goes through a temporary.
  const bool aliased = output.numel() > 0 && static_cast<const char*>(output.raw_data()) >=
                                                   static_cast<const char*>(input.raw_data()) &&
                       static_cast<const char*>(output.raw_data()) <
                           static_cast<const char*>(input.raw_data()) + input.nbytes();
  Tensor send = half ? widen_to_f32(input) : input;
  Tensor receive = output;
  if (half || aliased) {
    receive = empty(output.shape(), half ? DType::f32 : output.dtype(), Device::cpu(), MemoryCategory::communication);
  }
  std::function<void()> finish;
  if (divisor != 1 || !receive.same(output)) {
    finish = [receive, output, divisor] { store_result(receive, output, divisor); };
  }
  auto work = std::make_unique<MpiWork>(std::vector<Tensor>{input, output, send, receive}, std::move(finish));
  ZT_MPI_CHECK(MPI_Ireduce_scatter_block(send.raw_data(), receive.raw_data(), count,
                                         half ? MPI_FLOAT : mpi_type(input.dtype()), mpi_op(op), comm_,
                                         work->add_request()));
  return work;
}

WorkPtr MpiCommunicator::do_all_gather(const Tensor& input, const Tensor& output) {
  const int count = mpi_count("comm.all_gather", input.numel());
  mpi_count("comm.all_gather", output.numel());
  const MPI_Datatype type = mpi_type(input.dtype());
  // The checks allow only one overlap: input is this rank's slice of output (MPI_IN_PLACE).
  const bool in_place = input.numel() > 0 &&
                        input.raw_data() == static_cast<char*>(output.raw_data()) + rank_ * input.nbytes();
  auto work = std::make_unique<MpiWork>(std::vector<Tensor>{input, output}, nullptr);
  ZT_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : input.raw_data(), count, type, output.raw_data(), count, type,
                              comm_, work->add_request()));
  return work;
}

WorkPtr MpiCommunicator::do_broadcast(const Tensor& tensor, int root) {
  const int count = mpi_count("comm.broadcast", tensor.numel());
  auto work = std::make_unique<MpiWork>(std::vector<Tensor>{tensor}, nullptr);
  ZT_MPI_CHECK(MPI_Ibcast(tensor.raw_data(), count, mpi_type(tensor.dtype()), root, comm_, work->add_request()));
  return work;
}

WorkPtr MpiCommunicator::do_batch_send_recv(const std::vector<PeerOp>& ops) {
  std::vector<Tensor> buffers;
  for (const PeerOp& op : ops) {
    ZT_CHECK(op.tag <= tag_upper_bound_, "comm.send_recv", "tag ", op.tag, " exceeds MPI's limit ", tag_upper_bound_);
    buffers.push_back(op.tensor);
  }
  auto work = std::make_unique<MpiWork>(std::move(buffers), nullptr);
  for (const PeerOp& op : ops) {
    const int count = mpi_count("comm.send_recv", op.tensor.numel());
    const MPI_Datatype type = mpi_type(op.tensor.dtype());
    if (op.kind == PeerOp::Kind::send) {
      ZT_MPI_CHECK(MPI_Isend(op.tensor.raw_data(), count, type, op.peer, op.tag, comm_, work->add_request()));
    } else {
      ZT_MPI_CHECK(MPI_Irecv(op.tensor.raw_data(), count, type, op.peer, op.tag, comm_, work->add_request()));
    }
  }
  return work;
}

WorkPtr MpiCommunicator::do_barrier() {
  auto work = std::make_unique<MpiWork>(std::vector<Tensor>{}, nullptr);
  ZT_MPI_CHECK(MPI_Ibarrier(comm_, work->add_request()));
  return work;
}

std::unique_ptr<Communicator> MpiCommunicator::do_split(int color, int key) {
  MPI_Comm child = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child));
  if (child == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(child);
}

}  // namespace zt::comm

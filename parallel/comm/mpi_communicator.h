// MpiCommunicator: the Communicator over an MPI communicator, for CPU tensors and any number of
// ranks. Used for CPU-only runs, for the distributed tests, and as the NCCL bootstrap.
//
// Note [MPI half precision]: MPI has no bf16 or f16 type. Data movement (all_gather, broadcast,
// send/recv) ships them as 16-bit integers, unchanged. Reductions convert the operand to an f32
// copy, reduce in f32 with MPI's built-in ops, and round back once at the end. That costs a
// temporary 2x the buffer but gives one rounding instead of one per hop (what a custom MPI_Op on
// 16-bit values would do), so the result equals a single-process f32 sum rounded to the half type
// (up to the f32 summation order, below).
//
// Note [MPI reduction order]: MPI picks the reduction algorithm (ring, recursive doubling, ...)
// by message size and group size, so the order in which ranks' values are added may differ from a
// serial loop over ranks. f32 sums therefore agree with a single process to rounding (relative
// ~size x 6e-8, well within the 1e-6 the equality tests allow), not bit for bit; integer sums and
// max are exact. All ranks receive the same bits.
//
// avg is computed as sum then division by size() on completion (in f32 for halves), inside wait().
// Counts are MPI ints: one call moves at most 2^31 - 1 elements (larger buffers are refused).
#pragma once

#include <memory>

#include "parallel/comm/communicator.h"
#include "parallel/comm/mpi_check.h"  // <mpi.h>

namespace zt::comm {

class MpiCommunicator final : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD, so zerotrain's messages never mix with a host program's.
  static std::unique_ptr<MpiCommunicator> world();
  // Takes ownership of comm (freed by the destructor unless MPI is already finalised).
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }
  MPI_Comm handle() const { return comm_; }

 protected:
  WorkPtr do_all_reduce(const Tensor& tensor, ReduceOp op) override;
  WorkPtr do_reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) override;
  WorkPtr do_all_gather(const Tensor& input, const Tensor& output) override;
  WorkPtr do_broadcast(const Tensor& tensor, int root) override;
  WorkPtr do_batch_send_recv(const std::vector<PeerOp>& ops) override;
  WorkPtr do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key) override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int tag_upper_bound_ = 32767;  // MPI guarantees at least this
};

}  // namespace zt::comm

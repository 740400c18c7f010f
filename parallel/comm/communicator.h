// Communicator: a group of ranks and the collectives zerotrain needs, each asynchronous.
//
// The interface is deliberately tiny (in the spirit of MLX's distributed Group): rank, size,
// seven verbs and split. Two backends implement it: MpiCommunicator (CPU tensors, any number of
// ranks) and NcclCommunicator (CUDA tensors, one GPU per rank). Every verb returns a Work handle;
// nothing is guaranteed to have happened until wait() (or is_completed() returning true).
//
// What wait() means depends on the backend (Note [comm ordering]):
//   - MPI: the host blocks until the operation is complete; the buffers then hold the result.
//   - NCCL: the compute stream is made to wait for the operation's done event. The host does not
//     block; every kernel queued on the compute stream afterwards sees the result.
//
// Buffers: tensors must be contiguous, on the communicator's device, and of one dtype per call.
// Tensor is a handle, so output tensors are passed as const Tensor& and written through it.
// A Work keeps its tensors' storage alive until it is complete. The caller must not write an input,
// or read or write an output, between starting an operation and waiting for it.
//
// In-place use:
//   all_reduce, broadcast  always in place.
//   all_gather             input may be the rank's own slice of output (output[rank*n, (rank+1)*n)),
//                          the ZeRO-3 pattern; any other overlap is refused.
//   reduce_scatter         output may be the rank's own slice of input (input[rank*n, (rank+1)*n)),
//                          the ZeRO-2 pattern; any other overlap is refused.
//
// Ordering contract (as MPI and NCCL require): every rank of the group issues the same collectives
// in the same order. Several may be in flight at once and waited for in any order.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace zt::comm {

// avg is sum followed by division by size() (floating dtypes only). max works on every dtype but
// bool, which accepts only max (logical or). sum on bool is refused.
enum class ReduceOp : uint8_t { sum, avg, max };
const char* reduce_op_name(ReduceOp op);

class Work {
 public:
  // Dropping a Work that was not waited for waits for it (host block on MPI, stream order on NCCL),
  // so that buffers are never freed or reused under a running operation. Never throws.
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Non-blocking query; true once the operation has finished on this rank.
  virtual bool is_completed() = 0;
};
using WorkPtr = std::unique_ptr<Work>;

// One send or receive of a batch (Communicator::batch_send_recv).
struct PeerOp {
  enum class Kind : uint8_t { send, recv };
  Kind kind = Kind::send;
  Tensor tensor;
  int peer = 0;
  int tag = 0;

  static PeerOp send(Tensor t, int peer, int tag = 0) { return {Kind::send, std::move(t), peer, tag}; }
  static PeerOp recv(Tensor t, int peer, int tag = 0) { return {Kind::recv, std::move(t), peer, tag}; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "mpi" or "nccl"
  virtual Device device() const = 0;        // where its tensors must live

  // tensor = op over ranks of tensor, on every rank.
  WorkPtr all_reduce(const Tensor& tensor, ReduceOp op);
  // input has size() * n elements; output (n elements) = op over ranks of input[rank*n, (rank+1)*n).
  WorkPtr reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op);
  // input has n elements; output has size() * n: output[r*n, (r+1)*n) = input of rank r.
  WorkPtr all_gather(const Tensor& input, const Tensor& output);
  // tensor on every rank = tensor on root.
  WorkPtr broadcast(const Tensor& tensor, int root);
  // Point to point. Messages between two ranks match by (peer, tag) on MPI and by issue order on
  // NCCL (which has no tags), so keep sends and receives between a pair in the same order.
  WorkPtr send(const Tensor& tensor, int peer, int tag = 0);
  WorkPtr recv(const Tensor& tensor, int peer, int tag = 0);
  // Starts all sends and receives together (one NCCL group). Use it whenever a rank both sends and
  // receives in one step (a ring, pipeline neighbours): separate blocking-order send() and recv()
  // calls can deadlock on NCCL, whose point-to-point operations wait for their peer on the stream.
  WorkPtr batch_send_recv(const std::vector<PeerOp>& ops);
  // A host-level rendezvous: wait() returns once every rank has called barrier(). It does not wait
  // for GPU work queued on the NCCL stream.
  WorkPtr barrier();

  // Collective over this group: ranks with the same color form a new group, ordered by key (then by
  // rank). A negative color joins no group and returns nullptr. Blocking; a setup-time operation.
  std::unique_ptr<Communicator> split(int color, int key);

 protected:
  // Implementations receive arguments that the public functions have already checked.
  virtual WorkPtr do_all_reduce(const Tensor& tensor, ReduceOp op) = 0;
  virtual WorkPtr do_reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) = 0;
  virtual WorkPtr do_all_gather(const Tensor& input, const Tensor& output) = 0;
  virtual WorkPtr do_broadcast(const Tensor& tensor, int root) = 0;
  virtual WorkPtr do_batch_send_recv(const std::vector<PeerOp>& ops) = 0;
  virtual WorkPtr do_barrier() = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key) = 0;
};

// The world communicator for a device: MpiCommunicator over MPI_COMM_WORLD for cpu, an
// NcclCommunicator (bootstrapped over MPI) for cuda:N. Needs a live MpiSession; collective.
std::unique_ptr<Communicator> make_world_communicator(Device device);

// A Work that is already complete (for example a collective over a group of one).
WorkPtr completed_work();

}  // namespace zt::comm

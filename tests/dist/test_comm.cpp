// ranks: 1 2 4
// The MPI communicator against references computed locally: every rank generates every rank's
// input (seeded by rank), so each can compute the expected result with a plain loop in f64.
// Integer-valued inputs make sums exact in every dtype and any order, so those checks are exact;
// random normal inputs check f32/f64/bf16/f16 sums against a serial f64 sum within rounding.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_support.h"
#include "launch/config.h"
#include "launch/gemm_tuning_sync.h"
#include "launch/launcher.h"
#include "parallel/comm/environment.h"
#include "parallel/comm/mpi_communicator.h"

namespace zt::comm {
namespace {

using Values = std::vector<double>;

const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::u8,   DType::boolean};

std::vector<ReduceOp> ops_for(DType dtype) {
  if (dtype == DType::boolean) return {ReduceOp::max};
  if (is_floating(dtype)) return {ReduceOp::sum, ReduceOp::avg, ReduceOp::max};
  return {ReduceOp::sum, ReduceOp::max};
}

uint64_t seed_of(uint64_t test, DType dtype, ReduceOp op = ReduceOp::sum) {
  return test * 1000 + static_cast<uint64_t>(dtype) * 10 + static_cast<uint64_t>(op);
}

// Integers small enough that a sum over 4 ranks is exact in every dtype (bf16 holds integers to 256).
Values integer_values(uint64_t seed, int rank, int64_t n, DType dtype) {
  std::mt19937_64 gen(seed * 7919 + static_cast<uint64_t>(rank));
  const int lo = dtype == DType::boolean ? 0 : dtype == DType::u8 ? 1 : -8;
  const int hi = dtype == DType::boolean ? 1 : dtype == DType::u8 ? 30 : 8;
  std::uniform_int_distribution<int> dist(lo, hi);
  Values v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

Values normal_values(uint64_t seed, int rank, int64_t n) {
  std::mt19937_64 gen(seed * 7919 + static_cast<uint64_t>(rank));
  std::normal_distribution<double> dist(0.0, 1.0);
  Values v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

Tensor make_tensor(const Values& v, DType dtype) {
  Tensor t = empty({static_cast<int64_t>(v.size())}, dtype);
  dispatch_all(dtype, "test", [&]<typename T>() {
    T* p = static_cast<T*>(t.raw_data());
    for (size_t i = 0; i < v.size(); ++i) p[i] = from_compute<T>(v[i]);
  });
  return t;
}

Values read(const Tensor& t) {
  Values v(static_cast<size_t>(t.numel()));
  dispatch_all(t.dtype(), "test", [&]<typename T>() {
    const T* p = static_cast<const T*>(t.raw_data());
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(to_compute(p[i]));
  });
  return v;
}

// The values as stored in dtype (rounding for halves).
Values stored(const Values& v, DType dtype) { return read(make_tensor(v, dtype)); }

// Elementwise op over ranks of per_rank[r], in f64, then stored in dtype.
Values reference(const std::vector<Values>& per_rank, ReduceOp op, DType dtype) {
  Values out(per_rank[0].size());
  for (size_t i = 0; i < out.size(); ++i) {
    double acc = op == ReduceOp::max ? -INFINITY : 0.0;
    for (const Values& v : per_rank) acc = op == ReduceOp::max ? std::max(acc, v[i]) : acc + v[i];
    if (op == ReduceOp::avg) acc /= static_cast<double>(per_rank.size());
    out[i] = acc;
  }
  return stored(out, dtype);
}

// One EXPECT per buffer, naming the first mismatching element, so a bug does not print thousands.
void expect_values(const Values& got, const Values& want, const std::string& what,
                   const Values& tolerance = {}) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = tolerance.empty() ? 0.0 : tolerance[i];
    if (!(std::abs(got[i] - want[i]) <= tol)) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << want[i]
                    << " (tolerance " << tol << ")";
      return;
    }
  }
}

std::string label(const char* verb, DType dtype, ReduceOp op) {
  return std::string(verb) + " " + dtype_name(dtype) + " " + reduce_op_name(op);
}

void expect_error(const std::function<void()>& fn, const std::string& expected) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << expected;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
        << "error was: " << e.what() << "\nexpected it to contain: " << expected;
  }
}

class Comm : public ::testing::Test {
 protected:
  void SetUp() override { world = MpiCommunicator::world(); }
  int rank() const { return world->rank(); }
  int size() const { return world->size(); }
  std::vector<Values> all_ranks(const std::function<Values(int)>& make) const {
    std::vector<Values> v;
    for (int r = 0; r < size(); ++r) v.push_back(make(r));
    return v;
  }
  std::unique_ptr<MpiCommunicator> world;
};

TEST_F(Comm, WorldMatchesMpi) {
  int mpi_rank = -1, mpi_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  EXPECT_EQ(rank(), mpi_rank);
  EXPECT_EQ(size(), mpi_size);
  EXPECT_STREQ(world->backend(), "mpi");
  EXPECT_EQ(world->device(), Device::cpu());
}

TEST_F(Comm, AllReduceEveryDtypeAndOp) {
  for (DType dtype : kAllDTypes) {
    for (ReduceOp op : ops_for(dtype)) {
      const int64_t n = 37;
      auto make = [&](int r) { return integer_values(seed_of(1, dtype, op), r, n, dtype); };
      Tensor t = make_tensor(make(rank()), dtype);
      world->all_reduce(t, op)->wait();
      expect_values(read(t), reference(all_ranks(make), op, dtype), label("all_reduce", dtype, op));
    }
  }
}

// Random data: f32 sums agree with a serial f64 sum within 1e-6 of the magnitudes summed
// (Note [MPI reduction order]); halves within one unit in the last place.
TEST_F(Comm, AllReduceRandomMatchesSerialSum) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (int64_t n : {1, 2, 1023, 16411}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
        // Each rank's input as stored in dtype, so the reference starts from the same numbers.
        auto make = [&](int r) { return stored(normal_values(seed_of(2, dtype, op) + n, r, n), dtype); };
        Tensor t = make_tensor(make(rank()), dtype);
        world->all_reduce(t, op)->wait();
        std::vector<Values> inputs = all_ranks(make);
        Values want = reference(inputs, op, DType::f64), tolerance(want.size());
        const double rel = dtype == DType::bf16 ? 0x1p-8 : dtype == DType::f16 ? 0x1p-11 : 1e-6;
        for (size_t i = 0; i < want.size(); ++i) {
          double magnitude = 0;
          for (const Values& v : inputs) magnitude += std::abs(v[i]);
          if (op == ReduceOp::avg) magnitude /= size();
          tolerance[i] = rel * magnitude + 1e-30;
        }
        expect_values(read(t), want, label("random all_reduce", dtype, op) + " n=" + std::to_string(n), tolerance);
      }
    }
  }
}

TEST_F(Comm, ReduceScatterEveryDtypeAndOp) {
  const int64_t n = 5;  // per rank; odd, so nothing lines up with vector widths
  for (DType dtype : kAllDTypes) {
    for (ReduceOp op : ops_for(dtype)) {
      auto make = [&](int r) { return integer_values(seed_of(3, dtype, op), r, size() * n, dtype); };
      Values full = reference(all_ranks(make), op, dtype);
      Values want(full.begin() + rank() * n, full.begin() + (rank() + 1) * n);

      Tensor input = make_tensor(make(rank()), dtype);
      Tensor output = empty({n}, dtype);
      world->reduce_scatter(input, output, op)->wait();
      expect_values(read(output), want, label("reduce_scatter", dtype, op));

      // In place: the output is this rank's slice of the input (the ZeRO-2 pattern).
      Tensor buffer = make_tensor(make(rank()), dtype);
      Tensor own = make_view(buffer, {n}, {1}, rank() * n);
      world->reduce_scatter(buffer, own, op)->wait();
      expect_values(read(own), want, label("in-place reduce_scatter", dtype, op));
    }
  }
}

TEST_F(Comm, AllGatherEveryDtype) {
  for (DType dtype : kAllDTypes) {
    for (int64_t n : {1, 3, 1000}) {
      auto make = [&](int r) { return integer_values(seed_of(4, dtype) + n, r, n, dtype); };
      Values want;
      for (const Values& v : all_ranks(make)) want.insert(want.end(), v.begin(), v.end());
      want = stored(want, dtype);

      Tensor output = empty({size() * n}, dtype);
      world->all_gather(make_tensor(make(rank()), dtype), output)->wait();
      expect_values(read(output), want, std::string("all_gather ") + dtype_name(dtype));

      // In place: the input is this rank's slice of the output (the ZeRO-3 pattern).
      Tensor gathered = make_tensor(Values(static_cast<size_t>(size() * n), 0.0), dtype);
      Tensor own = make_view(gathered, {n}, {1}, rank() * n);
      Tensor mine = make_tensor(make(rank()), dtype);
      std::memcpy(own.raw_data(), mine.raw_data(), mine.nbytes());
      world->all_gather(own, gathered)->wait();
      expect_values(read(gathered), want, std::string("in-place all_gather ") + dtype_name(dtype));
    }
  }
}

TEST_F(Comm, BroadcastFromEveryRoot) {
  for (DType dtype : kAllDTypes) {
    for (int root = 0; root < size(); ++root) {
      auto make = [&](int r) { return integer_values(seed_of(5, dtype) + root, r, 11, dtype); };
      Tensor t = make_tensor(make(rank()), dtype);
      world->broadcast(t, root)->wait();
      expect_values(read(t), stored(make(root), dtype),
                    std::string("broadcast ") + dtype_name(dtype) + " from " + std::to_string(root));
    }
  }
}

TEST_F(Comm, SendRecvRing) {
  const int next = (rank() + 1) % size(), prev = (rank() + size() - 1) % size();
  auto make = [&](int r, DType dtype) { return stored(integer_values(seed_of(6, dtype), r, 13, dtype), dtype); };

  // Separate handles: post the receive, then the send, wait in either order.
  Tensor received = empty({13}, DType::f32);
  WorkPtr recv_work = world->recv(received, prev);
  WorkPtr send_work = world->send(make_tensor(make(rank(), DType::f32), DType::f32), next);
  send_work->wait();
  recv_work->wait();
  expect_values(read(received), make(prev, DType::f32), "ring send/recv");

  // One batch, two dtypes, both directions.
  Tensor from_prev = empty({13}, DType::bf16), from_next = empty({13}, DType::i64);
  world
      ->batch_send_recv({PeerOp::send(make_tensor(make(rank(), DType::bf16), DType::bf16), next),
                         PeerOp::send(make_tensor(make(rank(), DType::i64), DType::i64), prev),
                         PeerOp::recv(from_prev, prev), PeerOp::recv(from_next, next)})
      ->wait();
  expect_values(read(from_prev), make(prev, DType::bf16), "batched ring bf16");
  expect_values(read(from_next), make(next, DType::i64), "batched reverse ring i64");

  // MPI matches by tag: receives posted in the opposite order of the sends still pair up.
  Tensor tag1 = empty({1}, DType::i32), tag2 = empty({1}, DType::i32);
  WorkPtr r2 = world->recv(tag2, prev, 2), r1 = world->recv(tag1, prev, 1);
  WorkPtr s1 = world->send(make_tensor({100.0 + rank()}, DType::i32), next, 1);
  WorkPtr s2 = world->send(make_tensor({200.0 + rank()}, DType::i32), next, 2);
  for (WorkPtr* w : {&s1, &s2, &r1, &r2}) (*w)->wait();
  EXPECT_EQ(read(tag1)[0], 100.0 + prev);
  EXPECT_EQ(read(tag2)[0], 200.0 + prev);
}

TEST_F(Comm, SplitFormsSubgroups) {
  // Parity groups, ordered by descending world rank (key = -rank).
  std::unique_ptr<Communicator> sub = world->split(rank() % 2, -rank());
  std::vector<int> members;
  for (int r = size() - 1; r >= 0; --r)
    if (r % 2 == rank() % 2) members.push_back(r);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), static_cast<int>(members.size()));
  EXPECT_EQ(sub->rank(), static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin()));

  Tensor gathered = empty({sub->size()}, DType::i32);
  sub->all_gather(make_tensor({static_cast<double>(rank())}, DType::i32), gathered)->wait();
  expect_values(read(gathered), Values(members.begin(), members.end()), "split members");

  auto make = [&](int r) { return integer_values(seed_of(7, DType::f32), r, 9, DType::f32); };
  Tensor t = make_tensor(make(rank()), DType::f32);
  sub->all_reduce(t, ReduceOp::sum)->wait();
  std::vector<Values> member_values;
  for (int r : members) member_values.push_back(make(r));
  expect_values(read(t), reference(member_values, ReduceOp::sum, DType::f32), "split all_reduce");

  // A split of a split, and a rank that joins no group.
  std::unique_ptr<Communicator> single = sub->split(sub->rank(), 0);
  ASSERT_NE(single, nullptr);
  EXPECT_EQ(single->size(), 1);
  std::unique_ptr<Communicator> without_zero = world->split(rank() == 0 ? -1 : 0, rank());
  EXPECT_EQ(without_zero == nullptr, rank() == 0);
  if (without_zero) {
    EXPECT_EQ(without_zero->size(), size() - 1);
  }
}

TEST_F(Comm, AsyncCollectivesWaitInReverseOrder) {
  auto make = [&](int r) { return integer_values(seed_of(8, DType::f32), r, 257, DType::f32); };
  Tensor reduced = make_tensor(make(rank()), DType::f32);
  Tensor gathered = empty({size() * 257}, DType::f32);
  Tensor broadcasted = make_tensor(make(rank()), DType::f32);
  WorkPtr a = world->all_reduce(reduced, ReduceOp::max);
  WorkPtr b = world->all_gather(make_tensor(make(rank()), DType::f32), gathered);
  WorkPtr c = world->broadcast(broadcasted, size() - 1);
  c->wait();
  b->wait();
  while (!a->is_completed()) {
  }
  EXPECT_TRUE(a->is_completed());
  a->wait();  // a second completion is harmless

  expect_values(read(reduced), reference(all_ranks(make), ReduceOp::max, DType::f32), "overlapped all_reduce");
  Values want;
  for (const Values& v : all_ranks(make)) want.insert(want.end(), v.begin(), v.end());
  expect_values(read(gathered), want, "overlapped all_gather");
  expect_values(read(broadcasted), make(size() - 1), "overlapped broadcast");
}

TEST_F(Comm, DroppedWorkStillCompletes) {
  auto make = [&](int r) { return integer_values(seed_of(9, DType::i64), r, 21, DType::i64); };
  Tensor t = make_tensor(make(rank()), DType::i64);
  { WorkPtr dropped = world->all_reduce(t, ReduceOp::sum); }
  expect_values(read(t), reference(all_ranks(make), ReduceOp::sum, DType::i64), "dropped all_reduce");
}

TEST_F(Comm, EmptyTensorsAndBarrier) {
  Tensor none = empty({0}, DType::f32);
  world->all_reduce(none, ReduceOp::avg)->wait();
  world->all_gather(none, empty({0}, DType::f32))->wait();
  world->reduce_scatter(empty({0}, DType::bf16), empty({0}, DType::bf16), ReduceOp::sum)->wait();
  world->barrier()->wait();
  SUCCEED();
}

TEST_F(Comm, BadArgumentsAreRefused) {
  const std::string s = std::to_string(size());
  expect_error([&] { world->all_gather(empty({3}), empty({10})); },
               "[comm.all_gather] output has 10 elements, needs size (" + s + ") x input (3) = " +
                   std::to_string(3 * size()));
  expect_error([&] { world->reduce_scatter(empty({10}), empty({3}), ReduceOp::sum); },
               "[comm.reduce_scatter] input has 10 elements, needs size (" + s + ") x output (3) = " +
                   std::to_string(3 * size()));
  Tensor base = empty({2, 3});
  Tensor transposed = make_view(base, {3, 2}, {1, 3}, 0);
  expect_error([&] { world->all_reduce(transposed, ReduceOp::sum); },
               "[comm.all_reduce] tensor must be contiguous, got [3, 2] f32 cpu");
  expect_error([&] { world->all_gather(empty({2}, DType::f32), empty({2 * size()}, DType::bf16)); },
               "[comm.all_gather] input and output dtypes differ");
  expect_error([&] { world->all_reduce(empty({4}, DType::i32), ReduceOp::avg); },
               "[comm.all_reduce] avg needs a floating dtype (f32, f64, bf16, f16), got i32");
  expect_error([&] { world->all_reduce(empty({4}, DType::boolean), ReduceOp::sum); },
               "[comm.all_reduce] bool tensors accept only max (logical or), got sum");
  expect_error([&] { world->broadcast(empty({4}), size()); },
               "[comm.broadcast] root " + s + " is not a rank of this group of " + s);
  expect_error([&] { world->send(empty({4}), -1); }, "[comm.send_recv] destination -1 is not a rank");
  expect_error([&] { world->recv(empty({4}), 0, -3); }, "[comm.send_recv] tags must be non-negative, got -3");
  expect_error([&] { world->all_reduce(Tensor(), ReduceOp::sum); }, "[comm.all_reduce] tensor is undefined");
  Tensor shared = empty({4});
  expect_error([&] { world->batch_send_recv({PeerOp::recv(shared, 0), PeerOp::send(shared, 0)}); },
               "[comm.send_recv] received tensor 0 overlaps tensor 1");
  if (size() > 1) {
    Tensor input = empty({2 * size()});
    Tensor other_slice = make_view(input, {2}, {1}, ((rank() + 1) % size()) * 2);
    expect_error([&] { world->reduce_scatter(input, other_slice, ReduceOp::sum); },
                 "[comm.reduce_scatter] output overlaps input but is not this rank's slice of it");
  }
}

TEST(LaunchEnvironment, ParsesOpenMpiVariables) {
  auto from = [](std::map<std::string, std::string> vars) {
    return parse_launch_environment([vars](const char* name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    });
  };
  LaunchEnvironment alone = from({});
  EXPECT_FALSE(alone.from_launcher);
  EXPECT_EQ(alone.rank, 0);
  EXPECT_EQ(alone.world_size, 1);

  LaunchEnvironment env = from({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  EXPECT_TRUE(env.from_launcher);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 4);

  expect_error([&] { from({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "8"}}); },
               "[environment] OMPI_COMM_WORLD_RANK='x1' is not an integer");
  expect_error([&] { from({{"OMPI_COMM_WORLD_RANK", "8"}, {"OMPI_COMM_WORLD_SIZE", "8"}}); },
               "[environment] OMPI_COMM_WORLD_RANK=8 is not below OMPI_COMM_WORLD_SIZE=8");
  expect_error([&] { from({{"OMPI_COMM_WORLD_RANK", "1"}}); }, "found only some of Open MPI's variables");
}

TEST(LaunchEnvironment, AgreesWithMpi) {
  int mpi_rank = 0, mpi_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  LaunchEnvironment env = read_launch_environment();
  if (env.from_launcher) {
    EXPECT_EQ(env.rank, mpi_rank);
    EXPECT_EQ(env.world_size, mpi_size);
    EXPECT_LT(env.local_rank, env.local_size);
  }
  EXPECT_NO_THROW(check_placement_matches_mpi(env, mpi_rank, mpi_size));
  env.from_launcher = true;
  env.rank = mpi_rank + 1;
  expect_error([&] { check_placement_matches_mpi(env, mpi_rank, mpi_size); }, "but MPI says rank");
}

TEST(Launcher, ChoosesGpuByLocalRank) {
  EXPECT_EQ(choose_cuda_device(3, 4, 4, false), 3);
  EXPECT_EQ(choose_cuda_device(1, 2, 8, false), 1);
  EXPECT_EQ(choose_cuda_device(0, 1, 8, false), 0);
  EXPECT_EQ(choose_cuda_device(5, 8, 1, true), 0);  // each rank pinned to its own GPU
  expect_error([] { choose_cuda_device(5, 8, 4, false); }, "[launch] 8 ranks run on this node but it has 4 GPU(s)");
  expect_error([] { choose_cuda_device(0, 2, 0, false); }, "needs a GPU but this process sees none");
  EXPECT_EQ(place_process(DeviceType::cpu).device, Device::cpu());
  if (!cuda::is_available()) {
    EXPECT_THROW(place_process(DeviceType::cuda), Error);
  }
}

// Note [GEMM tuning file]: rank r times problems r..r+2 (neighbours share two), with r + 100 in its
// algorithm words; the last of 4 ranks has another library. Every rank builds every rank's table,
// so the merge is checked against merge_gemm_tuning of the tables themselves.
GemmTuning rank_tuning(int r, int size) {
  GemmTuning t;
  t.library = size == 4 && r == 3 ? "cuBLASLt 1 | another GPU" : "cuBLASLt 130000 | NVIDIA H200 | sm_90 | 132 SMs";
  for (int p = r; p < r + 3; ++p) {
    GemmTuningEntry e;
    e.key.fill(-p);
    e.key[6] = 1000 + p;
    for (size_t j = 0; j < 8; ++j) e.algorithm[j] = (uint64_t{1} << 63) | static_cast<uint64_t>(r + 100) << j;
    t.entries.push_back(e);
  }
  if (r == 1) t.entries.clear();  // a rank with no products of its own (a pipeline stage, say)
  return t;
}

TEST_F(Comm, GemmTuningGathersEveryRanksChoicesInRankOrder) {
  const int n = world->size();
  std::vector<GemmTuning> tables;
  for (int r = 0; r < n; ++r) tables.push_back(rank_tuning(r, n));
  const GemmTuning merged = gather_gemm_tuning(*world, rank_tuning(world->rank(), n));
  EXPECT_EQ(merged, merge_gemm_tuning(tables));
  EXPECT_EQ(merged.library, tables[0].library);
  for (const GemmTuningEntry& e : merged.entries) EXPECT_NE(e.key[6], 1000 + 5) << "rank 3's other library";
  // Nobody timed anything: an empty table of rank 0's library.
  GemmTuning none;
  none.library = "L";
  EXPECT_EQ(gather_gemm_tuning(*world, none), none);
}

TEST_F(Comm, GemmTuningDoesNothingOnTheCpu) {
  TrainConfig cfg = parse_config_text("model { preset: tiny }\ntrain { gemm_algorithms: tuned }\n", "t.pbtxt");
  std::vector<std::string> said;
  GemmTuningSync sync(cfg, *world, nullptr, [&](const std::string& s) { said.push_back(s); });
  EXPECT_FALSE(sync.active());
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("has no effect on the CPU"), std::string::npos);
  sync.share();  // no collective, no file
  sync.pause_timing(true);
  EXPECT_FALSE(std::filesystem::exists(gemm_tuning_path(cfg)));
}

// A device whose products were "timed" as rank_tuning says; it records what it is told.
class FakeTuner final : public GemmTuner {
 public:
  explicit FakeTuner(GemmTuning timed, bool* autotune, std::vector<GemmTuning>* used)
      : timed_(std::move(timed)), autotune_(autotune), used_(used) {}
  void set_autotune(bool on) override { *autotune_ = on; }
  std::string library() const override { return timed_.library; }
  GemmTuning tuning() const override { return timed_; }
  bool use(const GemmTuning& t) override {
    if (t.library != timed_.library) return false;
    used_->push_back(t);
    timed_ = merge_gemm_tuning({t, timed_});  // the table's choices replace this rank's
    return true;
  }

 private:
  GemmTuning timed_;
  bool* autotune_;
  std::vector<GemmTuning>* used_;
};

// The trainer's sequence: start (no file), share after the first step (every rank gets the merged
// table, rank 0 writes it), share again at a checkpoint (nothing new: no write), a later run that
// reads the file, and a file from another library, which is set aside and replaced.
TEST_F(Comm, GemmTuningSharesWritesAndReadsTheFile) {
  const int n = world->size();
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("zt_gemm_tuning_sync_np{}", n);  // np1, np2, np4 may run at once
  if (rank() == 0) std::filesystem::remove_all(dir);
  world->barrier()->wait();
  TrainConfig cfg = parse_config_text("model { preset: tiny }\ntrain { gemm_algorithms: tuned }\n", "t.pbtxt");
  cfg.mutable_checkpoint()->set_dir(dir.string());
  const std::string path = gemm_tuning_path(cfg);
  std::vector<GemmTuning> tables;
  for (int r = 0; r < n; ++r) tables.push_back(rank_tuning(r, n));
  const GemmTuning merged = merge_gemm_tuning(tables);
  std::vector<std::string> said;
  auto say = [&](const std::string& s) { said.push_back(s); };

  bool autotune = false;
  std::vector<GemmTuning> used;
  {
    GemmTuningSync sync(cfg, *world, std::make_unique<FakeTuner>(rank_tuning(rank(), n), &autotune, &used), say);
    EXPECT_TRUE(sync.active());
    EXPECT_TRUE(autotune);
    EXPECT_NE(said.back().find("kept in " + path + " after the first step"), std::string::npos);
    sync.share();
    world->barrier()->wait();
    // Rank 3 of 4 has another library: it keeps its own choices.
    ASSERT_EQ(used.size(), size() == 4 && rank() == 3 ? 0u : 1u);
    if (!used.empty()) {
      EXPECT_EQ(used[0], merged);
    }
    EXPECT_EQ(read_gemm_tuning_file(path), merged);
    if (rank() == 0) {
      EXPECT_EQ(said.back(), fmt::format("GEMM algorithms: {} choices written to {}", merged.entries.size(), path));
    }
    world->barrier()->wait();
    if (rank() == 0) std::filesystem::remove(path);
    world->barrier()->wait();
    sync.share();  // the same choices: the file is not written again
    world->barrier()->wait();
    EXPECT_FALSE(std::filesystem::exists(path));
    sync.pause_timing(true);
    EXPECT_FALSE(autotune);
  }
  if (rank() == 0) write_gemm_tuning_file(path, merged);
  world->barrier()->wait();
  used.clear();
  said.clear();
  {
    GemmTuningSync later(cfg, *world, std::make_unique<FakeTuner>(rank_tuning(rank(), n), &autotune, &used), say);
    if (!(size() == 4 && rank() == 3)) {
      ASSERT_EQ(used.size(), 1u);
      EXPECT_EQ(used[0], merged);
      EXPECT_EQ(said.back(), fmt::format("GEMM algorithms: {} choices from {}", merged.entries.size(), path));
    } else {
      EXPECT_NE(said.back().find("was timed with " + merged.library + ", this is cuBLASLt 1 | another GPU"),
                std::string::npos);
    }
    later.share();
  }
  world->barrier()->wait();
  // Rank 0's library wrote the file; a file from elsewhere is replaced at the first share.
  if (rank() == 0) {
    GemmTuning foreign = merged;
    foreign.library = "cuBLASLt 1 | elsewhere";
    write_gemm_tuning_file(path, foreign);
  }
  world->barrier()->wait();
  {
    GemmTuningSync replaced(cfg, *world, std::make_unique<FakeTuner>(rank_tuning(rank(), n), &autotune, &used), say);
    EXPECT_NE(said.back().find("timing again and replacing it"), std::string::npos);
    replaced.share();
  }
  world->barrier()->wait();
  EXPECT_EQ(read_gemm_tuning_file(path), merged);
  world->barrier()->wait();
  if (rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace zt::comm

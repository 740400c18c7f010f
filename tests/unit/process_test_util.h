// Helpers shared by the one-process tests of the trainer, checkpoints and weight files.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <utility>

#include "core/error.h"
#include "error_text.h"
#include "core/ops.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/mpi_session.h"

namespace zt::testing {

// MPI for the whole binary, as a singleton world of one (no mpirun needed). Include this header
// in one test file per binary: it registers the environment.
class MpiEnvironment final : public ::testing::Environment {
 public:
  void SetUp() override {
    // Tiny models: threads would only contend for shared CI cores, and libgomp's spinning makes
    // that many times slower on a busy machine (as ctest runs dist tests, OMP_NUM_THREADS=1).
    omp_set_num_threads(1);
    session_ = std::make_unique<comm::MpiSession>();
    world_ = comm::MpiCommunicator::world();
  }
  void TearDown() override {
    world_.reset();
    session_.reset();
  }
  static comm::Communicator& world() { return *instance->world_; }
  static MpiEnvironment* instance;

 private:
  std::unique_ptr<comm::MpiSession> session_;
  std::unique_ptr<comm::Communicator> world_;
};
inline MpiEnvironment* MpiEnvironment::instance =
    static_cast<MpiEnvironment*>(::testing::AddGlobalTestEnvironment(new MpiEnvironment));

// The message of the zt::Error that fn throws (fails the test if it throws nothing).
template <class Fn>
std::string error_of(Fn&& fn) {
  const std::string message = test::error_of(std::forward<Fn>(fn));
  if (message != "(no error)") return message;
  ADD_FAILURE() << "no zt::Error thrown";
  return "";
}

// The bit patterns of a tensor's values as f32 (exact-equality checks).
inline std::vector<uint32_t> bits(const Tensor& t) {
  std::vector<uint32_t> out;
  for (float v : to(t, DType::f32).to_vector<float>()) out.push_back(std::bit_cast<uint32_t>(v));
  return out;
}

}  // namespace zt::testing

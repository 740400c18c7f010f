// main() of the MPI GoogleTest binaries (tests/dist/test_*.cpp), run under mpirun.
//
// Every rank runs every test (the tests are collective). Rank 0 prints GoogleTest's usual output;
// the other ranks print only their failures, each line prefixed with "[rank N]", so a failure that
// happens on rank 3 alone is still seen. The exit code is non-zero on every rank if any rank
// failed, and rank 0 names the failing ranks.
//
// Tests must not return early between collectives (an ASSERT_* that fires on one rank only would
// leave the others waiting): run the collectives, then check with EXPECT_*.
#include <gtest/gtest.h>

#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "parallel/comm/mpi_check.h"
#include "parallel/comm/mpi_session.h"

namespace {

class RankFailurePrinter final : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::ostringstream text;
    text << (result.file_name() ? result.file_name() : "unknown file") << ":" << result.line_number()
         << ": Failure\n"
         << result.message();
    print_prefixed(text.str());
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) print_prefixed(std::string("FAILED ") + info.test_suite_name() + "." + info.name());
  }

 private:
  void print_prefixed(const std::string& text) const {
    std::istringstream lines(text);
    std::string line;
    std::string out;
    while (std::getline(lines, line)) out += "[rank " + std::to_string(rank_) + "] " + line + "\n";
    std::fputs(out.c_str(), stderr);  // one write per message keeps ranks' lines apart
    std::fflush(stderr);
  }

  int rank_;
};

int run(int argc, char** argv) {
  zt::comm::MpiSession session(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = session.world_rank();
  const int size = session.world_size();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }

  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  std::vector<int> failed_by_rank(static_cast<size_t>(size), 0);
  ZT_MPI_CHECK(MPI_Gather(&failed, 1, MPI_INT, failed_by_rank.data(), 1, MPI_INT, 0, MPI_COMM_WORLD));
  int any_failed = 0;
  ZT_MPI_CHECK(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  if (rank == 0 && any_failed) {
    std::string ranks;
    for (int r = 0; r < size; ++r)
      if (failed_by_rank[static_cast<size_t>(r)]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    std::fprintf(stderr, "[dist] tests failed on rank(s) %s of %d\n", ranks.c_str(), size);
  }
  return any_failed;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[dist] %s\n", e.what());
    // Other ranks may be waiting in a collective: take the whole job down.
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

// Note [GEMM tuning file]: timed cuBLASLt choices leave the GPU as a table, survive the file
// format, and come back to give the same bits; tables cuBLASLt or the GPU cannot use are not used.
// Its own executable: it turns autotuning on for the whole process.
#include <gtest/gtest.h>

#include <cmath>

#include "core/cuda_support.h"
#include "core/gemm_tuning.h"
#include "cuda_test_util.h"

namespace zt {
namespace {

using namespace zt::test;

constexpr int kDevice = 0;

Tensor product(const Tensor& a, const Tensor& b) { return gpu().gemm(a, b, false, true, 1, Tensor()); }

TEST(CudaGemmTuning, TimedChoicesComeBackThroughTheFileBitForBit) {
  ZT_REQUIRE_GPU();
  cuda::set_gemm_autotune(kDevice, true);
  // Two problems of GPT-2 124M's shapes (rows x 768 by 2304 x 768, and its transpose products' kind).
  Tensor a = to_gpu(randn_cpu({1, 2048, 768}, DType::bf16, 1)), b = to_gpu(randn_cpu({1, 2304, 768}, DType::bf16, 2));
  Tensor c = to_gpu(randn_cpu({1, 4096, 768}, DType::bf16, 3));
  const std::vector<unsigned char> first_ab = as_bytes(product(a, b)), first_cb = as_bytes(product(c, b));
  const GemmTuning table = cuda::gemm_tuning(kDevice);
  ASSERT_EQ(table.entries.size(), 2u);
  EXPECT_EQ(table.library, cuda::gemm_library(kDevice));
  const GemmTuning parsed = parse_gemm_tuning(format_gemm_tuning(table), "round trip");
  ASSERT_EQ(parsed, table);

  ASSERT_TRUE(cuda::use_gemm_tuning(kDevice, parsed));
  EXPECT_EQ(cuda::gemm_tuning(kDevice), table) << "choices waiting for their first call are still exported";
  EXPECT_EQ(as_bytes(product(a, b)), first_ab);
  EXPECT_EQ(as_bytes(product(c, b)), first_cb);
  EXPECT_EQ(cuda::gemm_tuning(kDevice), table);
}

TEST(CudaGemmTuning, ChoicesThatDoNotFitTheirProblemAreChosenAgain) {
  ZT_REQUIRE_GPU();
  cuda::set_gemm_autotune(kDevice, true);
  const std::vector<std::pair<int64_t, DType>> problems = {{333, DType::f32}, {200, DType::bf16}, {555, DType::bf16}};
  std::vector<Tensor> as, bs;
  for (const auto& [rows, dtype] : problems) {
    as.push_back(randn_cpu({1, rows, 96}, dtype, static_cast<uint64_t>(rows)));
    bs.push_back(randn_cpu({1, 80, 96}, dtype, static_cast<uint64_t>(rows) + 1));
    (void)product(to_gpu(as.back()), to_gpu(bs.back()));
  }
  std::vector<GemmTuningEntry> mine(problems.size());
  for (const GemmTuningEntry& e : cuda::gemm_tuning(kDevice).entries)
    for (size_t i = 0; i < problems.size(); ++i)
      if (e.key[6] == problems[i].first) mine[i] = e;  // key[6] is m
  for (size_t i = 0; i < problems.size(); ++i) ASSERT_EQ(mine[i].key[6], problems[i].first);
  // The f32 product's algorithm for a bf16 one and back, and words no algorithm has for the third.
  std::swap(mine[0].algorithm, mine[1].algorithm);
  mine[2].algorithm.fill(~uint64_t{0});
  ASSERT_TRUE(cuda::use_gemm_tuning(kDevice, GemmTuning{cuda::gemm_library(kDevice), mine}));
  // Whatever cuBLASLt accepts or refuses of these, every product is still right.
  for (size_t i = 0; i < problems.size(); ++i) {
    const Tensor want = cpu().gemm(as[i], bs[i], false, true, 1, Tensor());
    Tol tol = tol_for(as[i].dtype());
    if (as[i].dtype() == DType::f32) tol.rel = 2e-5;  // another blocking of the f32 sum
    expect_close(product(to_gpu(as[i]), to_gpu(bs[i])), want, tol, "problem " + std::to_string(i),
                 std::sqrt(96.0) * 4.0);
  }
}

TEST(CudaGemmTuning, AnotherLibrarysTableIsNotUsed) {
  ZT_REQUIRE_GPU();
  GemmTuning other = cuda::gemm_tuning(kDevice);
  other.library = "cuBLASLt 110000 | some other GPU | sm_80 | 108 SMs";
  EXPECT_FALSE(cuda::use_gemm_tuning(kDevice, other));
  EXPECT_NE(cuda::gemm_library(kDevice).find("SMs"), std::string::npos);
}

}  // namespace
}  // namespace zt

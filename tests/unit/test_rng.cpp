// The counter-based RNG: Philox known answers, element i of a tensor is draw (seed, offset + i) so
// pieces drawn with their offsets concatenate to the whole, determinism, and moment sanity checks.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "core/ops.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

TEST(Rng, PhiloxKnownAnswer) {
  // Random123's published vector for Philox4x32-10 with zero counter and key.
  rng::Philox4x32 r = rng::philox(0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  EXPECT_EQ(rng::random_u32(0, 2), 0xbc57ac4cu);
}

TEST(Rng, PiecesWithOffsetsConcatenateToTheWhole) {
  const uint64_t seed = 1234, offset = 17;
  for (RandomKind kind : {RandomKind::normal, RandomKind::uniform}) {
    auto draw = [&](int64_t n, uint64_t off) {
      return kind == RandomKind::normal ? randn({n}, seed, off) : rand_uniform({n}, seed, off);
    };
    Tensor whole = draw(1001, offset);
    std::vector<float> wv = whole.to_vector<float>();
    for (size_t i = 0; i < wv.size(); ++i) {
      float want = kind == RandomKind::normal ? rng::normal(seed, offset + i) : rng::uniform(seed, offset + i);
      ASSERT_EQ(wv[i], want) << i;
    }
    // Splits that do not line up with Philox's blocks of four.
    for (int64_t cut : {1, 3, 4, 333, 1000}) {
      Tensor joined = cat({draw(cut, offset), draw(1001 - cut, offset + static_cast<uint64_t>(cut))}, 0);
      EXPECT_EQ(max_abs_diff(joined, whole), 0.0) << cut;
    }
    // A 2-d tensor is the 1-d draw in row-major order.
    Tensor grid = kind == RandomKind::normal ? randn({7, 11}, seed, offset) : rand_uniform({7, 11}, seed, offset);
    EXPECT_EQ(max_abs_diff(reshape(grid, {77}), narrow(whole, 0, 0, 77)), 0.0);
  }
}

TEST(Rng, DeterministicPerSeedAndOffset) {
  Tensor a = randn({500}, 9, 3), b = randn({500}, 9, 3);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  EXPECT_GT(max_abs_diff(a, randn({500}, 10, 3)), 0.5);
  EXPECT_GT(max_abs_diff(a, randn({500}, 9, 4)), 0.5);
  // Other dtypes hold the rounded f32 draw.
  std::vector<double> f = host(randn({300}, 9, 3));
  expect_equal_all(randn({300}, 9, 3, DType::f64), f, "f64 draw");
  std::vector<double> rounded;
  for (double v : f) rounded.push_back(bf16_to_float(float_to_bf16(static_cast<float>(v))));
  expect_equal_all(randn({300}, 9, 3, DType::bf16), rounded, "bf16 draw");
  EXPECT_ZT_ERROR(randn({2}, 1, 0, DType::i32), "[randn]", "floating", "i32");
}

TEST(Rng, MomentsAndRanges) {
  const int64_t n = 200000;
  std::vector<double> z = host(randn({n}, 42, 0, DType::f64));
  double mean = 0, var = 0;
  for (double v : z) mean += v;
  mean /= n;
  for (double v : z) var += (v - mean) * (v - mean);
  var /= n;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
  int64_t beyond3 = 0;
  for (double v : z) beyond3 += std::abs(v) > 3.0;
  EXPECT_NEAR(static_cast<double>(beyond3) / n, 0.0027, 0.0008);

  std::vector<double> u = host(rand_uniform({n}, 43, 0, DType::f64));
  double umean = 0, uvar = 0, lo = 1, hi = 0;
  for (double v : u) {
    umean += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  umean /= n;
  for (double v : u) uvar += (v - umean) * (v - umean);
  uvar /= n;
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(umean, 0.5, 0.005);
  EXPECT_NEAR(uvar, 1.0 / 12.0, 0.002);
  // The extremes of the 24-bit grid: 0 is reachable, 1 is not.
  EXPECT_EQ(static_cast<double>(0u >> 8) / 16777216.0, 0.0);
  EXPECT_LT(static_cast<double>(0xffffffffu >> 8) / 16777216.0, 1.0);

  std::vector<int64_t> ints = randint({10000}, 7, 5).to_vector<int64_t>();
  std::vector<int64_t> counts(7, 0);
  for (int64_t v : ints) {
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    ++counts[static_cast<size_t>(v)];
  }
  for (int64_t c : counts) EXPECT_NEAR(c, 10000 / 7, 150);
}

}  // namespace
}  // namespace zt::testing

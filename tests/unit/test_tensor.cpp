// Tensor handles (shape, strides, views, errors) and dtype conversions: bf16 and f16 must round to
// nearest even exactly as an independent computation says, including ties, overflow, subnormals,
// signed zeros, infinities and NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/ops.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

TEST(Tensor, ShapeStridesAndViews) {
  Tensor x = empty({2, 3, 4});
  EXPECT_EQ(x.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(x.numel(), 24);
  EXPECT_EQ(x.nbytes(), 96u);
  EXPECT_EQ(x.size(-1), 4);
  EXPECT_EQ(x.dim(), 3);
  EXPECT_TRUE(x.is_contiguous());
  EXPECT_EQ(x.describe(), "[2, 3, 4] f32 cpu");
  EXPECT_EQ(empty({}).describe(), "[] f32 cpu");
  EXPECT_EQ(empty({}).numel(), 1);
  EXPECT_EQ(contiguous_strides({0, 3}), (Shape{3, 1}));
  EXPECT_ZT_ERROR(x.size(3), "[tensor.size]", "dim 3 out of range", "[2, 3, 4]");
  EXPECT_ZT_ERROR(empty({2, -1}), "[empty]", "negative size");

  Tensor t = transpose(x, 0, 2);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{1, 4, 12}));
  Tensor rows = narrow(x, 0, 1, 1);  // contiguous, at an offset
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.offset(), 12);
  EXPECT_EQ(rows.raw_data(), static_cast<char*>(x.raw_data()) + 48);
  EXPECT_FALSE(narrow(x, 2, 0, 2).is_contiguous());
  EXPECT_TRUE(narrow(x, 2, 0, 4).is_contiguous());

  // Writes through a view are seen by its base.
  Tensor base = zeros({3, 3});
  Tensor diag_row = narrow(base, 0, 1, 1);
  fill_(diag_row, 4.0);
  expect_equal_all(base, {0, 0, 0, 4, 4, 4, 0, 0, 0}, "view write");
  Tensor v = make_view(base, {3}, {4}, 0);  // the diagonal
  fill_(v, 1.0);
  expect_equal_all(base, {1, 0, 0, 4, 1, 4, 0, 0, 1}, "diagonal write");
}

TEST(Tensor, HostAccessAndAutogradFlags) {
  Tensor x = from_vector<float>({1.5f, -2.0f}, {2});
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_ZT_ERROR(x.to_vector<double>(), "[tensor.to_vector]", "tensor is f32, requested f64");
  EXPECT_ZT_ERROR(x.item(), "[tensor.item]", "exactly one element", "[2] f32 cpu");
  EXPECT_ZT_ERROR(x.data<int32_t>(), "[tensor.data]", "tensor is f32, accessed as i32");
  EXPECT_EQ(narrow(x, 0, 1, 1).item(), -2.0);
  EXPECT_ZT_ERROR(from_vector<float>({1.0f}, {2}), "[from_vector]", "1 values do not fill shape [2]");
  EXPECT_ZT_ERROR(arange(3).set_requires_grad(true), "[tensor.set_requires_grad]", "only floating", "[3] i64 cpu");
  Tensor leaf = randn({2}, 1).set_requires_grad(true);
  Tensor y = mul_scalar(leaf, 2.0);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_ZT_ERROR(y.set_requires_grad(false), "[tensor.set_requires_grad]", "only leaves", "MulScalarBackward");
  Tensor d = y.detach();
  EXPECT_TRUE(d.is_leaf());
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.storage(), y.storage());
  EXPECT_ZT_ERROR(leaf.set_grad(zeros({3})), "[tensor.set_grad]", "[3] f32 cpu", "[2] f32 cpu");
  EXPECT_ZT_ERROR(Tensor().shape(), "[tensor]", "undefined");
}

// ---- bf16 and f16 conversions against an independent computation ------------------------------

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The bf16 nearest to f, ties to the even pattern, found by comparing distances in f64 (exact for
// these values) to the two bf16 neighbours of |f|; the pattern after the largest finite one counts
// as 2^128, so values at or past the halfway point overflow to infinity.
uint16_t reference_bf16(float f) {
  uint32_t u = float_to_bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return 0;  // NaN handled by the caller
  if (mag == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7f80u);
  uint16_t lo = static_cast<uint16_t>(mag >> 16), hi = static_cast<uint16_t>(lo + 1);
  auto value = [](uint16_t p) {
    return p == 0x7f80u ? std::ldexp(1.0, 128) : static_cast<double>(bits_to_float(static_cast<uint32_t>(p) << 16));
  };
  double a = std::abs(static_cast<double>(f));
  double dlo = a - value(lo), dhi = value(hi) - a;
  uint16_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
  return static_cast<uint16_t>(sign | pick);
}

// IEEE binary16 decoding from its definition.
double f16_value(uint16_t bits) {
  int sign = bits >> 15, e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  double mag = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? std::nan("") : std::numeric_limits<double>::infinity())
                                                     : std::ldexp(1024 + m, e - 25);
  return sign ? -mag : mag;
}

// The f16 nearest to f by binary search over the positive finite halves (ordered by pattern),
// with 0x7c00 standing for 2^16 in the distance (the next step after 65504).
uint16_t reference_f16(float f) {
  double a = std::abs(static_cast<double>(f));
  uint16_t sign = std::signbit(f) ? 0x8000u : 0;
  if (std::isinf(a)) return static_cast<uint16_t>(sign | 0x7c00u);
  auto value = [](uint32_t p) { return p == 0x7c00u ? 65536.0 : f16_value(static_cast<uint16_t>(p)); };
  uint32_t lo = 0, hi = 0x7c00u;  // value(lo) <= a < value(hi) unless a >= 65536
  if (a >= 65536.0) return static_cast<uint16_t>(sign | 0x7c00u);
  while (hi - lo > 1) {
    uint32_t mid = (lo + hi) / 2;
    (value(mid) <= a ? lo : hi) = mid;
  }
  double dlo = a - value(lo), dhi = value(hi) - a;
  uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
  return static_cast<uint16_t>(sign | pick);
}

// Floats that stress rounding: exact ties with odd and even targets, one ulp either side of a
// tie, the overflow boundary, subnormals of both formats, signed zeros.
std::vector<float> edge_floats() {
  std::vector<float> out;
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x00800000u,
                                    0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu,
                                    0x3f818001u, 0x3f817fffu, 0x7f7fffffu, 0x7f7f7fffu, 0x7f7f8000u,
                                    0x7f7f0000u, 0x7f7effffu, 0x00008000u, 0x00018000u, 0x0000ffffu};
  for (uint32_t p : patterns) {
    out.push_back(bits_to_float(p));
    out.push_back(bits_to_float(p | 0x80000000u));
  }
  // f16: halfway points around 1, 2048 (spacing 2), the max 65504, the overflow point 65520,
  // the smallest normal 2^-14 and subnormal 2^-24 and their halves.
  for (double v : {1.0 + 1.0 / 2048, 1.0 + 3.0 / 2048, 2049.0, 2051.0, 65504.0, 65519.99, 65520.0, 65535.0,
                   std::ldexp(1.0, -14), std::ldexp(1.0, -25), std::ldexp(3.0, -25), std::ldexp(1.0, -26),
                   std::ldexp(1.0, -24) * 1.5, std::ldexp(1023.5, -24), 1e-8, 3e-5, 6e-8})
    for (double s : {1.0, -1.0}) out.push_back(static_cast<float>(s * v));
  for (float f : {1.0f + std::ldexp(1.0f, -11), 1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -23)})
    out.push_back(f);
  return out;
}

std::vector<float> random_floats(size_t n, uint64_t seed) {
  // Random bit patterns over all exponents (NaNs skipped), plus random normals at several scales.
  std::vector<float> out;
  Tensor u = rand_uniform({static_cast<int64_t>(n)}, seed, 0, DType::f64);
  for (double v : u.to_vector<double>()) {
    float f = bits_to_float(static_cast<uint32_t>(v * 4294967296.0));
    if (!std::isnan(f)) out.push_back(f);
  }
  for (double scale : {1e-6, 1.0, 1e4})
    for (float f : mul_scalar(randn({static_cast<int64_t>(n / 8)}, seed + 1), scale).to_vector<float>())
      out.push_back(f);
  return out;
}

TEST(DTypes, Bf16RoundsToNearestEven) {
  std::vector<float> values = edge_floats();
  std::vector<float> more = random_floats(400000, 3);
  values.insert(values.end(), more.begin(), more.end());
  int failures = 0;
  for (float f : values) {
    uint16_t got = float_to_bf16(f).bits, want = reference_bf16(f);
    if (got != want && failures++ < 10) ADD_FAILURE() << std::hexfloat << f << ": got " << got << ", want " << want;
  }
  // Through the tensor API (the cast kernel), and back to f32 exactly.
  Tensor t = from_vector<float>(values, {static_cast<int64_t>(values.size())});
  std::vector<bf16> cast = to(t, DType::bf16).to_vector<bf16>();
  std::vector<float> back = to(to(t, DType::bf16), DType::f32).to_vector<float>();
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t want = reference_bf16(values[i]);
    ASSERT_EQ(cast[i].bits, want) << std::hexfloat << values[i];
    ASSERT_EQ(float_to_bits(back[i]), static_cast<uint32_t>(want) << 16);
  }
  // NaN stays NaN (quiet), infinities stay infinite.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(bits_to_float(0x7f800001u)))));  // signalling, low bits only
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()).bits, 0xff80u);
}

TEST(DTypes, F16RoundsToNearestEvenAndDecodesEveryPattern) {
  for (uint32_t p = 0; p < 65536; ++p) {
    double want = f16_value(static_cast<uint16_t>(p));
    float got = f16_to_float(f16{static_cast<uint16_t>(p)});
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << p;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << p;
      ASSERT_EQ(std::signbit(got), (p & 0x8000u) != 0) << p;
      ASSERT_EQ(float_to_f16(got).bits, p) << "round trip of " << p;
    }
  }
  std::vector<float> values = edge_floats();
  std::vector<float> more = random_floats(400000, 5);
  values.insert(values.end(), more.begin(), more.end());
  int failures = 0;
  for (float f : values) {
    uint16_t got = float_to_f16(f).bits, want = reference_f16(f);
    if (got != want && failures++ < 10) ADD_FAILURE() << std::hexfloat << f << ": got " << got << ", want " << want;
  }
  Tensor t = from_vector<float>(values, {static_cast<int64_t>(values.size())});
  std::vector<f16> cast = to(t, DType::f16).to_vector<f16>();
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(cast[i].bits, reference_f16(values[i])) << values[i];
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(float_to_f16(65520.0f).bits, 0x7c00u);
  EXPECT_EQ(float_to_f16(65519.0f).bits, 0x7bffu);
}

TEST(DTypes, IntegerAndBoolCasts) {
  Tensor x = from_vector<double>({-2.75, -0.5, 0.0, 0.25, 3.99, 1e3}, {6});
  EXPECT_EQ(to(x, DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{-2, 0, 0, 0, 3, 1000}));  // truncation
  EXPECT_EQ(to(x, DType::boolean).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(to(to(x, DType::i64), DType::f32).to_vector<float>(), (std::vector<float>{-2, 0, 0, 0, 3, 1000}));
  EXPECT_EQ(dtype_from_name("bf16"), DType::bf16);
  EXPECT_ZT_ERROR(dtype_from_name("f8"), "[dtype]", "unknown dtype 'f8'", "bf16");
  EXPECT_EQ(dtype_size(DType::f16), 2u);
}

}  // namespace
}  // namespace zt::testing

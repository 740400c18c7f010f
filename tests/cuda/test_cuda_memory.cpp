// Copies, casts, fills and random fills on the GPU against the CPU backend: these are exact
// operations, so the GPU must give the very same bits.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"

namespace zt {
namespace {

using namespace zt::test;

const std::vector<DType> kAllTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                      DType::i32, DType::i64, DType::u8,   DType::boolean};

TEST(CudaMemory, RandomFillMatchesCpuBitForBit) {
  ZT_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (RandomKind kind : {RandomKind::normal, RandomKind::uniform}) {
      for (int64_t n : {1, 3, 7, 1000, 65537, 1 << 20}) {
        for (uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{3}, uint64_t{12345}, uint64_t{1} << 33}) {
          const uint64_t seed = 0x1234abcdULL + static_cast<uint64_t>(n);
          Tensor c = empty({n}, dtype, Device::cpu());
          cpu().random_fill(c, kind, seed, offset);
          Tensor g = empty({n}, dtype, gpu_device());
          gpu().random_fill(g, kind, seed, offset);
          expect_same_bits(g, c,
                           std::string("random_fill ") + dtype_name(dtype) + (kind == RandomKind::normal ? " normal" : " uniform") +
                               " n=" + std::to_string(n) + " offset=" + std::to_string(offset));
        }
      }
    }
  }
}

TEST(CudaMemory, RandomFillOfAWholeEqualsItsParts) {
  ZT_REQUIRE_GPU();
  // A rank holding elements [a, b) draws with offset a what the whole tensor holds there.
  Tensor whole = empty({1001}, DType::f32, gpu_device());
  gpu().random_fill(whole, RandomKind::uniform, 99, 0);
  Tensor part = empty({500}, DType::f32, gpu_device());
  gpu().random_fill(part, RandomKind::uniform, 99, 333);
  const std::vector<double> w = as_doubles(whole), p = as_doubles(part);
  for (size_t i = 0; i < p.size(); ++i) ASSERT_EQ(p[i], w[i + 333]) << i;
  expect_error([] {
    Tensor t = empty({4}, DType::i32, gpu_device());
    gpu().random_fill(t, RandomKind::normal, 1, 0);
  }, {"[random_fill]", "i32"});
}

TEST(CudaMemory, FillMatchesCpuBitForBit) {
  ZT_REQUIRE_GPU();
  for (DType dtype : kAllTypes) {
    // Negative or out-of-range values are undefined for the unsigned types in C++: not asked of them.
    const bool unsigned_type = dtype == DType::u8 || dtype == DType::boolean;
    const std::vector<double> values = unsigned_type ? std::vector<double>{0.0, 1.0, dtype == DType::u8 ? 200.0 : 1.0}
                                                     : std::vector<double>{0.0, 1.0, -3.25, 0.1, 70000.5, -1e-8};
    for (double value : values) {
      Tensor c = empty({1031}, dtype, Device::cpu());
      cpu().fill(c, value);
      Tensor g = empty({1031}, dtype, gpu_device());
      gpu().fill(g, value);
      expect_same_bits(g, c, std::string("fill ") + dtype_name(dtype) + " " + std::to_string(value));
    }
  }
}

TEST(CudaMemory, CastsMatchCpuBitForBit) {
  ZT_REQUIRE_GPU();
  for (DType from : kAllTypes) {
    // Values that exercise rounding (normals times 300) and exact integers for the integer types.
    Tensor src = is_floating(from) ? randn_cpu({3, 333}, from, 7, 300.0) : randint_cpu({3, 333}, from, 7, -100, 100);
    if (from == DType::u8 || from == DType::boolean) src = randint_cpu({3, 333}, from, 7, 0, from == DType::u8 ? 256 : 2);
    Tensor src_gpu = to_gpu(src);
    for (DType to : kAllTypes) {
      if ((to == DType::u8) && is_floating(from)) continue;  // negative floats to u8: undefined in C++
      Tensor c = empty(src.shape(), to, Device::cpu());
      cpu().copy_strided(src, c);
      Tensor g = empty(src.shape(), to, gpu_device());
      gpu().copy_strided(src_gpu, g);
      expect_same_bits(g, c, std::string("cast ") + dtype_name(from) + " -> " + dtype_name(to));
    }
  }
}

TEST(CudaMemory, F64ToHalfTypesRoundOnce) {
  ZT_REQUIRE_GPU();
  // Just above a bf16 or f16 tie by less than half an f32 unit: rounding to f32 first would land on
  // the tie and round to even (down); a correctly rounded cast goes up, as the CPU's does.
  const std::vector<double> values = {1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30),
                                      -(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)),
                                      1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40),
                                      -360.62500476837158, 1e300, -1e-300, 0.0};
  Tensor src = make_cpu({static_cast<int64_t>(values.size())}, DType::f64,
                        [&](int64_t i) { return values[static_cast<size_t>(i)]; });
  for (DType to : {DType::bf16, DType::f16, DType::f32}) {
    Tensor c = empty(src.shape(), to, Device::cpu());
    cpu().copy_strided(src, c);
    Tensor g = empty(src.shape(), to, gpu_device());
    gpu().copy_strided(to_gpu(src), g);
    expect_same_bits(g, c, std::string("f64 -> ") + dtype_name(to) + " near ties");
  }
}

TEST(CudaMemory, StridedCopiesMatchCpu) {
  ZT_REQUIRE_GPU();
  Tensor base = randn_cpu({4, 37, 53}, DType::f32, 11);
  Tensor base_gpu = to_gpu(base);
  struct View {
    Shape shape, strides;
    int64_t offset;
    const char* name;
  };
  const std::vector<View> views = {
      {{37, 4, 53}, {53, 37 * 53, 1}, 0, "permuted"},
      {{4, 53, 37}, {37 * 53, 1, 53}, 0, "transposed last two"},
      {{2, 10, 7}, {2 * 37 * 53, 53 * 3, 5}, 53 + 2, "sliced with steps and an offset"},
      {{4, 5, 37, 53}, {37 * 53, 0, 53, 1}, 0, "expanded (stride 0)"},
      {{4 * 37 * 53}, {1}, 0, "flat"},
  };
  for (const View& v : views) {
    for (DType to : {DType::f32, DType::bf16, DType::f64}) {
      Tensor src_c = make_view(base, v.shape, v.strides, v.offset);
      Tensor src_g = make_view(base_gpu, v.shape, v.strides, v.offset);
      Tensor c = empty(v.shape, to, Device::cpu());
      cpu().copy_strided(src_c, c);
      Tensor g = empty(v.shape, to, gpu_device());
      gpu().copy_strided(src_g, g);
      expect_same_bits(g, c, std::string(v.name) + " -> " + dtype_name(to));
      // And into a strided destination: the transpose of a contiguous buffer.
      if (v.shape.size() == 3) {
        Shape t_shape = {v.shape[0], v.shape[1], v.shape[2]};
        Shape t_strides = {v.shape[1] * v.shape[2], 1, v.shape[1]};
        Tensor dc = make_view(empty(t_shape, to, Device::cpu()), t_shape, t_strides, 0);
        Tensor dg = make_view(empty(t_shape, to, gpu_device()), t_shape, t_strides, 0);
        cpu().copy_strided(src_c, dc);
        gpu().copy_strided(src_g, dg);
        expect_same_bits(dg, dc, std::string(v.name) + " into a transposed destination");
      }
    }
  }
  expect_error([&] {
    Tensor dst = empty({3}, DType::f32, gpu_device());
    gpu().copy_strided(base_gpu, dst);
  }, {"[copy]", "shapes differ"});
}

TEST(CudaMemory, CopyBytesRoundTrips) {
  ZT_REQUIRE_GPU();
  Tensor host = randn_cpu({12345}, DType::f32, 5);
  Tensor a = to_gpu(host);
  Tensor b = empty({12345}, DType::f32, gpu_device());
  gpu().copy_bytes(b.raw_data(), b.device(), a.raw_data(), a.device(), a.nbytes());  // device to device
  expect_same_bits(to_cpu(b), host, "host -> device -> device -> host");
  // Through the CPU backend, which forwards anything that touches a GPU.
  Tensor back = empty({12345}, DType::f32, Device::cpu());
  cpu().copy_bytes(back.raw_data(), Device::cpu(), b.raw_data(), b.device(), b.nbytes());
  expect_same_bits(back, host, "cpu backend's copy_bytes from the device");
}

}  // namespace
}  // namespace zt

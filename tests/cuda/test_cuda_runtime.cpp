// The CUDA runtime layer: device queries, check macros, RAII types, the current stream, and
// kernel errors reported at the next synchronisation.
#include <gtest/gtest.h>

#include <cstring>

#include "cuda_test_util.h"
#include "kernels/cuda/runtime.h"

namespace zt {
namespace {

using namespace zt::test;

TEST(CudaRuntime, DeviceCountNeverThrows) {
  int n = -1;
  EXPECT_NO_THROW(n = cuda::device_count());
  EXPECT_GE(n, 0);
  EXPECT_EQ(cuda::is_available(), n > 0);
  EXPECT_TRUE(cuda::built_with_cuda());
}

TEST(CudaRuntime, VersionInfoNamesTheLibraries) {
  const std::string info = cuda::version_info();
  for (const char* part : {"CUDA runtime", "driver", "cuBLASLt", "cuDNN"})
    EXPECT_NE(info.find(part), std::string::npos) << part << " missing in: " << info;
  if (cuda::device_count() > 0) {
    EXPECT_NE(info.find("cuda:0"), std::string::npos) << info;
  }
}

TEST(CudaRuntime, DeviceNameAndBadDevice) {
  ZT_REQUIRE_GPU();
  EXPECT_FALSE(cuda::device_name(0).empty());
  expect_error([] { cuda::DeviceContext::get(cuda::device_count()); }, {"[cuda]", "does not exist"});
  expect_error([] { cuda::allocator(-1); }, {"cuda:-1", "does not exist"});
}

TEST(CudaRuntime, CheckMacroNamesCallFileAndLine) {
  ZT_REQUIRE_GPU();
  try {
    ZT_CUDA_CHECK(cudaSetDevice(9999));
    FAIL() << "cudaSetDevice(9999) should fail";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[cuda] cudaSetDevice(9999) failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cudaErrorInvalidDevice"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_cuda_runtime.cpp:"), std::string::npos) << msg;
  }
  // The failure does not stick: the next call works.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  void* p = nullptr;
  EXPECT_THROW(ZT_CUDA_CHECK(cudaMalloc(&p, size_t{1} << 62)), OutOfMemoryError);
  try {
    ZT_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, DeviceGuardRestores) {
  ZT_REQUIRE_GPU();
  ZT_CUDA_CHECK(cudaSetDevice(0));
  {
    cuda::DeviceGuard guard(cuda::device_count() - 1);
    int d = -1;
    ZT_CUDA_CHECK(cudaGetDevice(&d));
    EXPECT_EQ(d, cuda::device_count() - 1);
  }
  int d = -1;
  ZT_CUDA_CHECK(cudaGetDevice(&d));
  EXPECT_EQ(d, 0);
}

TEST(CudaRuntime, StreamEventAndPinnedCopies) {
  ZT_REQUIRE_GPU();
  cuda::Stream stream(0, cuda::Stream::Priority::high);
  cuda::Event start(0, true), stop(0, true);
  const size_t n = 1 << 20;
  cuda::PinnedHostBuffer host(n), back(n);
  ASSERT_NE(host.data(), nullptr);
  EXPECT_EQ(host.size(), n);
  auto* h = static_cast<unsigned char*>(host.data());
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<unsigned char>(i * 7 + 3);
  Tensor dev = empty({static_cast<int64_t>(n)}, DType::u8, gpu_device());
  start.record(stream.get());
  ZT_CUDA_CHECK(cudaMemcpyAsync(dev.raw_data(), host.data(), n, cudaMemcpyHostToDevice, stream.get()));
  ZT_CUDA_CHECK(cudaMemcpyAsync(back.data(), dev.raw_data(), n, cudaMemcpyDeviceToHost, stream.get()));
  stop.record(stream.get());
  stop.synchronize();
  EXPECT_TRUE(stop.query());
  EXPECT_GE(stop.elapsed_ms_since(start), 0.0f);
  EXPECT_EQ(std::memcmp(host.data(), back.data(), n), 0);
  // Moves keep ownership single.
  cuda::Stream moved = std::move(stream);
  EXPECT_NE(moved.get(), nullptr);
  moved.synchronize();
}

TEST(CudaRuntime, StreamGuardSetsTheCurrentStream) {
  ZT_REQUIRE_GPU();
  cuda::Stream side(0);
  const cudaStream_t before = cuda::current_stream(0);
  {
    cuda::StreamGuard guard(0, side.get());
    EXPECT_EQ(cuda::current_stream(0), side.get());
    // Kernels and copies follow the current stream: a fill then a read on the side stream.
    Tensor t = empty({1000}, DType::f32, gpu_device());
    gpu().fill(t, 2.5);
    for (double v : as_doubles(t)) ASSERT_EQ(v, 2.5);
  }
  EXPECT_EQ(cuda::current_stream(0), before);
}

TEST(CudaRuntime, KernelErrorsAreReportedAtTheNextSync) {
  ZT_REQUIRE_GPU();
  Tensor weight = to_gpu(randn_cpu({5, 8}, DType::f32, 1));
  Tensor ids = to_gpu(make_cpu({4}, DType::i64, [](int64_t i) { return i == 2 ? 7.0 : static_cast<double>(i); }));
  Tensor out = gpu().embedding(weight, ids);  // queues the kernel; nothing thrown yet
  expect_error([&] { (void)as_doubles(out); }, {"[embedding]", "id 7 is out of range [0, 5)", "cuda:0"});
  // The record is cleared: the same bad lookup is reported again, and good work goes on.
  Tensor again = gpu().embedding(weight, ids);
  EXPECT_THROW(cuda::synchronize(0), Error);
  Tensor good = gpu().embedding(weight, to_gpu(make_cpu({3}, DType::i32, [](int64_t i) { return 4.0 - i; })));
  const std::vector<double> g = as_doubles(good), w = as_doubles(weight);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(g[static_cast<size_t>(r * 8 + c)], w[static_cast<size_t>((4 - r) * 8 + c)]);
  // The bad row itself was zero.
  const std::vector<double> bad_rows = as_doubles(again);
  for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(bad_rows[static_cast<size_t>(2 * 8 + c)], 0.0);
}

}  // namespace
}  // namespace zt

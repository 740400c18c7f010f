// GradientLanding (Note [Gradient landing]): gradients queued for the host land in their host
// gradients as the naive sum says (the first written over stale values, the rest added, 16-bit
// ones widened), whichever of land() or absorb_all() completes them, with more gradients in
// flight than slots, and with the byte count of what crossed.
#include <gtest/gtest.h>

#include <vector>

#include "core/cuda_support.h"
#include "core/ops.h"
#include "parallel/zero/offload.h"

namespace zt::zero {
namespace {

std::vector<double> values(const Tensor& t) { return to(t, DType::f64).to_vector<double>(); }

TEST(GradientLanding, SumsWhatLandsWhateverCompletesIt) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const int64_t n = 1000;
    // Three host gradients, one of them stale (its old values must not survive a `first` landing).
    std::vector<Tensor> host{zeros({n}, DType::f32, Device::cpu()), randn({n}, 9, 0, DType::f32),
                             zeros({n}, DType::f32, Device::cpu())};
    std::vector<std::vector<double>> want(3, std::vector<double>(static_cast<size_t>(n), 0.0));
    GradientLanding landing;
    OffloadTraffic traffic;
    uint64_t seed = 1;
    // Two micro-batches over the three gradients: 6 landings through 2 slots.
    for (int micro = 0; micro < 2; ++micro) {
      for (int u = 0; u < 3; ++u) {
        Tensor reduced = randn({n}, seed++, 0, dtype);
        const std::vector<double> r = values(reduced);
        const bool first = micro == 0 && u == 1;  // host[1] is stale
        for (int64_t i = 0; i < n; ++i) want[u][i] = (first ? 0.0 : want[u][i]) + r[static_cast<size_t>(i)];
        landing.land(reduced, host[static_cast<size_t>(u)], first, traffic);
      }
    }
    EXPECT_FALSE(landing.idle());
    landing.absorb_all(traffic);
    EXPECT_TRUE(landing.idle());
    for (int u = 0; u < 3; ++u) {
      const std::vector<double> got = values(host[static_cast<size_t>(u)]);
      for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(got[i], want[u][i]) << "gradient " << u << " element " << i;
    }
    EXPECT_EQ(traffic.device_to_host_bytes, 6 * n * static_cast<int64_t>(dtype_size(dtype)));
  }
}

TEST(GradientLanding, RefusesAHostGradientOfAnotherSize) {
  GradientLanding landing;
  OffloadTraffic traffic;
  Tensor host = zeros({4}, DType::f32, Device::cpu());
  EXPECT_THROW(landing.land(zeros({5}, DType::bf16, Device::cpu()), host, true, traffic), Error);
}

// ParameterReturn (Note [Parameter return]): parameters sent through the slots arrive whole, on
// the CPU and (where a GPU is present) on the device, with more sends than slots and growing sizes
// (a slot reallocated only once its last upload ran), and the bytes are counted.
TEST(ParameterReturn, SendsArriveWholeThroughReusedSlots) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda::device_count() > 0) devices.push_back(Device::cuda(0));
  for (const Device& device : devices) {
    SCOPED_TRACE(device.str());
    ParameterReturn ret;
    if (device.is_cuda()) ret.pin();
    OffloadTraffic traffic;
    std::vector<Tensor> dst, want;
    int64_t bytes = 0;
    for (int u = 0; u < 5; ++u) {
      const int64_t n = 1000 * (u + 1);
      Tensor slot = ret.slot(n, DType::bf16);
      const Tensor values = randn({n}, 100 + static_cast<uint64_t>(u), 0, DType::bf16);
      copy_(slot, values);
      dst.push_back(zeros({n}, DType::bf16, device));
      ret.send(slot, dst.back(), traffic);
      want.push_back(values);
      bytes += n * 2;
    }
    ret.wait_all();
    for (size_t u = 0; u < dst.size(); ++u) EXPECT_EQ(values(dst[u]), values(want[u])) << "unit " << u;
    EXPECT_EQ(traffic.host_to_device_bytes, bytes);
    EXPECT_THROW(ret.send(ret.slot(4, DType::bf16), zeros({5}, DType::bf16, device), traffic), Error);
  }
}

}  // namespace
}  // namespace zt::zero

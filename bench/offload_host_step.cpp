// offload_host_step: the host's share of an offloaded optimizer step (parallel.offload_optimizer),
// timed on this machine's CPU for a flat shard of N parameters, two ways in the same run:
//   separate passes  (the engine until 2026-12-01): widen the landed 16-bit gradient into a
//                    buffer, add it to the f32 accumulator, AdamW, zero the accumulator, round the
//                    master to 16 bits for the trip back;
//   fused            (now): widen straight into the accumulator (the step's first gradient),
//                    AdamW writing the rounded copy in the same pass (Note [Offloaded step]).
// The copies to and from the GPU are not part of it (they cost the same both ways).
//
// usage: offload_host_step [--params N (default 100M)] [--repeats R (default 3)]
// Prints milliseconds per step (median) and the host memory traffic each way implies.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/backend.h"
#include "core/ops.h"

namespace {

using namespace zt;

double median_ms(int repeats, const std::function<void()>& fn) {
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 100'000'000;
  int repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--params") == 0) n = std::max<int64_t>(1, std::atoll(argv[i + 1]));
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::max(1, std::atoi(argv[i + 1]));
  }
  try {
    const Backend& cpu = cpu_backend();
    Tensor master = randn({n}, 1, 0, DType::f32), m = zeros({n}, DType::f32, Device::cpu());
    Tensor v = zeros({n}, DType::f32, Device::cpu()), acc = zeros({n}, DType::f32, Device::cpu());
    Tensor landed = randn({n}, 2, 0, DType::bf16), wide = empty({n}, DType::f32, Device::cpu());
    Tensor rounded = empty({n}, DType::bf16, Device::cpu());
    const std::vector<AdamWRun> runs = {{0, n, 0.1}};
    AdamWArgs args;
    args.lr = 1e-4;
    args.step = 1;
    const double separate = median_ms(repeats, [&] {
      copy_(wide, landed);
      add_(acc, wide);
      cpu.adamw_step_runs(master, acc, m, v, runs, args);
      fill_(acc, 0.0);
      copy_(rounded, master);
    });
    const double fused = median_ms(repeats, [&] {
      copy_(acc, landed);
      cpu.adamw_step_runs(master, acc, m, v, runs, args, &rounded);
    });
    // Bytes read + written per parameter, by the passes above.
    const double separate_bytes = (2 + 4) + (8 + 4) + (16 + 12) + 4 + (4 + 2), fused_bytes = (2 + 4) + (16 + 12 + 2);
    fmt::print("offload_host_step: {} parameters, median of {}\n", n, repeats);
    fmt::print("| host step | ms | bytes per parameter | GB/s |\n| --- | ---: | ---: | ---: |\n");
    fmt::print("| separate passes | {:.1f} | {:.0f} | {:.1f} |\n", separate, separate_bytes,
               separate_bytes * static_cast<double>(n) / (separate * 1e6));
    fmt::print("| fused | {:.1f} | {:.0f} | {:.1f} |\n", fused, fused_bytes,
               fused_bytes * static_cast<double>(n) / (fused * 1e6));
    fmt::print("speedup {:.2f}x\n", separate / fused);
  } catch (const std::exception& e) {
    fmt::print(stderr, "offload_host_step: {}\n", e.what());
    return 1;
  }
  return 0;
}

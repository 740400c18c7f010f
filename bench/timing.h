// Kernel timing shared by the CUDA benchmarks: CUDA events on the backend's current stream around
// `calls` back-to-back calls, median over `repeats` after `warmup` untimed calls.
//
// Why back to back: an event recorded on an idle stream starts the clock before the host has even
// launched the kernel, so a single synchronised call also times the host's launch path (tens of
// microseconds for a 0.1 ms kernel). Several calls per timing keep the GPU queue full, the way a
// training step does, so the figure is GPU time per call; bench/peer_kernels.py times PyTorch the
// same way.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/cuda/runtime.h"

namespace zt::bench {

struct Timing {
  int repeats = 20;
  int warmup = 3;
  int calls = 10;  // back-to-back calls per timed repeat
  // Idle before each kernel's warm-up, so every kernel starts from a GPU that has left its power
  // limit: a burst of large products pulls the clocks down for what runs right after it, and
  // without a pause a kernel's figure depends on the one timed before it (docs/performance.md).
  int pause_ms = 0;
};

inline double time_ms(const Timing& t, const std::function<void()>& fn) {
  const int device = 0;
  const cudaStream_t stream = cuda::current_stream(device);
  if (t.pause_ms > 0) {
    // The first call does any one-time work (a tuned product times its candidates, cuDNN builds a
    // plan): run it before the pause, so the timed calls never follow that burst.
    fn();
    ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::this_thread::sleep_for(std::chrono::milliseconds(t.pause_ms));
  }
  for (int i = 0; i < t.warmup; ++i) fn();
  cuda::Event start(device, true), stop(device, true);
  std::vector<double> times;
  for (int r = 0; r < t.repeats; ++r) {
    start.record(stream);
    for (int c = 0; c < t.calls; ++c) fn();
    stop.record(stream);
    stop.synchronize();
    times.push_back(stop.elapsed_ms_since(start) / t.calls);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace zt::bench

// Progress output: one line per logged step, a JSONL metrics file, and the numbers behind them
// (throughput, model FLOPs utilisation, memory, time left).
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include "core/device.h"

namespace zt {

struct StepMetrics {
  int64_t step = 0;          // 1-based: steps completed
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  bool skipped = false;      // fp16 overflow: the update was skipped
  double loss_scale = 1;
  double step_seconds = 0;
  double tokens_per_second = 0;  // over all ranks
  std::optional<double> mfu;     // model FLOPs utilisation, when the device's peak is known
  int64_t memory_allocated = 0;  // bytes on this rank's device
  int64_t memory_peak = 0;
  double eta_seconds = 0;
};

// 6 N + 12 L T C FLOPs per token (PaLM appendix B; ../shared/PERF.md), forward and backward.
double flops_per_token(int64_t num_params, int64_t n_layer, int64_t seq_len, int64_t d_model);
// Dense bf16 peak of the device in FLOP/s when known (H100, H200); nullopt otherwise (CPUs too).
std::optional<double> peak_flops(Device device);

std::string format_duration(double seconds);  // "2h03m", "4m10s", "12s"
std::string format_step_line(const StepMetrics& m);

// Appends one JSON object per line; flushes each line so a crash loses nothing written.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);  // empty path: writes nothing
  void write_step(const StepMetrics& m);
  void write_eval(int64_t step, double val_loss);
  void write_sample(int64_t step, const std::string& text);

 private:
  std::ofstream out_;
};

}  // namespace zt

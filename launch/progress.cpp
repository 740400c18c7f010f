#include "launch/progress.h"

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/cuda_support.h"
#include "core/error.h"
#include "launch/estimate.h"

namespace zt {

double flops_per_token(int64_t num_params, int64_t n_layer, int64_t seq_len, int64_t d_model) {
  return 6.0 * static_cast<double>(num_params) +
         12.0 * static_cast<double>(n_layer) * static_cast<double>(seq_len) * static_cast<double>(d_model);
}

std::optional<double> peak_flops(Device device) {
  if (!device.is_cuda()) return std::nullopt;
  const std::string name = cuda::device_name(device.index);
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return std::nullopt;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string format_step_line(const StepMetrics& m) {
  std::string tps = m.tokens_per_second >= 1e6   ? fmt::format("{:.2f}M", m.tokens_per_second / 1e6)
                    : m.tokens_per_second >= 1e3 ? fmt::format("{:.1f}k", m.tokens_per_second / 1e3)
                                                 : fmt::format("{:.0f}", m.tokens_per_second);
  std::string line = fmt::format("step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {} tok/s", m.step,
                                 std::to_string(m.total_steps).size(), m.total_steps, m.loss, m.lr, m.grad_norm, tps);
  if (m.mfu) line += fmt::format(" | MFU {:.1f}%", *m.mfu * 100);
  line += fmt::format(" | mem {} (peak {})", format_bytes(m.memory_allocated), format_bytes(m.memory_peak));
  if (m.loss_scale != 1) line += fmt::format(" | scale {:g}", m.loss_scale);
  if (m.skipped) line += " | overflow: step skipped";
  line += " | ETA " + format_duration(m.eta_seconds);
  return line;
}

MetricsWriter::MetricsWriter(const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  out_.open(path, std::ios::app);
  ZT_CHECK(out_.good(), "metrics", "cannot open logging.metrics_jsonl '", path, "' for writing");
}

void MetricsWriter::write_step(const StepMetrics& m) {
  if (!out_.is_open()) return;
  nlohmann::json j = {{"step", m.step},
                      {"loss", m.loss},
                      {"lr", m.lr},
                      {"grad_norm", m.grad_norm},
                      {"skipped", m.skipped},
                      {"loss_scale", m.loss_scale},
                      {"step_seconds", m.step_seconds},
                      {"tokens_per_second", m.tokens_per_second},
                      {"memory_allocated", m.memory_allocated},
                      {"memory_peak", m.memory_peak}};
  if (m.mfu) j["mfu"] = *m.mfu;
  out_ << j.dump() << '\n' << std::flush;
}

void MetricsWriter::write_eval(int64_t step, double val_loss) {
  if (!out_.is_open()) return;
  out_ << nlohmann::json{{"step", step}, {"val_loss", val_loss}}.dump() << '\n' << std::flush;
}

void MetricsWriter::write_sample(int64_t step, const std::string& text) {
  if (!out_.is_open()) return;
  out_ << nlohmann::json{{"step", step}, {"sample", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
       << '\n'
       << std::flush;
}

}  // namespace zt

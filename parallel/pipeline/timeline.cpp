#include "parallel/pipeline/timeline.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace zt::pipeline {
namespace {

constexpr const char* kApi = "pipeline";

char symbol(const Instruction& in) {
  if (in.op == Op::optimizer_step) return '*';
  const char letter = static_cast<char>('a' + in.micro_batch % 26);
  return in.op == Op::forward ? static_cast<char>(letter - 'a' + 'A') : letter;
}

std::string event_name(const Instruction& in, int chunks) {
  if (in.op == Op::optimizer_step) return "optimizer";
  std::string name = in.op == Op::forward ? "F" : in.op == Op::backward ? "B" : to_string(in.op);
  if (!is_compute(in.op)) name += ' ';
  name += std::to_string(in.micro_batch);
  if (chunks > 1) {
    name += '.';
    name += std::to_string(in.chunk);
  }
  return name;
}

}  // namespace

std::string render_text(const SimulationResult& result, double time_per_char) {
  ZT_CHECK(std::isfinite(time_per_char) && time_per_char > 0, kApi, "time_per_char must be > 0 (got ", time_per_char,
           ")");
  // A slice [i * u, (i + 1) * u) shows what runs at its middle; rounding down a last partial slice would hide
  // the end of the run, so the row has ceil(makespan / u) slices.
  const auto width = static_cast<size_t>(std::ceil(result.makespan / time_per_char - 1e-9));
  ZT_CHECK(width <= 100000, kApi, "the text timeline would be ", width,
           " characters wide; pass a larger time_per_char");
  std::ostringstream out;
  for (size_t r = 0; r < result.ranks.size(); ++r) {
    std::string row(width, '.');
    for (const TimelineEvent& e : result.ranks[r].events) {
      if (!is_compute(e.instruction.op)) continue;
      // Slices whose middle (i + 0.5) * u lies in [start, end).
      const double first = std::ceil(e.start / time_per_char - 0.5);
      const double last = std::ceil(e.end / time_per_char - 0.5);
      for (auto i = static_cast<size_t>(std::max(0.0, first)); i < static_cast<size_t>(last) && i < width; ++i) {
        row[i] = symbol(e.instruction);
      }
    }
    out << "rank " << r << " |" << row << "|\n";
  }
  out << "(forward A-Z, backward a-z by micro-batch mod 26; * optimizer; . idle; one character = " << time_per_char
      << " time units)\n";
  return out.str();
}

std::string chrome_trace_json(const SimulationResult& result, double microseconds_per_unit) {
  ZT_CHECK(std::isfinite(microseconds_per_unit) && microseconds_per_unit > 0, kApi,
           "microseconds_per_unit must be > 0 (got ", microseconds_per_unit, ")");
  using nlohmann::json;
  json events = json::array();
  for (size_t r = 0; r < result.ranks.size(); ++r) {
    const int pid = static_cast<int>(r);
    events.push_back(
        {{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", "rank " + std::to_string(r)}}}});
    events.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
    for (int lane = 0; lane < 2; ++lane) {
      events.push_back({{"name", "thread_name"},
                        {"ph", "M"},
                        {"pid", pid},
                        {"tid", lane},
                        {"args", {{"name", lane == 0 ? "compute" : "p2p"}}}});
    }
    for (const TimelineEvent& e : result.ranks[r].events) {
      const Instruction& in = e.instruction;
      json args = json::object();
      if (in.op != Op::optimizer_step) {
        args["micro_batch"] = in.micro_batch;
        args["chunk"] = in.chunk;
        args["stage"] = in.chunk * result.pp + pid;
      }
      if (in.peer >= 0) args["peer"] = in.peer;
      events.push_back({{"name", event_name(in, result.chunks)},
                        {"cat", to_string(in.op)},
                        {"ph", "X"},
                        {"pid", pid},
                        {"tid", is_compute(in.op) ? 0 : 1},
                        {"ts", e.start * microseconds_per_unit},
                        {"dur", (e.end - e.start) * microseconds_per_unit},
                        {"args", std::move(args)}});
    }
  }
  json trace = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  return trace.dump();
}

void write_chrome_trace(const SimulationResult& result, const std::string& path, double microseconds_per_unit) {
  const std::string text = chrome_trace_json(result, microseconds_per_unit);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  ZT_CHECK(file.is_open(), kApi, "cannot open '", path, "' to write a Chrome trace: ", std::strerror(errno));
  file << text;
  file.close();
  ZT_CHECK(!file.fail(), kApi, "writing the Chrome trace to '", path, "' failed: ", std::strerror(errno));
}

}  // namespace zt::pipeline

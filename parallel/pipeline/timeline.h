// Renders a simulated pipeline run (simulator.h) for people: as text in a terminal or a log, and as a
// Chrome trace (chrome://tracing, ui.perfetto.dev).
#pragma once

#include <string>

#include "parallel/pipeline/simulator.h"

namespace zt::pipeline {

// One row per rank, one character per `time_per_char` units of time: the computation running at the middle
// of that slice, forward as an upper-case letter and backward as a lower-case one by micro-batch (A/a is
// micro-batch 0, wrapping after 26), '*' for the optimizer step, '.' when the rank computes nothing.
// For example 1F1B with pp 2, 3 micro-batches, f = 1, b = 2:
//   rank 0 |AB..aaCbb.cc|
//   rank 1 |.AaaBbbCcc..|
// A last line holds the legend.
std::string render_text(const SimulationResult& result, double time_per_char = 1.0);

// Chrome trace JSON: a process per rank (pid = rank), computations on lane 0 ("compute"), sends and
// receives on lane 1 ("p2p"), all as complete events (ph "X") with ts and dur in microseconds, one unit
// of simulated time lasting `microseconds_per_unit`.
std::string chrome_trace_json(const SimulationResult& result, double microseconds_per_unit = 1000.0);

// Writes chrome_trace_json() to `path`; throws zt::Error naming the path when it cannot.
void write_chrome_trace(const SimulationResult& result, const std::string& path, double microseconds_per_unit = 1000.0);

}  // namespace zt::pipeline

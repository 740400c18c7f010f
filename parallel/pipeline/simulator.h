// Simulates a pipeline schedule before anything runs: checks that its sends and receives match and that
// every computation has its input, runs each rank's list in order with given costs, detects deadlock, and
// reports the makespan, the bubble and the activation memory high-water mark of each rank.
#pragma once

#include <vector>

#include "parallel/pipeline/schedule.h"

namespace zt::pipeline {

enum class SendMode {
  eager,     // a send returns at once; its data reaches the receiver comm time later (buffered sends)
  blocking,  // a send waits until the receiver has posted the matching receive (rendezvous)
};

struct SimulationOptions {
  Costs costs;
  SendMode send_mode = SendMode::eager;
};

struct TimelineEvent {
  double start = 0;  // compute: when it began; send or receive: when the rank reached it
  double end = 0;    // compute: start + cost; send or receive: when the rank moved on
  Instruction instruction;
};

struct RankReport {
  double busy = 0;    // time in forward, backward and optimizer steps
  double idle = 0;    // makespan - busy: waiting for messages, the fill and drain bubble, the tail after finish
  double finish = 0;  // when the rank's last instruction ended
  // High-water mark of (micro-batch, chunk) pairs whose forward ran and backward did not yet, i.e. of the
  // activations kept alive for backward (each 1/v of a stage's with v chunks per rank).
  int peak_in_flight = 0;
  std::vector<TimelineEvent> events;  // every instruction, in program order
};

struct SimulationResult {
  int pp = 0;
  int chunks = 1;  // virtual chunks per rank of the simulated schedule
  double makespan = 0;
  double bubble_fraction = 0;  // sum of idle / (pp * makespan); 0 when nothing takes time
  std::vector<RankReport> ranks;

  int max_peak_in_flight() const;
};

// Static checks, throwing zt::Error with the rank and instruction at fault: fields in range; sends and
// receives name the rank of the neighbouring stage; every send has exactly one matching receive and vice
// versa (Note [Pipeline message identity]); every rank runs exactly one forward and one backward of every
// (micro-batch, chunk), forward first; each forward is preceded by its activation's receive and each
// backward by its gradient's receive, sends follow the computation that produces them; at most one
// optimizer step, after the rank's last backward.
void validate(const Schedule& schedule);

// validate(), then runs the lists. Throws zt::Error on a deadlock, naming what every unfinished rank
// waits on. Also checks in the resulting times that every stage's forward of a micro-batch ends before the
// next stage's starts and every stage's backward ends before the previous stage's starts.
SimulationResult simulate(const Schedule& schedule, const SimulationOptions& options = {});

// The bubble fraction of an ideal run with uniform stages. Each rank works m * v * (f + b) + optimizer and
// idles through the fill and the drain, (pp - 1) hops each way: (pp - 1) * (f + b + 2 * comm), where f and b
// are the costs of one chunk (1/v of a stage with interleaving, which is how it shrinks the bubble v-fold).
// With f = b and nothing else this is Megatron's (pp - 1) / (v * m + pp - 1). With comm = 0 and eager sends
// the simulator reaches it exactly for any f and b: for GPipe and 1F1B whatever the placement costs, for
// interleaved when they match the simulated costs (otherwise some receives sit too early or too late).
// GPipe reaches it with any comm too; with comm > 0, 1F1B and interleaved also stall in the steady state
// (a gradient's round trip is not hidden), so the formula is then a lower bound.
double analytic_bubble_fraction(ScheduleKind kind, int pp, int micro_batches, int virtual_chunks, const Costs& costs);

}  // namespace zt::pipeline

// Pipeline schedule generators, checked by the simulator over a grid of shapes and against hand-derived
// orders and timelines.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"

namespace zt::pipeline {
namespace {

struct Shape {
  ScheduleKind kind;
  int pp, m, v;
};

// Every valid (kind, pp, m, v) with pp in 1..8, m in 1..16, v in 1..3.
std::vector<Shape> grid() {
  std::vector<Shape> shapes;
  for (int pp = 1; pp <= 8; ++pp) {
    for (int m = 1; m <= 16; ++m) {
      shapes.push_back({ScheduleKind::gpipe, pp, m, 1});
      shapes.push_back({ScheduleKind::one_f_one_b, pp, m, 1});
      for (int v = 1; v <= 3; ++v) {
        if (pp >= 2 && m % pp == 0) shapes.push_back({ScheduleKind::interleaved, pp, m, v});
      }
    }
  }
  return shapes;
}

std::string name(const Shape& s) {
  return std::string(to_string(s.kind)) + " pp " + std::to_string(s.pp) + " m " + std::to_string(s.m) + " v " +
         std::to_string(s.v);
}

// Compute steps of one rank as (op, micro-batch, chunk), sends and receives dropped.
std::vector<std::tuple<Op, int, int>> compute_order(const std::vector<Instruction>& list) {
  std::vector<std::tuple<Op, int, int>> out;
  for (const Instruction& in : list) {
    if (in.op == Op::forward || in.op == Op::backward) out.emplace_back(in.op, in.micro_batch, in.chunk);
  }
  return out;
}

void check_counts(const Schedule& s, const Shape& shape) {
  const int stages = shape.pp * shape.v;
  ASSERT_EQ(s.ranks.size(), static_cast<size_t>(shape.pp));
  int sends = 0, recvs = 0;
  for (int r = 0; r < shape.pp; ++r) {
    std::set<std::pair<int, int>> forwards, backwards;
    int optimizer = 0;
    for (const Instruction& in : s.ranks[r]) {
      if (in.op == Op::forward) {
        EXPECT_TRUE(forwards.insert({in.micro_batch, in.chunk}).second);
      }
      if (in.op == Op::backward) {
        EXPECT_TRUE(backwards.insert({in.micro_batch, in.chunk}).second);
      }
      if (in.op == Op::optimizer_step) ++optimizer;
      sends += is_send(in.op);
      recvs += is_recv(in.op);
    }
    EXPECT_EQ(forwards.size(), static_cast<size_t>(shape.m * shape.v)) << "rank " << r;
    EXPECT_EQ(backwards.size(), static_cast<size_t>(shape.m * shape.v)) << "rank " << r;
    EXPECT_EQ(optimizer, 1);
    EXPECT_EQ(s.ranks[r].back().op, Op::optimizer_step);
  }
  // One activation and one gradient per micro-batch across each of the stages - 1 boundaries.
  EXPECT_EQ(sends, 2 * shape.m * (stages - 1));
  EXPECT_EQ(recvs, sends);
}

// Megatron's (pp - 1) / (v * m + pp - 1), written out independently of the library's formula.
double megatron_bubble(int pp, int m, int v) { return (pp - 1.0) / (v * m + pp - 1.0); }

TEST(PipelineSchedule, GridRunsWithoutDeadlockAndHasTheIdealBubble) {
  for (const Costs costs : {Costs{1, 1, 0, 0}, Costs{1, 2, 0, 0}, Costs{1, 3, 0, 0.5}}) {
    for (const Shape& shape : grid()) {
      SCOPED_TRACE(name(shape) + " f " + std::to_string(costs.forward) + " b " + std::to_string(costs.backward));
      const Schedule s = make_schedule({shape.kind, shape.pp, shape.m, shape.v, costs});
      check_counts(s, shape);
      const SimulationResult eager = simulate(s, {costs, SendMode::eager});
      // Blocking sends only change the timing (Note [Pipeline p2p order]); simulate throws on deadlock.
      const SimulationResult blocking = simulate(s, {costs, SendMode::blocking});
      EXPECT_GE(blocking.makespan, eager.makespan - 1e-9);
      const double f = costs.forward, b = costs.backward;
      const double ideal = (shape.pp - 1) * (f + b) / ((shape.m * shape.v + shape.pp - 1) * (f + b) + costs.optimizer);
      EXPECT_NEAR(eager.bubble_fraction, ideal, 1e-12);
      EXPECT_NEAR(analytic_bubble_fraction(shape.kind, shape.pp, shape.m, shape.v, costs), ideal, 1e-12);
      if (f == b && costs.optimizer == 0) {
        EXPECT_NEAR(eager.bubble_fraction, megatron_bubble(shape.pp, shape.m, shape.v), 1e-12);
      }
      for (const RankReport& rank : eager.ranks) {
        EXPECT_DOUBLE_EQ(rank.busy, shape.m * shape.v * (f + b) + costs.optimizer);
        EXPECT_NEAR(rank.idle, eager.makespan - rank.busy, 1e-9);
      }
    }
  }
}

TEST(PipelineSchedule, GpipeAndOneFOneBBubbleIsIdealWhateverThePlacementCosts) {
  // Built with the default placement costs (f 1, b 2), simulated with f = b = 1.
  for (int pp = 1; pp <= 8; ++pp) {
    for (int m = 1; m <= 16; ++m) {
      for (const Schedule& s : {make_gpipe(pp, m), make_1f1b(pp, m)}) {
        for (const SendMode mode : {SendMode::eager, SendMode::blocking}) {
          const SimulationResult r = simulate(s, {Costs{1, 1, 0, 0}, mode});
          EXPECT_NEAR(r.bubble_fraction, (pp - 1.0) / (m + pp - 1.0), 1e-12)
              << to_string(s.kind) << " pp " << pp << " m " << m;
        }
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBKeepsAtMostPpActivationsGpipeKeepsAll) {
  for (int pp = 1; pp <= 8; ++pp) {
    for (int m = 1; m <= 16; ++m) {
      const SimulationResult one = simulate(make_1f1b(pp, m));
      const SimulationResult all = simulate(make_gpipe(pp, m));
      for (int r = 0; r < pp; ++r) {
        EXPECT_EQ(one.ranks[r].peak_in_flight, std::min(pp - r, m)) << "pp " << pp << " m " << m << " rank " << r;
        EXPECT_EQ(all.ranks[r].peak_in_flight, m);
      }
      EXPECT_LE(one.max_peak_in_flight(), pp);
      EXPECT_EQ(all.max_peak_in_flight(), m);
    }
  }
}

TEST(PipelineSchedule, InterleavedHasASmallerBubbleThanOneFOneB) {
  for (int pp = 2; pp <= 8; ++pp) {
    for (int m = pp; m <= 16; m += pp) {
      const double one = simulate(make_1f1b(pp, m), {Costs{2, 4, 0, 0}}).bubble_fraction;
      for (int v = 2; v <= 3; ++v) {
        // A chunk is 1/v of a stage, so its costs are too; the same model and batch, split finer.
        const Costs chunk{2.0 / v, 4.0 / v, 0, 0};
        const SimulationResult r = simulate(make_schedule({ScheduleKind::interleaved, pp, m, v, chunk}), {chunk});
        EXPECT_LT(r.bubble_fraction, one) << "pp " << pp << " m " << m << " v " << v;
        EXPECT_NEAR(r.bubble_fraction, megatron_bubble(pp, m, v), 1e-12);
        // Megatron's warm-up keeps at most 2 (pp - 1) + (v - 1) pp + 1 chunk activations on rank 0.
        EXPECT_LE(r.max_peak_in_flight(), std::min(m * v, 2 * (pp - 1) + (v - 1) * pp + 1));
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBComputeOrder) {
  using T = std::tuple<Op, int, int>;
  const Op F = Op::forward, B = Op::backward;
  const Schedule s = make_1f1b(4, 8);
  // Rank 0: 3 warm-up forwards, alternate, drain.
  EXPECT_EQ(compute_order(s.ranks[0]), (std::vector<T>{{F, 0, 0},
                                                       {F, 1, 0},
                                                       {F, 2, 0},
                                                       {F, 3, 0},
                                                       {B, 0, 0},
                                                       {F, 4, 0},
                                                       {B, 1, 0},
                                                       {F, 5, 0},
                                                       {B, 2, 0},
                                                       {F, 6, 0},
                                                       {B, 3, 0},
                                                       {F, 7, 0},
                                                       {B, 4, 0},
                                                       {B, 5, 0},
                                                       {B, 6, 0},
                                                       {B, 7, 0}}));
  std::vector<T> last;  // the last rank alternates from the start
  for (int i = 0; i < 8; ++i) {
    last.push_back({F, i, 0});
    last.push_back({B, i, 0});
  }
  EXPECT_EQ(compute_order(s.ranks[3]), last);
}

TEST(PipelineSchedule, InterleavedComputeOrderFollowsMegatron) {
  using T = std::tuple<Op, int, int>;
  const Op F = Op::forward, B = Op::backward;
  const Schedule s = make_interleaved_1f1b(2, 4, 2);
  // Groups of pp = 2 micro-batches per chunk; rank 0 warms up 2 (pp - 1) + (v - 1) pp = 4, rank 1 2.
  EXPECT_EQ(compute_order(s.ranks[0]), (std::vector<T>{{F, 0, 0},
                                                       {F, 1, 0},
                                                       {F, 0, 1},
                                                       {F, 1, 1},
                                                       {F, 2, 0},
                                                       {B, 0, 1},
                                                       {F, 3, 0},
                                                       {B, 1, 1},
                                                       {F, 2, 1},
                                                       {B, 0, 0},
                                                       {F, 3, 1},
                                                       {B, 1, 0},
                                                       {B, 2, 1},
                                                       {B, 3, 1},
                                                       {B, 2, 0},
                                                       {B, 3, 0}}));
  EXPECT_EQ(compute_order(s.ranks[1]), (std::vector<T>{{F, 0, 0},
                                                       {F, 1, 0},
                                                       {F, 0, 1},
                                                       {B, 0, 1},
                                                       {F, 1, 1},
                                                       {B, 1, 1},
                                                       {F, 2, 0},
                                                       {B, 0, 0},
                                                       {F, 3, 0},
                                                       {B, 1, 0},
                                                       {F, 2, 1},
                                                       {B, 2, 1},
                                                       {F, 3, 1},
                                                       {B, 3, 1},
                                                       {B, 2, 0},
                                                       {B, 3, 0}}));
  // Stage 1 (chunk 0 of rank 1) sends to stage 2, chunk 1 of rank 0: round the ring.
  EXPECT_EQ(s.stage_of(1, 0), 1);
  EXPECT_EQ(s.rank_of(2), 0);
  EXPECT_EQ(s.chunk_of(2), 1);
}

TEST(PipelineSchedule, OneFOneBTimelineMatchesHandDerivation) {
  // pp 2, m 3, f 1, b 2. Rank 1 (last stage) runs each backward right after its forward; rank 0 waits
  // for each gradient.
  const SimulationResult r = simulate(make_1f1b(2, 3));
  struct E {
    Op op;
    int mb;
    double start, end;
  };
  const std::vector<std::vector<E>> expected = {{{Op::forward, 0, 0, 1},
                                                 {Op::forward, 1, 1, 2},
                                                 {Op::backward, 0, 4, 6},
                                                 {Op::forward, 2, 6, 7},
                                                 {Op::backward, 1, 7, 9},
                                                 {Op::backward, 2, 10, 12}},
                                                {{Op::forward, 0, 1, 2},
                                                 {Op::backward, 0, 2, 4},
                                                 {Op::forward, 1, 4, 5},
                                                 {Op::backward, 1, 5, 7},
                                                 {Op::forward, 2, 7, 8},
                                                 {Op::backward, 2, 8, 10}}};
  EXPECT_DOUBLE_EQ(r.makespan, 12);
  EXPECT_DOUBLE_EQ(r.bubble_fraction, 6.0 / 24.0);
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<E> got;
    for (const TimelineEvent& e : r.ranks[rank].events) {
      if (e.instruction.op == Op::forward || e.instruction.op == Op::backward) {
        got.push_back({e.instruction.op, e.instruction.micro_batch, e.start, e.end});
      }
    }
    ASSERT_EQ(got.size(), expected[rank].size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].op, expected[rank][i].op);
      EXPECT_EQ(got[i].mb, expected[rank][i].mb);
      EXPECT_DOUBLE_EQ(got[i].start, expected[rank][i].start) << "rank " << rank << " step " << i;
      EXPECT_DOUBLE_EQ(got[i].end, expected[rank][i].end) << "rank " << rank << " step " << i;
    }
  }
}

TEST(PipelineSchedule, GpipeBubbleWithCommunicationMatchesFormula) {
  // Each of the pp - 1 hops of the fill and of the drain adds one message latency.
  for (int pp = 1; pp <= 6; ++pp) {
    for (int m = 1; m <= 8; ++m) {
      const Costs costs{1, 2, 0.25, 0};
      const SimulationResult r = simulate(make_schedule({ScheduleKind::gpipe, pp, m, 1, costs}), {costs});
      EXPECT_DOUBLE_EQ(r.makespan, m * 3.0 + (pp - 1) * (3.0 + 0.5)) << "pp " << pp << " m " << m;
      EXPECT_NEAR(r.bubble_fraction, analytic_bubble_fraction(ScheduleKind::gpipe, pp, m, 1, costs), 1e-12);
    }
  }
}

TEST(PipelineSchedule, CommunicationOnlyAddsToTheBubble) {
  // With comm > 0, 1F1B and interleaved stall in the steady state too; the formula is a lower bound.
  const Costs costs{1, 2, 0.5, 0};
  for (const Shape& shape : grid()) {
    const Schedule s = make_schedule({shape.kind, shape.pp, shape.m, shape.v, costs});
    const double bubble = simulate(s, {costs}).bubble_fraction;
    EXPECT_GE(bubble, analytic_bubble_fraction(shape.kind, shape.pp, shape.m, shape.v, costs) - 1e-12) << name(shape);
    simulate(s, {costs, SendMode::blocking});
  }
}

TEST(PipelineSchedule, DeadlockFreeUnderCostsOtherThanThePlacementCosts) {
  // Note [Pipeline p2p order]: the order is safe whatever the real costs.
  for (const Costs real : {Costs{1, 1, 0, 0}, Costs{3, 1, 0.7, 2}, Costs{0.5, 4, 0.1, 0}}) {
    for (const Shape& shape : grid()) {
      const Schedule s = make_schedule({shape.kind, shape.pp, shape.m, shape.v, Costs{}});
      EXPECT_NO_THROW(simulate(s, {real, SendMode::blocking})) << name(shape);
      EXPECT_NO_THROW(simulate(s, {real, SendMode::eager})) << name(shape);
    }
  }
}

TEST(PipelineSchedule, IsDeterministicAndPrintable) {
  const Schedule a = make_interleaved_1f1b(4, 8, 3), b = make_interleaved_1f1b(4, 8, 3);
  EXPECT_EQ(a.ranks, b.ranks);
  EXPECT_EQ(to_string(make_1f1b(2, 2)),
            "1F1B: pp 2, micro_batches 2, virtual_chunks 1\n"
            "rank 0: F0 SA0>1 F1 SA1>1 RG0<1 B0 RG1<1 B1 OPT\n"
            "rank 1: RA0<0 F0 RA1<0 B0 SG0>0 F1 B1 SG1>0 OPT\n");
  EXPECT_EQ(to_string(Instruction{Op::recv_grad, 3, 1, 2}), "recv_grad mb 3 chunk 1 <- rank 2");
  EXPECT_EQ(to_string(Instruction{Op::optimizer_step, -1, -1, -1}), "optimizer_step");
}

void expect_error(const ScheduleConfig& config, const std::string& message) {
  try {
    make_schedule(config);
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(PipelineSchedule, RejectsBadInputWithClearMessages) {
  using K = ScheduleKind;
  expect_error({K::interleaved, 4, 6, 2, {}},
               "[pipeline] interleaved 1F1B needs micro_batches (6) divisible by pp (4)");
  expect_error(
      {K::interleaved, 1, 4, 2, {}},
      "[pipeline] interleaved 1F1B needs pp >= 2 (got 1): with one rank there is nothing to interleave; use 1F1B");
  expect_error({K::one_f_one_b, 0, 4, 1, {}}, "[pipeline] 1F1B needs pp >= 1 (got 0)");
  expect_error({K::gpipe, 2, 0, 1, {}}, "[pipeline] GPipe needs micro_batches >= 1 (got 0)");
  expect_error({K::interleaved, 2, 4, 0, {}}, "[pipeline] interleaved 1F1B needs virtual_chunks >= 1 (got 0)");
  expect_error(
      {K::gpipe, 2, 4, 2, {}},
      "[pipeline] GPipe takes virtual_chunks = 1 (got 2); model chunks per rank need the interleaved 1F1B schedule");
  expect_error({K::one_f_one_b, 2, 4, 1, {0, 2, 0, 0}},
               "[pipeline] placement costs need forward and backward > 0 (got 0, 2)");
  expect_error({K::one_f_one_b, 2, 4, 1, {1, 2, -1, 0}}, "[pipeline] placement cost comm must be >= 0 (got -1)");
}

}  // namespace
}  // namespace zt::pipeline

// The pipeline simulator on hand-made schedules (good and broken) and the timeline renderers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/error.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/pipeline/timeline.h"

namespace zt::pipeline {
namespace {

Instruction F(int mb, int chunk = 0) { return {Op::forward, mb, chunk, -1}; }
Instruction B(int mb, int chunk = 0) { return {Op::backward, mb, chunk, -1}; }
Instruction SA(int mb, int peer, int chunk = 0) { return {Op::send_activation, mb, chunk, peer}; }
Instruction RA(int mb, int peer, int chunk = 0) { return {Op::recv_activation, mb, chunk, peer}; }
Instruction SG(int mb, int peer, int chunk = 0) { return {Op::send_grad, mb, chunk, peer}; }
Instruction RG(int mb, int peer, int chunk = 0) { return {Op::recv_grad, mb, chunk, peer}; }
const Instruction OPT{Op::optimizer_step, -1, -1, -1};

Schedule hand_made(int pp, int m, std::vector<std::vector<Instruction>> ranks) {
  Schedule s;
  s.kind = ScheduleKind::one_f_one_b;
  s.pp = pp;
  s.micro_batches = m;
  s.ranks = std::move(ranks);
  return s;
}

std::string error_of(const Schedule& s, const SimulationOptions& options = {}) {
  try {
    simulate(s, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// The 1F1B compute order of pp 2, m 3 with the naive placement: send right after producing, receive
// right before consuming.
Schedule naive_one_f_one_b() {
  return hand_made(
      2, 3,
      {{F(0), SA(0, 1), F(1), SA(1, 1), RG(0, 1), B(0), F(2), SA(2, 1), RG(1, 1), B(1), RG(2, 1), B(2), OPT},
       {RA(0, 0), F(0), B(0), SG(0, 0), RA(1, 0), F(1), B(1), SG(1, 0), RA(2, 0), F(2), B(2), SG(2, 0), OPT}});
}

TEST(PipelineSimulator, NaivePlacementDeadlocksOnlyWithBlockingSends) {
  const Schedule naive = naive_one_f_one_b();
  // Buffered sends: it runs, exactly like the generated schedule.
  EXPECT_DOUBLE_EQ(simulate(naive).makespan, simulate(make_1f1b(2, 3)).makespan);
  // Rendezvous: rank 0 sends activation 1 while rank 1 sends gradient 0 (Note [Pipeline p2p order]).
  EXPECT_EQ(
      error_of(naive, {Costs{}, SendMode::blocking}),
      "[pipeline] deadlock (blocking sends): no rank can progress: rank 0 waits at instruction 3 "
      "(send_activation mb 1 chunk 0 -> rank 1); rank 1 waits at instruction 3 (send_grad mb 0 chunk 0 -> rank 0)");
}

TEST(PipelineSimulator, DetectsACyclicWaitWithEagerSends) {
  // Rank 0 waits for a gradient before sending the activation that rank 1 needs to make it.
  const Schedule s = hand_made(2, 1, {{F(0), RG(0, 1), SA(0, 1), B(0), OPT}, {RA(0, 0), F(0), B(0), SG(0, 0), OPT}});
  EXPECT_EQ(error_of(s),
            "[pipeline] deadlock (eager sends): no rank can progress: rank 0 waits at instruction 1 "
            "(recv_grad mb 0 chunk 0 <- rank 1); rank 1 waits at instruction 0 "
            "(recv_activation mb 0 chunk 0 <- rank 0)");
}

TEST(PipelineSimulator, SingleRankNeedsNoMessages) {
  const SimulationResult r = simulate(hand_made(1, 2, {{F(0), F(1), B(1), B(0), OPT}}), {Costs{1, 2, 5, 0.5}});
  EXPECT_DOUBLE_EQ(r.makespan, 6.5);
  EXPECT_DOUBLE_EQ(r.bubble_fraction, 0);
  EXPECT_EQ(r.ranks[0].peak_in_flight, 2);
}

TEST(PipelineSimulator, DetectsUnmatchedSendsAndReceives) {
  Schedule s = make_1f1b(2, 2);
  // Drop rank 1's receive of activation 1.
  auto& r1 = s.ranks[1];
  r1.erase(std::find(r1.begin(), r1.end(), RA(1, 0)));
  const size_t send_index = std::find(s.ranks[0].begin(), s.ranks[0].end(), SA(1, 1)) - s.ranks[0].begin();
  EXPECT_EQ(error_of(s), "[pipeline] send_activation mb 1 chunk 0 -> rank 1 (rank 0, instruction " +
                             std::to_string(send_index) + ") has no matching recv_activation on rank 1");

  Schedule t = make_1f1b(2, 2);
  auto& r0 = t.ranks[0];
  const size_t recv_index = std::find(r0.begin(), r0.end(), RG(1, 1)) - r0.begin();
  t.ranks[1].erase(std::find(t.ranks[1].begin(), t.ranks[1].end(), SG(1, 0)));
  EXPECT_EQ(error_of(t), "[pipeline] recv_grad mb 1 chunk 0 <- rank 1 (rank 0, instruction " +
                             std::to_string(recv_index) + ") has no matching send_grad on rank 1");

  Schedule u = make_1f1b(2, 2);
  u.ranks[0].insert(u.ranks[0].begin() + 2, SA(0, 1));
  EXPECT_EQ(error_of(u),
            "[pipeline] the activation of micro-batch 0 across stages 0/1 from rank 0 to rank 1 is sent "
            "2 times and received 1 times; each needs exactly one");
}

TEST(PipelineSimulator, DetectsBadFieldsAndOrder) {
  // A receive of an activation on the first stage.
  Schedule s = make_1f1b(2, 1);
  s.ranks[0].insert(s.ranks[0].begin(), RA(0, 1));
  EXPECT_EQ(error_of(s),
            "[pipeline] recv_activation mb 0 chunk 0 <- rank 1 (rank 0, instruction 0): stage 0 is the "
            "first stage; there is no stage -1 to exchange with");
  // A wrong peer.
  Schedule p = hand_made(3, 1, {{F(0), SA(0, 2), RG(0, 1), B(0)}, {}, {}});
  EXPECT_EQ(error_of(p),
            "[pipeline] send_activation mb 0 chunk 0 -> rank 2 (rank 0, instruction 1): names peer 2, "
            "but its neighbour stage 1 is on rank 1");
  // Out-of-range micro-batch and chunk.
  EXPECT_EQ(error_of(hand_made(1, 1, {{F(1), B(0)}})),
            "[pipeline] forward mb 1 chunk 0 (rank 0, instruction 0): micro-batch must be in [0, 1)");
  EXPECT_EQ(error_of(hand_made(1, 1, {{F(0, 1), B(0)}})),
            "[pipeline] forward mb 0 chunk 1 (rank 0, instruction 0): chunk must be in [0, 1)");
  // Missing, repeated and misordered computations.
  EXPECT_EQ(error_of(hand_made(1, 2, {{F(0), B(0), F(1), OPT}})),
            "[pipeline] rank 0 never runs the backward of micro-batch 1 chunk 0 (stage 0)");
  EXPECT_EQ(
      error_of(hand_made(1, 1, {{B(0), F(0)}})),
      "[pipeline] rank 0 runs the backward of micro-batch 0 chunk 0 (stage 0) at instruction 0 before its forward "
      "at instruction 1");
  EXPECT_EQ(error_of(hand_made(1, 1, {{F(0), F(0), B(0)}})),
            "[pipeline] forward mb 0 chunk 0 (rank 0, instruction 1) repeats instruction 0; each runs once");
  EXPECT_EQ(error_of(hand_made(1, 2, {{F(0), B(0), OPT, F(1), B(1)}})),
            "[pipeline] rank 0 runs optimizer_step at instruction 2 before its last backward at instruction 4");
  EXPECT_EQ(error_of(hand_made(1, 1, {{F(0), B(0), OPT, OPT}})),
            "[pipeline] rank 0 has a second optimizer_step at instruction 3");
  // A forward before its input arrives, a send before the data exists.
  EXPECT_EQ(error_of(hand_made(2, 1, {{F(0), SA(0, 1), RG(0, 1), B(0)}, {F(0), RA(0, 0), B(0), SG(0, 0)}})),
            "[pipeline] rank 1 runs the forward of micro-batch 0 chunk 0 (stage 1) at instruction 0 without receiving "
            "its input activation before");
  EXPECT_EQ(error_of(hand_made(2, 1, {{SA(0, 1), F(0), RG(0, 1), B(0)}, {RA(0, 0), F(0), B(0), SG(0, 0)}})),
            "[pipeline] rank 0 must send the output activation of micro-batch 0 chunk 0 (stage 0) after the forward at "
            "instruction 1 (send_activation at 0)");
  // Lists for the wrong number of ranks.
  EXPECT_EQ(error_of(hand_made(2, 1, {{F(0), B(0)}})), "[pipeline] schedule for pp 2 has lists for 1 ranks");
  // Negative costs.
  EXPECT_EQ(error_of(make_1f1b(2, 2), {Costs{1, -2, 0, 0}}),
            "[pipeline] costs must be finite and >= 0 (got forward 1, backward -2, comm 0, optimizer 0)");
}

TEST(PipelineSimulator, TimesWithCommunicationAndBothSendModes) {
  // pp 2, m 1, f 1, b 2, comm 0.5: the activation lands at 1.5, the gradient at 1.5 + 1 + 2 + 0.5 = 5.
  const Costs costs{1, 2, 0.5, 0.25};
  const Schedule s = hand_made(2, 1, {{F(0), SA(0, 1), RG(0, 1), B(0), OPT}, {RA(0, 0), F(0), B(0), SG(0, 0), OPT}});
  for (const SendMode mode : {SendMode::eager, SendMode::blocking}) {
    const SimulationResult r = simulate(s, {costs, mode});
    EXPECT_DOUBLE_EQ(r.makespan, 7.25);
    const auto& e0 = r.ranks[0].events;
    const auto& e1 = r.ranks[1].events;
    EXPECT_DOUBLE_EQ(e1[1].start, 1.5);                                  // rank 1's forward
    EXPECT_DOUBLE_EQ(e0[3].start, 5);                                    // rank 0's backward
    EXPECT_DOUBLE_EQ(e0[4].end, 7.25);                                   // rank 0's optimizer step
    EXPECT_DOUBLE_EQ(e1[4].end, mode == SendMode::eager ? 4.75 : 5.25);  // rank 1's, after its send
    // Eager: the send returns at once; blocking: it returns when the receive has been met.
    EXPECT_DOUBLE_EQ(e0[1].end, mode == SendMode::eager ? 1 : 1.5);
    EXPECT_DOUBLE_EQ(e1[3].end, mode == SendMode::eager ? 4.5 : 5);
    EXPECT_DOUBLE_EQ(r.ranks[0].busy, 3.25);
    EXPECT_DOUBLE_EQ(r.ranks[1].idle, 7.25 - 3.25);
    EXPECT_DOUBLE_EQ(r.bubble_fraction, 8.0 / 14.5);
  }
}

TEST(PipelineTimeline, RendersText) {
  EXPECT_EQ(render_text(simulate(make_1f1b(2, 3))),
            "rank 0 |AB..aaCbb.cc|\n"
            "rank 1 |.AaaBbbCcc..|\n"
            "(forward A-Z, backward a-z by micro-batch mod 26; * optimizer; . idle; one character = 1 time units)\n");
  // Two characters per unit, with an optimizer step of 1.
  const std::string text = render_text(simulate(make_gpipe(2, 2), {Costs{1, 1, 0, 1}}), 0.5);
  EXPECT_EQ(text.substr(0, text.find('(')),
            "rank 0 |AABB....aabb**|\n"
            "rank 1 |..AABBaabb**..|\n");
  EXPECT_THROW(render_text(simulate(make_gpipe(2, 2)), 0), Error);
}

TEST(PipelineTimeline, ChromeTraceHoldsEveryInstruction) {
  const SimulationResult r = simulate(make_interleaved_1f1b(2, 4, 2), {Costs{1, 2, 0.5, 0}});
  const auto trace = nlohmann::json::parse(chrome_trace_json(r, 10));
  size_t complete = 0;
  std::map<std::pair<int, int>, std::string> lanes;
  std::map<int, std::string> processes;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M") {
      if (e["name"] == "thread_name") lanes[{e["pid"].get<int>(), e["tid"].get<int>()}] = e["args"]["name"];
      if (e["name"] == "process_name") processes[e["pid"].get<int>()] = e["args"]["name"];
      continue;
    }
    ASSERT_EQ(e["ph"], "X");
    const int pid = e["pid"];
    const TimelineEvent& expected = r.ranks[pid].events[complete - (pid == 1 ? r.ranks[0].events.size() : 0)];
    EXPECT_EQ(e["cat"], to_string(expected.instruction.op));
    EXPECT_EQ(e["tid"], is_compute(expected.instruction.op) ? 0 : 1);
    EXPECT_DOUBLE_EQ(e["ts"].get<double>(), expected.start * 10);
    EXPECT_DOUBLE_EQ(e["dur"].get<double>(), (expected.end - expected.start) * 10);
    if (expected.instruction.op == Op::forward) {
      EXPECT_EQ(e["name"], "F" + std::to_string(expected.instruction.micro_batch) + "." +
                               std::to_string(expected.instruction.chunk));
      EXPECT_EQ(e["args"]["stage"], expected.instruction.chunk * 2 + pid);
    }
    if (expected.instruction.peer >= 0) {
      EXPECT_EQ(e["args"]["peer"], expected.instruction.peer);
    }
    ++complete;
  }
  EXPECT_EQ(complete, r.ranks[0].events.size() + r.ranks[1].events.size());
  EXPECT_EQ(processes[1], "rank 1");
  EXPECT_EQ(lanes[std::make_pair(0, 0)], "compute");
  EXPECT_EQ(lanes[std::make_pair(1, 1)], "p2p");
}

TEST(PipelineTimeline, WritesChromeTraceFile) {
  const SimulationResult r = simulate(make_1f1b(3, 4));
  const std::string path = ::testing::TempDir() + "pipeline_trace.json";
  write_chrome_trace(r, path);
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_EQ(text.str(), chrome_trace_json(r));
  std::remove(path.c_str());
  try {
    write_chrome_trace(r, "/nonexistent-dir/trace.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(
        std::string(e.what()).rfind("[pipeline] cannot open '/nonexistent-dir/trace.json' to write a Chrome trace", 0),
        0u)
        << e.what();
  }
}

}  // namespace
}  // namespace zt::pipeline

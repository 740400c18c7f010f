#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <tuple>

#include "core/error.h"

namespace zt::pipeline {

// Note [Pipeline p2p order]
// Rule: the messages of one step are totally ordered by a key, and every rank issues its sends and
// receives in that order. Then no executor deadlocks, whether a send returns at once (buffered), blocks
// until its receive is posted (rendezvous), or receives are posted before sends: take the first message
// in the order that never completes; on both of its ranks every instruction before it is compute (which
// finishes) or an earlier message (which completed, by the choice of "first"), so both ranks reach it and
// it completes. Contradiction.
// The key is the message's production time (the end of the forward or backward that makes it) in a
// virtual run of the compute order with ScheduleConfig::placement_costs, ties broken by (kind,
// micro-batch, boundary), which both ranks of a message see alike. A send sits right after the computation
// that produces it. A receive sits where the virtual run has its data arrive: after every computation of
// its rank that starts earlier, but before its consumer and before any later-keyed message of the rank.
// Keys and positions then agree, and a run whose real costs match the placement costs waits for nothing
// the compute order did not already imply (with blocking sends, a sender may still wait for a busy
// receiver). The naive placement (send after produce, receive before consume) already deadlocks with
// blocking sends in 1F1B with pp = 2: rank 0 sends activation 1 while rank 1 sends gradient 0.

namespace {

constexpr const char* kApi = "pipeline";

struct ComputeStep {
  bool backward = false;
  int micro_batch = 0;
  int chunk = 0;
};
using ComputeOrder = std::vector<std::vector<ComputeStep>>;  // [rank] -> forwards and backwards in order

ComputeOrder gpipe_order(int pp, int m) {
  ComputeOrder order(pp);
  for (auto& steps : order) {
    for (int i = 0; i < m; ++i) steps.push_back({false, i, 0});
    for (int i = 0; i < m; ++i) steps.push_back({true, i, 0});
  }
  return order;
}

// Rank r starts pp - r - 1 forwards ahead (enough to keep the ranks after it busy until the first gradient
// comes back), then alternates, then drains: at most pp - r activations are alive on rank r.
ComputeOrder one_f_one_b_order(int pp, int m) {
  ComputeOrder order(pp);
  for (int r = 0; r < pp; ++r) {
    const int warmup = std::min(pp - r - 1, m);
    auto& steps = order[r];
    for (int i = 0; i < warmup; ++i) steps.push_back({false, i, 0});
    for (int i = 0; i < m - warmup; ++i) {
      steps.push_back({false, warmup + i, 0});
      steps.push_back({true, i, 0});
    }
    for (int i = m - warmup; i < m; ++i) steps.push_back({true, i, 0});
  }
  return order;
}

// Megatron's interleaved order. Rank r runs m * v (micro-batch, chunk) forwards in groups of pp
// micro-batches: pp micro-batches through chunk 0, the same pp through chunk 1, ..., then the next pp
// micro-batches. Backwards follow the same groups with the chunks reversed. The first backward on rank r
// (micro-batch 0, last chunk) needs micro-batch 0 through the first v - 1 chunks of every rank, which is
// (v - 1) * pp forwards here, plus the round trip up to the last rank and back, 2 * (pp - r - 1) more.
ComputeOrder interleaved_order(int pp, int m, int v) {
  const int total = m * v;
  const int group = pp * v;
  auto micro_batch_of = [&](int k) { return (k / group) * pp + k % pp; };
  auto chunk_of = [&](int k, bool backward) {
    const int c = (k % group) / pp;
    return backward ? v - 1 - c : c;
  };
  ComputeOrder order(pp);
  for (int r = 0; r < pp; ++r) {
    const int warmup = std::min((pp - r - 1) * 2 + (v - 1) * pp, total);
    auto& steps = order[r];
    auto forward = [&](int k) { steps.push_back({false, micro_batch_of(k), chunk_of(k, false)}); };
    auto backward = [&](int k) { steps.push_back({true, micro_batch_of(k), chunk_of(k, true)}); };
    for (int k = 0; k < warmup; ++k) forward(k);
    for (int i = 0; i < total - warmup; ++i) {
      forward(warmup + i);
      backward(i);
    }
    for (int k = total - warmup; k < total; ++k) backward(k);
  }
  return order;
}

// Start and end of every compute step in a run where each step begins as soon as its rank is free and its
// input has arrived (Note [Pipeline p2p order]).
struct VirtualRun {
  std::vector<std::vector<double>> start;  // [rank][step]
  std::vector<double> forward_end;         // [micro_batch * stages + stage]
  std::vector<double> backward_end;
  std::vector<int> forward_index;  // position of that forward in its rank's compute order
  std::vector<int> backward_index;
};

VirtualRun run_virtually(const Schedule& shape, const ComputeOrder& order, const Costs& costs) {
  const int stages = shape.num_stages();
  const size_t slots = static_cast<size_t>(shape.micro_batches) * stages;
  VirtualRun run;
  run.forward_end.assign(slots, -1.0);
  run.backward_end.assign(slots, -1.0);
  run.forward_index.assign(slots, -1);
  run.backward_index.assign(slots, -1);
  run.start.resize(shape.pp);
  std::vector<size_t> pc(shape.pp, 0);
  std::vector<double> clock(shape.pp, 0.0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < shape.pp; ++r) {
      for (; pc[r] < order[r].size(); ++pc[r]) {
        const ComputeStep& step = order[r][pc[r]];
        const int s = shape.stage_of(r, step.chunk);
        const size_t slot = static_cast<size_t>(step.micro_batch) * stages + s;
        double ready = 0;
        if (!step.backward && s > 0) {
          if (run.forward_end[slot - 1] < 0) break;
          ready = run.forward_end[slot - 1] + costs.comm;
        } else if (step.backward) {
          ZT_CHECK(run.forward_end[slot] >= 0, kApi, "internal error: rank ", r, " runs backward of micro-batch ",
                   step.micro_batch, " chunk ", step.chunk, " before its forward");
          if (s == stages - 1) {
            ready = run.forward_end[slot];
          } else {
            if (run.backward_end[slot + 1] < 0) break;
            ready = run.backward_end[slot + 1] + costs.comm;
          }
        }
        const double start = std::max(clock[r], ready);
        clock[r] = start + (step.backward ? costs.backward : costs.forward);
        run.start[r].push_back(start);
        (step.backward ? run.backward_end : run.forward_end)[slot] = clock[r];
        (step.backward ? run.backward_index : run.forward_index)[slot] = static_cast<int>(pc[r]);
        progress = true;
      }
    }
  }
  for (int r = 0; r < shape.pp; ++r) {
    ZT_CHECK(pc[r] == order[r].size(), kApi, "internal error: the ", to_string(shape.kind), " compute order for pp ",
             shape.pp, ", micro_batches ", shape.micro_batches, ", virtual_chunks ", shape.chunks,
             " cannot run to completion (rank ", r, " stuck at step ", pc[r], ")");
  }
  return run;
}

struct PlacedMessage {
  std::tuple<double, bool, int, int> key;  // (production time, is_grad, micro-batch, boundary)
  Instruction instruction;
  bool send = false;
  int anchor = 0;  // send: index of the producing compute step; receive: of the consuming one
  int gap = 0;     // the message goes right before compute step `gap` (after the last one if gap == size)
};

// Interleaves the sends and receives with each rank's compute order (Note [Pipeline p2p order]).
void place_messages(Schedule& schedule, const ComputeOrder& order, const VirtualRun& run, double comm) {
  const int stages = schedule.num_stages();
  std::vector<std::vector<PlacedMessage>> messages(schedule.pp);
  for (int mb = 0; mb < schedule.micro_batches; ++mb) {
    for (int b = 0; b + 1 < stages; ++b) {
      const size_t lower = static_cast<size_t>(mb) * stages + b;
      const int lower_rank = schedule.rank_of(b), upper_rank = schedule.rank_of(b + 1);
      const int lower_chunk = schedule.chunk_of(b), upper_chunk = schedule.chunk_of(b + 1);
      const auto activation_key = std::make_tuple(run.forward_end[lower], false, mb, b);
      messages[lower_rank].push_back(
          {activation_key, {Op::send_activation, mb, lower_chunk, upper_rank}, true, run.forward_index[lower]});
      messages[upper_rank].push_back(
          {activation_key, {Op::recv_activation, mb, upper_chunk, lower_rank}, false, run.forward_index[lower + 1]});
      const auto grad_key = std::make_tuple(run.backward_end[lower + 1], true, mb, b);
      messages[upper_rank].push_back(
          {grad_key, {Op::send_grad, mb, upper_chunk, lower_rank}, true, run.backward_index[lower + 1]});
      messages[lower_rank].push_back(
          {grad_key, {Op::recv_grad, mb, lower_chunk, upper_rank}, false, run.backward_index[lower]});
    }
  }
  for (int r = 0; r < schedule.pp; ++r) {
    auto& mine = messages[r];
    std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    const int steps = static_cast<int>(order[r].size());
    const std::vector<double>& starts = run.start[r];
    int next_gap = steps;
    for (auto it = mine.rbegin(); it != mine.rend(); ++it) {
      if (it->send) {
        it->gap = it->anchor + 1;
      } else {
        const double arrival = std::get<0>(it->key) + comm;
        const auto starting_before = std::lower_bound(starts.begin(), starts.end(), arrival) - starts.begin();
        it->gap = std::min({it->anchor, static_cast<int>(starting_before), next_gap});
      }
      next_gap = it->gap;
    }
    for (size_t j = 1; j < mine.size(); ++j) {
      ZT_CHECK(mine[j - 1].gap <= mine[j].gap, kApi, "internal error: rank ", r, " cannot issue ",
               to_string(mine[j - 1].instruction), " before ", to_string(mine[j].instruction));
    }
    auto& list = schedule.ranks[r];
    size_t j = 0;
    for (int i = 0; i <= steps; ++i) {
      for (; j < mine.size() && mine[j].gap <= i; ++j) list.push_back(mine[j].instruction);
      if (i == steps) break;
      const ComputeStep& step = order[r][i];
      list.push_back({step.backward ? Op::backward : Op::forward, step.micro_batch, step.chunk, -1});
    }
    list.push_back({Op::optimizer_step, -1, -1, -1});
  }
}

void check_config(const ScheduleConfig& c) {
  const char* name = to_string(c.kind);
  ZT_CHECK(c.pp >= 1, kApi, name, " needs pp >= 1 (got ", c.pp, ")");
  ZT_CHECK(c.micro_batches >= 1, kApi, name, " needs micro_batches >= 1 (got ", c.micro_batches, ")");
  ZT_CHECK(c.virtual_chunks >= 1, kApi, name, " needs virtual_chunks >= 1 (got ", c.virtual_chunks, ")");
  if (c.kind == ScheduleKind::interleaved) {
    ZT_CHECK(c.pp >= 2, kApi, name, " needs pp >= 2 (got ", c.pp,
             "): with one rank there is nothing to interleave; use 1F1B");
    ZT_CHECK(c.micro_batches % c.pp == 0, kApi, name, " needs micro_batches (", c.micro_batches, ") divisible by pp (",
             c.pp, ")");
  } else {
    ZT_CHECK(c.virtual_chunks == 1, kApi, name, " takes virtual_chunks = 1 (got ", c.virtual_chunks,
             "); model chunks per rank need the interleaved 1F1B schedule");
  }
  const Costs& p = c.placement_costs;
  ZT_CHECK(std::isfinite(p.forward) && p.forward > 0 && std::isfinite(p.backward) && p.backward > 0, kApi,
           "placement costs need forward and backward > 0 (got ", p.forward, ", ", p.backward, ")");
  ZT_CHECK(std::isfinite(p.comm) && p.comm >= 0, kApi, "placement cost comm must be >= 0 (got ", p.comm, ")");
}

}  // namespace

Schedule make_schedule(const ScheduleConfig& config) {
  check_config(config);
  Schedule schedule;
  schedule.kind = config.kind;
  schedule.pp = config.pp;
  schedule.micro_batches = config.micro_batches;
  schedule.chunks = config.virtual_chunks;
  schedule.ranks.resize(config.pp);
  ComputeOrder order;
  switch (config.kind) {
    case ScheduleKind::gpipe:
      order = gpipe_order(config.pp, config.micro_batches);
      break;
    case ScheduleKind::one_f_one_b:
      order = one_f_one_b_order(config.pp, config.micro_batches);
      break;
    case ScheduleKind::interleaved:
      order = interleaved_order(config.pp, config.micro_batches, config.virtual_chunks);
      break;
  }
  place_messages(schedule, order, run_virtually(schedule, order, config.placement_costs), config.placement_costs.comm);
  return schedule;
}

Schedule make_gpipe(int pp, int micro_batches) {
  return make_schedule({ScheduleKind::gpipe, pp, micro_batches, 1, {}});
}

Schedule make_1f1b(int pp, int micro_batches) {
  return make_schedule({ScheduleKind::one_f_one_b, pp, micro_batches, 1, {}});
}

Schedule make_interleaved_1f1b(int pp, int micro_batches, int virtual_chunks) {
  return make_schedule({ScheduleKind::interleaved, pp, micro_batches, virtual_chunks, {}});
}

bool is_compute(Op op) { return op == Op::forward || op == Op::backward || op == Op::optimizer_step; }
bool is_send(Op op) { return op == Op::send_activation || op == Op::send_grad; }
bool is_recv(Op op) { return op == Op::recv_activation || op == Op::recv_grad; }

std::optional<MessageKey> message_key(const Schedule& schedule, int rank, const Instruction& in) {
  if (is_compute(in.op)) return std::nullopt;
  const int stage = schedule.stage_of(rank, in.chunk);
  const bool grad = in.op == Op::send_grad || in.op == Op::recv_grad;
  // Activations cross from stage b to b + 1, gradients from b + 1 to b (Note [Pipeline message identity]).
  const bool from_lower = in.op == Op::send_activation || in.op == Op::recv_grad;
  const int boundary = from_lower ? stage : stage - 1;
  if (is_send(in.op)) return MessageKey{rank, in.peer, grad, in.micro_batch, boundary};
  return MessageKey{in.peer, rank, grad, in.micro_batch, boundary};
}

const char* to_string(Op op) {
  switch (op) {
    case Op::forward:
      return "forward";
    case Op::backward:
      return "backward";
    case Op::send_activation:
      return "send_activation";
    case Op::recv_activation:
      return "recv_activation";
    case Op::send_grad:
      return "send_grad";
    case Op::recv_grad:
      return "recv_grad";
    case Op::optimizer_step:
      return "optimizer_step";
  }
  return "unknown";
}

const char* to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::gpipe:
      return "GPipe";
    case ScheduleKind::one_f_one_b:
      return "1F1B";
    case ScheduleKind::interleaved:
      return "interleaved 1F1B";
  }
  return "unknown";
}

std::string to_string(const Instruction& in) {
  std::ostringstream out;
  out << to_string(in.op);
  if (in.op == Op::optimizer_step) return out.str();
  out << " mb " << in.micro_batch << " chunk " << in.chunk;
  if (is_send(in.op)) out << " -> rank " << in.peer;
  if (is_recv(in.op)) out << " <- rank " << in.peer;
  return out.str();
}

std::string to_string(const Schedule& schedule) {
  static constexpr const char* kShort[] = {"F", "B", "SA", "RA", "SG", "RG", "OPT"};
  std::ostringstream out;
  out << to_string(schedule.kind) << ": pp " << schedule.pp << ", micro_batches " << schedule.micro_batches
      << ", virtual_chunks " << schedule.chunks << "\n";
  for (size_t r = 0; r < schedule.ranks.size(); ++r) {
    out << "rank " << r << ":";
    for (const Instruction& in : schedule.ranks[r]) {
      out << ' ' << kShort[static_cast<int>(in.op)];
      if (in.op == Op::optimizer_step) continue;
      out << in.micro_batch;
      if (schedule.chunks > 1) out << '.' << in.chunk;
      if (is_send(in.op)) out << '>' << in.peer;
      if (is_recv(in.op)) out << '<' << in.peer;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace zt::pipeline

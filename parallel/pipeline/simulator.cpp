#include "parallel/pipeline/simulator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "core/error.h"

namespace zt::pipeline {
namespace {

constexpr const char* kApi = "pipeline";

std::string where(int rank, size_t index, const Instruction& in) {
  return detail::concat(to_string(in), " (rank ", rank, ", instruction ", index, ")");
}

const char* matching_op(Op op) {
  switch (op) {
    case Op::send_activation:
      return "recv_activation";
    case Op::recv_activation:
      return "send_activation";
    case Op::send_grad:
      return "recv_grad";
    case Op::recv_grad:
      return "send_grad";
    default:
      return "nothing";
  }
}

void check_fields(const Schedule& s, int rank, size_t index, const Instruction& in) {
  if (in.op == Op::optimizer_step) return;
  ZT_CHECK(in.micro_batch >= 0 && in.micro_batch < s.micro_batches, kApi, where(rank, index, in),
           ": micro-batch must be in [0, ", s.micro_batches, ")");
  ZT_CHECK(in.chunk >= 0 && in.chunk < s.chunks, kApi, where(rank, index, in), ": chunk must be in [0, ", s.chunks,
           ")");
  if (is_compute(in.op)) return;
  const int stage = s.stage_of(rank, in.chunk);
  const bool upward = in.op == Op::send_activation || in.op == Op::recv_grad;
  const int neighbour = upward ? stage + 1 : stage - 1;
  ZT_CHECK(neighbour >= 0 && neighbour < s.num_stages(), kApi, where(rank, index, in), ": stage ", stage,
           upward ? " is the last stage" : " is the first stage", "; there is no stage ", neighbour,
           " to exchange with");
  ZT_CHECK(in.peer == s.rank_of(neighbour), kApi, where(rank, index, in), ": names peer ", in.peer,
           ", but its neighbour stage ", neighbour, " is on rank ", s.rank_of(neighbour));
}

void check_matching(const Schedule& s) {
  struct Seen {
    int sends = 0, recvs = 0;
    int rank = 0;
    size_t index = 0;
    Instruction first;
  };
  std::map<MessageKey, Seen> seen;
  for (int r = 0; r < s.pp; ++r) {
    for (size_t i = 0; i < s.ranks[r].size(); ++i) {
      const Instruction& in = s.ranks[r][i];
      const auto key = message_key(s, r, in);
      if (!key) continue;
      Seen& entry = seen[*key];
      if (entry.sends + entry.recvs == 0) entry = {0, 0, r, i, in};
      ++(is_send(in.op) ? entry.sends : entry.recvs);
    }
  }
  for (const auto& [key, entry] : seen) {
    if (entry.sends == 1 && entry.recvs == 1) continue;
    const int other = is_send(entry.first.op) ? key.dst : key.src;
    ZT_CHECK(entry.sends > 0 && entry.recvs > 0, kApi, where(entry.rank, entry.index, entry.first), " has no matching ",
             matching_op(entry.first.op), " on rank ", other);
    ZT_FAIL(kApi, "the ", key.is_grad ? "gradient" : "activation", " of micro-batch ", key.micro_batch,
            " across stages ", key.boundary, "/", key.boundary + 1, " from rank ", key.src, " to rank ", key.dst,
            " is sent ", entry.sends, " times and received ", entry.recvs, " times; each needs exactly one");
  }
}

// Program-order rules within each rank (see validate() in the header).
void check_rank_order(const Schedule& s, int r) {
  const int slots = s.micro_batches * s.chunks;
  // first[op][slot]: index of that op for (micro-batch, chunk), or -1; matching made the messages unique.
  std::vector<std::vector<long>> first(7, std::vector<long>(slots, -1));
  long optimizer = -1, last_backward = -1;
  const auto& list = s.ranks[r];
  for (size_t i = 0; i < list.size(); ++i) {
    const Instruction& in = list[i];
    if (in.op == Op::optimizer_step) {
      ZT_CHECK(optimizer < 0, kApi, "rank ", r, " has a second optimizer_step at instruction ", i);
      optimizer = static_cast<long>(i);
      continue;
    }
    long& slot = first[static_cast<int>(in.op)][in.micro_batch * s.chunks + in.chunk];
    ZT_CHECK(slot < 0, kApi, where(r, i, in), " repeats instruction ", slot, "; each runs once");
    slot = static_cast<long>(i);
    if (in.op == Op::backward) last_backward = static_cast<long>(i);
  }
  ZT_CHECK(optimizer < 0 || optimizer > last_backward, kApi, "rank ", r, " runs optimizer_step at instruction ",
           optimizer, " before its last backward at instruction ", last_backward);
  auto at = [&](Op op, int slot) { return first[static_cast<int>(op)][slot]; };
  for (int mb = 0; mb < s.micro_batches; ++mb) {
    for (int c = 0; c < s.chunks; ++c) {
      const int slot = mb * s.chunks + c, stage = s.stage_of(r, c);
      const long fwd = at(Op::forward, slot), bwd = at(Op::backward, slot);
      const std::string what = detail::concat(" of micro-batch ", mb, " chunk ", c, " (stage ", stage, ")");
      ZT_CHECK(fwd >= 0, kApi, "rank ", r, " never runs the forward", what);
      ZT_CHECK(bwd >= 0, kApi, "rank ", r, " never runs the backward", what);
      ZT_CHECK(fwd < bwd, kApi, "rank ", r, " runs the backward", what, " at instruction ", bwd,
               " before its forward at instruction ", fwd);
      if (stage > 0) {
        const long recv = at(Op::recv_activation, slot), send = at(Op::send_grad, slot);
        ZT_CHECK(recv >= 0 && recv < fwd, kApi, "rank ", r, " runs the forward", what, " at instruction ", fwd,
                 " without receiving its input activation before");
        ZT_CHECK(send > bwd, kApi, "rank ", r, " must send the input gradient", what,
                 " after the backward at instruction ", bwd, " (send_grad at ", send, ")");
      }
      if (stage + 1 < s.num_stages()) {
        const long send = at(Op::send_activation, slot), recv = at(Op::recv_grad, slot);
        ZT_CHECK(send > fwd, kApi, "rank ", r, " must send the output activation", what,
                 " after the forward at instruction ", fwd, " (send_activation at ", send, ")");
        ZT_CHECK(recv >= 0 && recv < bwd, kApi, "rank ", r, " runs the backward", what, " at instruction ", bwd,
                 " without receiving its output gradient before");
      }
    }
  }
}

void check_costs(const Costs& c) {
  for (double v : {c.forward, c.backward, c.comm, c.optimizer}) {
    ZT_CHECK(std::isfinite(v) && v >= 0, kApi, "costs must be finite and >= 0 (got forward ", c.forward, ", backward ",
             c.backward, ", comm ", c.comm, ", optimizer ", c.optimizer, ")");
  }
}

// Runs the lists; see Note [Pipeline p2p order] for why a generated schedule always finishes.
class Runner {
 public:
  Runner(const Schedule& s, const SimulationOptions& o) : s_(s), o_(o), pc_(s.pp, 0), clock_(s.pp, 0.0) {
    result_.pp = s.pp;
    result_.chunks = s.chunks;
    result_.ranks.resize(s.pp);
    in_flight_.assign(s.pp, 0);
  }

  SimulationResult run() {
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < s_.pp; ++r) {
        while (pc_[r] < s_.ranks[r].size() && step(r)) progress = true;
      }
    }
    report_deadlock();
    for (int r = 0; r < s_.pp; ++r) {
      result_.ranks[r].finish = clock_[r];
      result_.makespan = std::max(result_.makespan, clock_[r]);
    }
    double idle = 0;
    for (RankReport& rank : result_.ranks) {
      rank.idle = result_.makespan - rank.busy;
      idle += rank.idle;
    }
    if (result_.makespan > 0) result_.bubble_fraction = idle / (s_.pp * result_.makespan);
    return std::move(result_);
  }

 private:
  void record(int r, double start, double end) {
    result_.ranks[r].events.push_back({start, end, s_.ranks[r][pc_[r]]});
    clock_[r] = end;
    ++pc_[r];
  }

  bool step(int r) {
    const Instruction& in = s_.ranks[r][pc_[r]];
    if (is_compute(in.op)) {
      const Costs& c = o_.costs;
      const double cost = in.op == Op::forward ? c.forward : in.op == Op::backward ? c.backward : c.optimizer;
      RankReport& rank = result_.ranks[r];
      rank.busy += cost;
      if (in.op == Op::forward) rank.peak_in_flight = std::max(rank.peak_in_flight, ++in_flight_[r]);
      if (in.op == Op::backward) --in_flight_[r];
      record(r, clock_[r], clock_[r] + cost);
      return true;
    }
    const MessageKey key = *message_key(s_, r, in);
    if (o_.send_mode == SendMode::eager) {
      if (is_send(in.op)) {
        arrival_[key] = clock_[r] + o_.costs.comm;
        record(r, clock_[r], clock_[r]);
        return true;
      }
      const auto it = arrival_.find(key);
      if (it == arrival_.end()) return false;
      record(r, clock_[r], std::max(clock_[r], it->second));
      return true;
    }
    // Rendezvous: both ends complete together, once both have reached the message.
    const int peer = in.peer;
    if (pc_[peer] >= s_.ranks[peer].size()) return false;
    const Instruction& other = s_.ranks[peer][pc_[peer]];
    if (is_send(other.op) == is_send(in.op) || message_key(s_, peer, other) != key) return false;
    const double done = std::max(clock_[r], clock_[peer]) + o_.costs.comm;
    record(r, clock_[r], done);
    record(peer, clock_[peer], done);
    return true;
  }

  void report_deadlock() const {
    std::ostringstream waits;
    bool stuck = false;
    for (int r = 0; r < s_.pp; ++r) {
      if (r > 0) waits << "; ";
      if (pc_[r] == s_.ranks[r].size()) {
        waits << "rank " << r << " finished";
        continue;
      }
      stuck = true;
      const Instruction& in = s_.ranks[r][pc_[r]];
      waits << "rank " << r << " waits at instruction " << pc_[r] << " (" << to_string(in) << ")";
    }
    ZT_CHECK(!stuck, kApi, "deadlock (", o_.send_mode == SendMode::eager ? "eager" : "blocking",
             " sends): no rank can progress: ", waits.str());
  }

  const Schedule& s_;
  const SimulationOptions& o_;
  std::vector<size_t> pc_;
  std::vector<double> clock_;
  std::vector<int> in_flight_;
  std::map<MessageKey, double> arrival_;  // eager sends issued so far
  SimulationResult result_;
};

// The dependency order in time, independent of how the lists were checked.
void check_times(const Schedule& s, const SimulationResult& result) {
  const int stages = s.num_stages();
  const size_t slots = static_cast<size_t>(s.micro_batches) * stages;
  std::vector<const TimelineEvent*> fwd(slots, nullptr), bwd(slots, nullptr);
  for (int r = 0; r < s.pp; ++r) {
    for (const TimelineEvent& e : result.ranks[r].events) {
      const Op op = e.instruction.op;
      if (op != Op::forward && op != Op::backward) continue;
      const size_t slot = static_cast<size_t>(e.instruction.micro_batch) * stages + s.stage_of(r, e.instruction.chunk);
      (op == Op::forward ? fwd : bwd)[slot] = &e;
    }
  }
  for (int mb = 0; mb < s.micro_batches; ++mb) {
    for (int st = 0; st < stages; ++st) {
      const size_t slot = static_cast<size_t>(mb) * stages + st;
      ZT_CHECK(st == 0 || fwd[slot]->start >= fwd[slot - 1]->end, kApi, "forward of micro-batch ", mb, " on stage ", st,
               " starts at ", fwd[slot]->start, " before stage ", st - 1, "'s ends at ", fwd[slot - 1]->end);
      ZT_CHECK(bwd[slot]->start >= fwd[slot]->end, kApi, "backward of micro-batch ", mb, " on stage ", st,
               " starts before its forward ends");
      ZT_CHECK(st + 1 == stages || bwd[slot]->start >= bwd[slot + 1]->end, kApi, "backward of micro-batch ", mb,
               " on stage ", st, " starts at ", bwd[slot]->start, " before stage ", st + 1, "'s ends at ",
               bwd[slot + 1]->end);
    }
  }
}

}  // namespace

int SimulationResult::max_peak_in_flight() const {
  int peak = 0;
  for (const RankReport& r : ranks) peak = std::max(peak, r.peak_in_flight);
  return peak;
}

void validate(const Schedule& s) {
  ZT_CHECK(s.pp >= 1 && s.micro_batches >= 1 && s.chunks >= 1, kApi, "a schedule needs pp, micro_batches and ",
           "chunks >= 1 (got ", s.pp, ", ", s.micro_batches, ", ", s.chunks, ")");
  ZT_CHECK(static_cast<int>(s.ranks.size()) == s.pp, kApi, "schedule for pp ", s.pp, " has lists for ", s.ranks.size(),
           " ranks");
  for (int r = 0; r < s.pp; ++r) {
    for (size_t i = 0; i < s.ranks[r].size(); ++i) check_fields(s, r, i, s.ranks[r][i]);
  }
  check_matching(s);
  for (int r = 0; r < s.pp; ++r) check_rank_order(s, r);
}

SimulationResult simulate(const Schedule& schedule, const SimulationOptions& options) {
  validate(schedule);
  check_costs(options.costs);
  SimulationResult result = Runner(schedule, options).run();
  check_times(schedule, result);
  return result;
}

double analytic_bubble_fraction(ScheduleKind kind, int pp, int micro_batches, int virtual_chunks, const Costs& costs) {
  ZT_CHECK(pp >= 1 && micro_batches >= 1 && virtual_chunks >= 1, kApi, "analytic bubble needs pp, ",
           "micro_batches and virtual_chunks >= 1 (got ", pp, ", ", micro_batches, ", ", virtual_chunks, ")");
  ZT_CHECK(kind == ScheduleKind::interleaved || virtual_chunks == 1, kApi, to_string(kind),
           " takes virtual_chunks = 1 (got ", virtual_chunks, ")");
  check_costs(costs);
  const double f = costs.forward, b = costs.backward;
  const double work = static_cast<double>(micro_batches) * virtual_chunks * (f + b) + costs.optimizer;
  const double bubble = (pp - 1) * (f + b + 2 * costs.comm);
  return work + bubble > 0 ? bubble / (work + bubble) : 0.0;
}

}  // namespace zt::pipeline

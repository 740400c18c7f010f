// Pipeline schedules as data: for each pipeline rank, the ordered list of instructions it runs in one
// optimizer step. The executor only follows the list; the simulator (simulator.h) checks a list for
// matching sends and receives, dependency order and deadlock, and reports its bubble, before anything runs.
//
// Note [Pipeline stages and chunks]
// The model is cut into S = pp * v contiguous stages (partition.h). Rank r holds v model chunks; chunk c on
// rank r is stage s = c * pp + r (Megatron's virtual stages), so with v = 1 rank r is simply stage r, and
// with v > 1 stage s + 1 always lives on the next rank (mod pp): the activations travel round the ring v times.
// Instructions name the *local* chunk; stage_of() maps it to the global stage.
//
// Note [Pipeline message identity]
// A message crosses the boundary between stage b and stage b + 1: the activation of micro-batch i goes up
// (b -> b + 1), its gradient comes down (b + 1 -> b). A message is identified by (src rank, dst rank, kind,
// micro-batch, boundary b); the simulator matches sends to receives by this key (message_key()).
#pragma once

#include <compare>
#include <optional>
#include <string>
#include <vector>

namespace zt::pipeline {

enum class Op { forward, backward, send_activation, recv_activation, send_grad, recv_grad, optimizer_step };

struct Instruction {
  Op op = Op::forward;
  int micro_batch = -1;  // -1 for optimizer_step
  int chunk = -1;        // local model chunk (Note [Pipeline stages and chunks]); -1 for optimizer_step
  int peer = -1;         // the other rank of a send or receive; -1 for compute

  bool operator==(const Instruction&) const = default;
};

bool is_compute(Op op);  // forward, backward, optimizer_step
bool is_send(Op op);
bool is_recv(Op op);

enum class ScheduleKind {
  gpipe,        // all forwards, then all backwards: m activations in flight per rank
  one_f_one_b,  // PipeDream-flush: warm-up forwards, steady one-forward-one-backward, cool-down backwards
  interleaved,  // Megatron's interleaved 1F1B over v model chunks per rank; a bubble v times smaller
};

// Time per instruction in arbitrary units (the simulator's default: f = 1, b = 2, no communication cost).
struct Costs {
  double forward = 1;    // one forward of one micro-batch through one model chunk
  double backward = 2;   // its backward
  double comm = 0;       // from a send being issued to its data being at the receiver
  double optimizer = 0;  // the optimizer step at the end of each rank's list
};

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::one_f_one_b;
  int pp = 1;              // pipeline ranks
  int micro_batches = 1;   // per optimizer step
  int virtual_chunks = 1;  // model chunks per rank; > 1 only for interleaved
  // Where sends and receives go in each list (never the order of the computations) comes from a virtual
  // run with these costs: see Note [Pipeline p2p order]. Any order produced is deadlock-free under any
  // real costs; it is free of extra waiting when the real costs match these.
  Costs placement_costs;
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::one_f_one_b;
  int pp = 1;
  int micro_batches = 1;
  int chunks = 1;                               // virtual chunks per rank
  std::vector<std::vector<Instruction>> ranks;  // ranks[r]: rank r's instructions in order

  int num_stages() const { return pp * chunks; }
  int stage_of(int rank, int chunk) const { return chunk * pp + rank; }
  int rank_of(int stage) const { return stage % pp; }
  int chunk_of(int stage) const { return stage / pp; }
};

// Builds the schedule; throws zt::Error naming the bad input and what is accepted.
Schedule make_schedule(const ScheduleConfig& config);
Schedule make_gpipe(int pp, int micro_batches);
Schedule make_1f1b(int pp, int micro_batches);
Schedule make_interleaved_1f1b(int pp, int micro_batches, int virtual_chunks);

// Note [Pipeline message identity].
struct MessageKey {
  int src = 0;
  int dst = 0;
  bool is_grad = false;
  int micro_batch = 0;
  int boundary = 0;  // the message crosses between stage `boundary` and `boundary + 1`
  auto operator<=>(const MessageKey&) const = default;
};
// The key of a send or receive instruction on `rank`; nullopt for compute instructions. Does not check
// that the stage has a neighbour in that direction (the simulator's validate() does).
std::optional<MessageKey> message_key(const Schedule& schedule, int rank, const Instruction& instruction);

const char* to_string(Op op);
const char* to_string(ScheduleKind kind);
std::string to_string(const Instruction& instruction);  // e.g. "send_activation mb 3 chunk 0 -> rank 2"
std::string to_string(const Schedule& schedule);        // one line per rank, compact

}  // namespace zt::pipeline

#include "parallel/pipeline/executor.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/cuda_support.h"
#include "core/error.h"
#include "parallel/pipeline/timeline.h"

namespace zt::pipeline {

namespace {

constexpr const char* kApi = "pipeline";

double now_us() {
  using namespace std::chrono;
  return duration<double, std::micro>(system_clock::now().time_since_epoch()).count();
}

int tag(MessageTag t) { return static_cast<int>(t); }

}  // namespace

Executor::Executor(Schedule schedule, comm::Communicator& pp, const StagePlan& plan, ChunkModel& model,
                   StageSource& source, zero::ZeroEngine& engine)
    : schedule_(std::move(schedule)),
      pp_(pp),
      plan_(plan),
      model_(model),
      source_(source),
      engine_(engine),
      device_(pp.device()) {
  validate(schedule_);
  ZT_CHECK(schedule_.pp == pp.size(), kApi, "the schedule is for pp ", schedule_.pp, " but the pipeline group has ",
           pp.size(), " ranks");
  ZT_CHECK(plan.pp() == pp.size() && plan.rank() == pp.rank(), kApi, "the stage plan is for rank ", plan.rank(), " of ",
           plan.pp(), " but this is rank ", pp.rank(), " of a pipeline group of ", pp.size());
  ZT_CHECK(schedule_.chunks == plan.num_chunks(), kApi, "the schedule runs ", schedule_.chunks,
           " model chunks per rank but the stage plan has ", plan.num_chunks());
  ZT_CHECK(engine.config().stage <= 2, kApi, "ZeRO stage ", engine.config().stage,
           " is not supported with pipeline parallelism; use parallel.zero_stage 0, 1 or 2");
  slots_.resize(static_cast<size_t>(schedule_.micro_batches) * schedule_.chunks);
  const std::vector<Instruction>& list = schedule_.ranks[static_cast<size_t>(pp.rank())];
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].op != Op::backward) continue;
    last_backward_ = static_cast<int>(i);
    if (plan.chunk(list[i].chunk).first) last_first_backward_ = static_cast<int>(i);
  }
  // Note [Pipeline tied embedding]: the head gradient's receive must be the rank's last message.
  if (pp.size() > 1 && plan.holds_first_stage()) {
    for (size_t i = static_cast<size_t>(last_first_backward_) + 1; i < list.size(); ++i) {
      ZT_CHECK(is_compute(list[i].op), kApi, "internal error: pipeline rank 0 has ", to_string(list[i]),
               " after its last backward of stage 0; the tied embedding's gradient must come last");
    }
  }
}

Executor::Slot& Executor::slot(int micro_batch, int chunk) {
  return slots_[static_cast<size_t>(micro_batch) * schedule_.chunks + static_cast<size_t>(chunk)];
}

void Executor::forward(const Instruction& in, bool training, std::vector<Tensor>& losses) {
  Slot& s = slot(in.micro_batch, in.chunk);
  const ChunkPlacement& p = plan_.chunk(in.chunk);
  ZT_CHECK(p.first || s.input.defined(), kApi, "internal error: ", to_string(in), " before its activation arrived");
  MemoryCategoryScope scope(MemoryCategory::activations);
  s.output = model_.forward(in.chunk, in.micro_batch, s.input, training);
  if (p.last) {
    ZT_CHECK(s.output.numel() == 1, kApi, "the last stage's forward must return the scalar loss, got ",
             s.output.describe());
    losses.push_back(s.output.detach());  // read after the step: no host sync per micro-batch
  }
}

void Executor::backward(const Instruction& in, double loss_scale, bool last) {
  Slot& s = slot(in.micro_batch, in.chunk);
  const ChunkPlacement& p = plan_.chunk(in.chunk);
  ZT_CHECK(s.output.defined(), kApi, "internal error: ", to_string(in), " without its forward");
  engine_.begin_micro_batch(last);
  {
    MemoryCategoryScope scope(MemoryCategory::activations);
    if (p.last) {
      zt::backward(mul_scalar(s.output, loss_scale / schedule_.micro_batches));
    } else {
      ZT_CHECK(s.grad_output.defined(), kApi, "internal error: ", to_string(in), " before its gradient arrived");
      zt::backward(s.output, s.grad_output);
    }
  }
  engine_.end_backward();
  if (!p.first) {
    s.grad_input = s.input.grad();
    ZT_CHECK(s.grad_input.defined(), kApi, "stage ", p.stage, " produced no gradient for its input in ", to_string(in),
             ": its output does not depend on it");
  }
  s.input = Tensor();
  s.output = Tensor();
  s.grad_output = Tensor();
}

void Executor::send(const Instruction& in) {
  Slot& s = slot(in.micro_batch, in.chunk);
  const bool activation = in.op == Op::send_activation;
  Tensor& t = activation ? s.output : s.grad_input;
  ZT_CHECK(t.defined(), kApi, "internal error: ", to_string(in), " before the tensor exists");
  sends_.push_back(pp_.send(contiguous(t.detach()), in.peer, tag(activation ? MessageTag::activation : MessageTag::grad)));
  if (!activation) t = Tensor();  // the send keeps the buffer alive until it completes
}

void Executor::receive(const Instruction& in) {
  Slot& s = slot(in.micro_batch, in.chunk);
  const bool activation = in.op == Op::recv_activation;
  Tensor& t = activation ? s.input : s.grad_output;
  ZT_CHECK(!t.defined(), kApi, "internal error: ", to_string(in), " arrives twice");
  MemoryCategoryScope scope(MemoryCategory::activations);
  Tensor buffer = empty(model_.activation_shape(), model_.activation_dtype(), device_);
  pp_.recv(buffer, in.peer, tag(activation ? MessageTag::activation : MessageTag::grad))->wait();
  if (activation) buffer.set_requires_grad(true);
  t = buffer;
}

void Executor::reap_sends(bool wait_all) {
  if (wait_all) {
    for (auto& w : sends_) w->wait();
    sends_.clear();
    return;
  }
  std::erase_if(sends_, [](const comm::WorkPtr& w) { return w->is_completed(); });
}

double Executor::broadcast_loss(double local_sum, int micro_batches) {
  const double mine = plan_.holds_last_stage() ? local_sum / micro_batches : 0.0;
  if (pp_.size() == 1) return mine;
  Tensor t = full({1}, mine, DType::f64, device_);
  pp_.all_reduce(t, comm::ReduceOp::sum)->wait();
  return t.item();
}

StepReport Executor::train_step(const StepArgs& args) {
  const std::vector<Instruction>& list = schedule_.ranks[static_cast<size_t>(pp_.rank())];
  const bool sync_gpu = args.record_events && device_.is_cuda();
  StepReport report;
  std::vector<Tensor> losses;
  const double step_start = now_us();
  auto record = [&](const Instruction& in, double start, double& bucket) {
    if (sync_gpu) cuda::synchronize(device_.index);
    const double end = now_us();
    bucket += (end - start) * 1e-6;
    if (args.record_events) report.events.push_back({start, end, in});
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const Instruction& in = list[i];
    double start = now_us();
    switch (in.op) {
      case Op::forward:
        forward(in, true, losses);
        record(in, start, report.timings.forward);
        break;
      case Op::backward:
        if (static_cast<int>(i) == last_first_backward_ && pp_.size() > 1) {
          source_.receive_head_grad();  // Note [Pipeline tied embedding]
          record({Op::recv_grad, in.micro_batch, in.chunk, plan_.last_stage_rank()}, start, report.timings.recv);
          start = now_us();
        }
        backward(in, args.loss_scale, static_cast<int>(i) == last_backward_);
        record(in, start, report.timings.backward);
        break;
      case Op::send_activation:
      case Op::send_grad:
        send(in);
        record(in, start, report.timings.send);
        break;
      case Op::recv_activation:
      case Op::recv_grad:
        receive(in);
        record(in, start, report.timings.recv);
        break;
      case Op::optimizer_step:
        source_.send_head_grad();
        report.optimizer = engine_.step(args.lr, args.max_grad_norm, args.loss_scale);
        reap_sends(true);
        source_.wait_sends();
        source_.sync_head();
        record(in, start, report.timings.optimizer);
        break;
    }
    reap_sends(false);
  }
  reap_sends(true);
  double loss_sum = 0;
  for (const Tensor& l : losses) loss_sum += l.item();
  report.loss = broadcast_loss(loss_sum, schedule_.micro_batches);
  report.timings.total = (now_us() - step_start) * 1e-6;
  return report;
}

double Executor::evaluate(int micro_batches) {
  ZT_CHECK(micro_batches >= 1, kApi, "evaluate needs micro_batches >= 1 (got ", micro_batches, ")");
  NoGradGuard no_grad;
  MemoryCategoryScope scope(MemoryCategory::activations);
  double loss_sum = 0;
  // Messages in (micro-batch, boundary) order on every rank: one global order, so no deadlock.
  for (int mb = 0; mb < micro_batches; ++mb) {
    for (int c = 0; c < plan_.num_chunks(); ++c) {
      const ChunkPlacement& p = plan_.chunk(c);
      Tensor input;
      if (!p.first) {
        input = empty(model_.activation_shape(), model_.activation_dtype(), device_);
        pp_.recv(input, schedule_.rank_of(p.stage - 1), tag(MessageTag::activation))->wait();
      }
      Tensor out = model_.forward(c, mb, input, false);
      if (p.last) {
        loss_sum += out.item();
      } else {
        sends_.push_back(pp_.send(contiguous(out), schedule_.rank_of(p.stage + 1), tag(MessageTag::activation)));
      }
      reap_sends(false);
    }
  }
  reap_sends(true);
  return broadcast_loss(loss_sum, micro_batches);
}

// ---- Chrome trace ---------------------------------------------------------------------------------

void write_pipeline_trace(const std::string& path, const std::vector<ExecutedInstruction>& events,
                          const RankTraceInfo& info, comm::Communicator& world) {
  constexpr int kFields = 6;  // start, end, op, micro-batch, chunk, peer
  const Device dev = world.device();
  const int n = world.size();
  Tensor count = from_vector(std::vector<int64_t>{static_cast<int64_t>(events.size()), info.dp_rank, info.pp_rank,
                                                  info.pp, info.chunks},
                             {5}, dev);
  Tensor counts = empty({5 * static_cast<int64_t>(n)}, DType::i64, dev);
  world.all_gather(count, counts)->wait();
  const std::vector<int64_t> meta = counts.to_vector<int64_t>();
  int64_t most = 1;
  for (int r = 0; r < n; ++r) most = std::max(most, meta[static_cast<size_t>(5 * r)]);
  std::vector<double> mine(static_cast<size_t>(most * kFields), 0.0);
  for (size_t e = 0; e < events.size(); ++e) {
    const Instruction& in = events[e].instruction;
    const double fields[kFields] = {events[e].start_us, events[e].end_us, static_cast<double>(in.op),
                                    static_cast<double>(in.micro_batch), static_cast<double>(in.chunk),
                                    static_cast<double>(in.peer)};
    std::copy(fields, fields + kFields, mine.begin() + static_cast<std::ptrdiff_t>(e * kFields));
  }
  Tensor all = empty({most * kFields * n}, DType::f64, dev);
  world.all_gather(from_vector(mine, {most * kFields}, dev), all)->wait();
  if (world.rank() != 0) return;

  const std::vector<double> data = all.to_vector<double>();
  double origin = std::numeric_limits<double>::infinity();
  for (int r = 0; r < n; ++r)
    for (int64_t e = 0; e < meta[static_cast<size_t>(5 * r)]; ++e)
      origin = std::min(origin, data[static_cast<size_t>((r * most + e) * kFields)]);
  if (!std::isfinite(origin)) origin = 0;
  // One SimulationResult per rank, rendered by the simulator's writer, then renumbered by world rank.
  nlohmann::json merged = nlohmann::json::array();
  for (int r = 0; r < n; ++r) {
    const int pp = static_cast<int>(meta[static_cast<size_t>(5 * r + 3)]);
    const int pp_rank = static_cast<int>(meta[static_cast<size_t>(5 * r + 2)]);
    SimulationResult one;
    one.pp = pp;
    one.chunks = static_cast<int>(meta[static_cast<size_t>(5 * r + 4)]);
    one.ranks.resize(static_cast<size_t>(pp));
    RankReport& rr = one.ranks[static_cast<size_t>(pp_rank)];
    for (int64_t e = 0; e < meta[static_cast<size_t>(5 * r)]; ++e) {
      const double* f = &data[static_cast<size_t>((r * most + e) * kFields)];
      Instruction in{static_cast<Op>(static_cast<int>(f[2])), static_cast<int>(f[3]), static_cast<int>(f[4]),
                     static_cast<int>(f[5])};
      rr.events.push_back({f[0] - origin, f[1] - origin, in});
      one.makespan = std::max(one.makespan, f[1] - origin);
    }
    const nlohmann::json trace = nlohmann::json::parse(chrome_trace_json(one, 1.0));
    const std::string name = "rank " + std::to_string(r) + " (dp " + std::to_string(meta[static_cast<size_t>(5 * r + 1)]) +
                             ", pp " + std::to_string(pp_rank) + ")";
    for (nlohmann::json ev : trace.at("traceEvents")) {
      if (ev.at("pid").get<int>() != pp_rank) continue;  // the writer names every pipeline rank; keep this one's
      ev["pid"] = r;
      if (ev.at("name") == "process_name") ev["args"]["name"] = name;
      if (ev.at("name") == "process_sort_index") ev["args"]["sort_index"] = r;
      merged.push_back(std::move(ev));
    }
  }
  const nlohmann::json out = {{"traceEvents", std::move(merged)}, {"displayTimeUnit", "ms"}};
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  ZT_CHECK(file.is_open(), kApi, "cannot open '", path, "' to write the pipeline trace: ", std::strerror(errno));
  file << out.dump();
  file.close();
  ZT_CHECK(!file.fail(), kApi, "writing the pipeline trace to '", path, "' failed: ", std::strerror(errno));
}

}  // namespace zt::pipeline

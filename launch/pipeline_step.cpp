#include "launch/pipeline_step.h"

#include <algorithm>
#include <fmt/format.h>

#include "models/checkpointing.h"
#include "parallel/pipeline/partition.h"
#include "parallel/tensor_parallel/cross_entropy.h"

namespace zt {

namespace {

// parallel.trace records this many steps from the run's start (the first one includes warm-up).
constexpr int kTracedSteps = 3;

pipeline::ScheduleKind schedule_kind_of(const TrainConfig& cfg) {
  switch (pipeline_schedule(cfg)) {
    case PipelineScheduleKind::gpipe: return pipeline::ScheduleKind::gpipe;
    case PipelineScheduleKind::one_f_one_b: return pipeline::ScheduleKind::one_f_one_b;
    case PipelineScheduleKind::interleaved: return pipeline::ScheduleKind::interleaved;
  }
  return pipeline::ScheduleKind::one_f_one_b;
}

// The tied embedding as this rank holds it: this tp rank's vocabulary rows (Note [Pipeline with
// tensor parallelism] in parallel/pipeline/stage.h).
Shape head_shape(const Gpt& model) {
  const GptConfig& c = model.config();
  return {c.padded_vocab / model.tensor_parallel().size(), c.d_model};
}

double average_over(comm::Communicator& group, double value) {
  if (group.size() == 1) return value;
  Tensor t = full({1}, value, DType::f64, group.device());
  group.all_reduce(t, comm::ReduceOp::avg)->wait();
  return t.item();
}

}  // namespace

// ---- GptChunks ---------------------------------------------------------------------------------

GptChunks::GptChunks(Gpt& model, const pipeline::StagePlan& plan, ParameterSource& source, int64_t micro_batch_size,
                     const CheckpointPolicy& checkpointing)
    : model_(model),
      plan_(plan),
      source_(source),
      micro_batch_size_(micro_batch_size),
      checkpointing_(checkpointing) {
  checkpointing.validate();
  ZT_CHECK(plan.num_blocks() == model.config().n_layer, "pipeline", "the stage plan splits ", plan.num_blocks(),
           " blocks but the model has n_layer = ", model.config().n_layer);
  ZT_CHECK(micro_batch_size >= 1, "pipeline", "micro_batch_size must be >= 1 (got ", micro_batch_size, ")");
}

void GptChunks::set_micro_batches(std::vector<Tensor> inputs, std::vector<Tensor> targets, uint64_t seed,
                                  uint64_t step) {
  ZT_CHECK(inputs.size() == targets.size(), "pipeline", inputs.size(), " input micro-batches but ", targets.size(),
           " target micro-batches");
  const Shape want = {micro_batch_size_, model_.config().seq_len};
  for (size_t i = 0; i < inputs.size(); ++i) {
    ZT_CHECK(inputs[i].shape() == want && targets[i].shape() == want, "pipeline", "micro-batch ", i, " has inputs ",
             inputs[i].describe(), " and targets ", targets[i].describe(), "; every stage expects ", shape_str(want),
             " (train.micro_batch_size x model.seq_len)");
  }
  inputs_ = std::move(inputs);
  targets_ = std::move(targets);
  seed_ = seed;
  step_ = step;
}

Shape GptChunks::activation_shape() const {
  // Note [Pipeline with tensor parallelism]: under sequence parallelism the rank's T / tp positions.
  const tp::TpGroup& tp = model_.tensor_parallel();
  const int64_t T = model_.config().seq_len;
  return {micro_batch_size_, tp.splits_sequence() ? T / tp.size() : T, model_.config().d_model};
}

Tensor GptChunks::loss(const Tensor& hidden, const Tensor& targets) {
  Tensor x = model_.final_norm(source_, hidden);
  const tp::TpGroup& tp = model_.tensor_parallel();
  if (!(tp.splits_sequence() && plan_.holds_head_copy())) return model_.loss_from_hidden(source_, x, targets);
  // Gpt::loss_from_hidden would pass unit 0's replicated parameters through copy_to_tp under
  // sequence parallelism, matching them by the model's own unit-0 parameters, which this stage does
  // not hold: the head copy is the one parameter used here, and it is vocabulary-split (not
  // replicated), so the same computation needs no copy_to_tp.
  Tensor head = source_.acquire(0)[0];
  Tensor logits = tp::column_parallel_linear(x, head, Tensor(), tp);  // [B, T, Vp / tp]
  source_.release(0);
  const int64_t rows = logits.size(0) * logits.size(1);
  return tp::vocab_parallel_cross_entropy(reshape(logits, {rows, logits.size(2)}), reshape(targets, {rows}), *tp.comm,
                                          -100, model_.config().vocab_size);
}

Tensor GptChunks::forward(int chunk, int micro_batch, const Tensor& input, bool training) {
  ZT_CHECK(micro_batch >= 0 && static_cast<size_t>(micro_batch) < inputs_.size(), "pipeline", "micro-batch ",
           micro_batch, " was not given (", inputs_.size(), " micro-batches set)");
  const pipeline::ChunkPlacement& p = plan_.chunk(chunk);
  const StepRng rng{seed_, step_, static_cast<uint64_t>(micro_batch)};
  Tensor x = p.first ? model_.embed(source_, inputs_[static_cast<size_t>(micro_batch)], rng, training) : input;
  // Checkpointed segments keep a copy and replay it in backward: it captures only this object (which
  // outlives the step) and values.
  const BlockFn block = [this, rng, training](int layer, const Tensor& h) {
    return model_.block(source_, layer, h, rng, training);
  };
  x = run_blocks(p.first_block, p.end_block - p.first_block, x, block, checkpointing_, training);
  if (!p.last) return x;
  return loss(x, targets_[static_cast<size_t>(micro_batch)]);
}

// ---- PipelineStep ------------------------------------------------------------------------------

PipelineStep::PipelineStep(Gpt& model, zero::ZeroEngine& engine, const pipeline::StagePlan& plan,
                           comm::Communicator& pp, const PipelineStepOptions& options)
    : options_(options),
      source_(engine, plan, pp, head_shape(model), model.config().compute_dtype, pp.device()),
      chunks_(model, plan, source_, options.micro_batch_size, options.checkpointing),
      executor_(pipeline::make_schedule({options.schedule, plan.pp(), options.micro_batches, plan.num_chunks(), {}}),
                pp, plan, chunks_, source_, engine) {
  // Note [Global gradient norm]: every stage's parameters, and under tensor parallelism every tp
  // rank's shards (replicated ones counted on tp rank 0).
  const tp::TpGroup& tp = model.tensor_parallel();
  std::vector<comm::Communicator*> norm_groups{&pp};
  if (tp.active()) norm_groups.push_back(tp.comm);
  engine.set_grad_norm_groups(std::move(norm_groups), tp.rank());
  source_.sync_head();
}

pipeline::StepReport PipelineStep::train_step(int64_t step, std::vector<Tensor> inputs, std::vector<Tensor> targets,
                                              const pipeline::StepArgs& args) {
  ZT_CHECK(static_cast<int>(inputs.size()) == options_.micro_batches, "pipeline", "the step needs ",
           options_.micro_batches, " micro-batches, got ", inputs.size());
  chunks_.set_micro_batches(std::move(inputs), std::move(targets), options_.seed, static_cast<uint64_t>(step));
  return executor_.train_step(args);
}

double PipelineStep::evaluate(std::vector<Tensor> inputs, std::vector<Tensor> targets) {
  const int n = static_cast<int>(inputs.size());
  chunks_.set_micro_batches(std::move(inputs), std::move(targets), options_.seed, 0);
  return executor_.evaluate(n);
}

// ---- PipelineTraining --------------------------------------------------------------------------

pipeline::StagePlan stage_plan_for(const TrainConfig& cfg, int pp_rank) {
  const int pp = cfg.parallel().pp(), chunks = pp * cfg.parallel().virtual_stages();
  const pipeline::StagePartition partition =
      pipeline::partition_from_sizes(blocks_per_chunk(cfg), static_cast<int>(cfg.model().n_layer()), chunks);
  return pipeline::StagePlan(partition, pp, pp_rank);
}

PipelineTraining::PipelineTraining(const TrainConfig& cfg, comm::Communicator& world)
    : cfg_(cfg),
      world_(world),
      mesh_(world, MeshShape{cfg.parallel().dp(), cfg.parallel().tp(), cfg.parallel().pp()}),
      plan_(stage_plan_for(cfg, mesh_.coord().pp)),
      device_(world.device()) {
  ZT_CHECK(cfg.parallel().zero_stage() <= 2, "train", "parallel.zero_stage 3 with parallel.pp (", cfg.parallel().pp(),
           ") > 1 is not supported: ZeRO-3 gathers each unit around one backward of the whole model; use "
           "parallel.zero_stage 0, 1 or 2 with pipeline parallelism");
}

PipelineTraining::~PipelineTraining() = default;

CheckpointPlacement PipelineTraining::checkpoint_placement() const {
  return CheckpointPlacement{mesh_.coord().pp, mesh_.shape().pp};
}

void PipelineTraining::attach(Gpt& model, zero::ZeroEngine& engine, const CheckpointPolicy& checkpointing) {
  PipelineStepOptions o;
  o.schedule = schedule_kind_of(cfg_);
  o.micro_batches = cfg_.train().grad_accumulation();
  o.micro_batch_size = cfg_.train().micro_batch_size();
  o.checkpointing = checkpointing;
  o.seed = cfg_.train().seed();
  step_ = std::make_unique<PipelineStep>(model, engine, plan_, mesh_.pp(), o);
}

void PipelineTraining::sync_tied_embedding() { step_->sync_tied_embedding(); }

void PipelineTraining::read(data::DataLoader& loader, int64_t micro_batches, std::vector<Tensor>& inputs,
                            std::vector<Tensor>& targets) {
  // Every stage reads the replica's micro-batches (cheap), so all loaders stay at one position.
  const int64_t B = cfg_.train().micro_batch_size(), T = cfg_.model().seq_len();
  data::Batch batch;
  for (int64_t i = 0; i < micro_batches; ++i) {
    loader.next(batch);
    inputs.push_back(from_vector(batch.inputs, {B, T}, device_));
    targets.push_back(from_vector(batch.targets, {B, T}, device_));
  }
}

PipelineTraining::Outcome PipelineTraining::step(data::DataLoader& loader, int64_t step, double lr,
                                                 double max_grad_norm, double loss_scale) {
  ZT_CHECK(step_ != nullptr, "train", "PipelineTraining::step before attach()");
  std::vector<Tensor> inputs, targets;
  read(loader, cfg_.train().grad_accumulation(), inputs, targets);
  pipeline::StepArgs args;
  args.lr = lr;
  args.max_grad_norm = max_grad_norm;
  args.loss_scale = loss_scale;
  args.record_events = !cfg_.parallel().trace().empty() && traced_steps_ < kTracedSteps;
  pipeline::StepReport r = step_->train_step(step, std::move(inputs), std::move(targets), args);
  if (args.record_events) {
    trace_events_.insert(trace_events_.end(), r.events.begin(), r.events.end());
    if (++traced_steps_ == kTracedSteps) write_trace();
  }
  timings_.forward += r.timings.forward;
  timings_.backward += r.timings.backward;
  timings_.optimizer += r.timings.optimizer;
  timings_.send += r.timings.send;
  timings_.recv += r.timings.recv;
  timings_.total += r.timings.total;
  Outcome out;
  out.loss = average_over(mesh_.dp(), r.loss);
  out.optimizer = r.optimizer;
  out.timings = r.timings;
  return out;
}

double PipelineTraining::evaluate(data::DataLoader& loader, int64_t micro_batches) {
  std::vector<Tensor> inputs, targets;
  read(loader, micro_batches, inputs, targets);
  return average_over(mesh_.dp(), step_->evaluate(std::move(inputs), std::move(targets)));
}

int64_t PipelineTraining::num_parameters(const Gpt& model) const {
  Tensor t = full({1}, static_cast<double>(model.num_parameters()), DType::f64, device_);
  mesh_.pp().all_reduce(t, comm::ReduceOp::sum)->wait();
  return static_cast<int64_t>(t.item());
}

void PipelineTraining::write_trace() {
  if (trace_written_ || cfg_.parallel().trace().empty()) return;
  pipeline::RankTraceInfo info{mesh_.coord().dp, mesh_.coord().pp, mesh_.shape().pp, plan_.num_chunks()};
  pipeline::write_pipeline_trace(cfg_.parallel().trace(), trace_events_, info, world_);
  trace_written_ = true;
  trace_events_.clear();
}

void PipelineTraining::finish() { write_trace(); }

std::string PipelineTraining::timing_summary() {
  const pipeline::StepTimings& t = timings_;
  Tensor mine = from_vector(std::vector<double>{t.forward, t.backward, t.optimizer, t.total}, {4}, device_);
  Tensor all = empty({4 * static_cast<int64_t>(mesh_.shape().pp)}, DType::f64, device_);
  mesh_.pp().all_gather(mine, all)->wait();
  const std::vector<double> v = all.to_vector<double>();
  std::string line = "pipeline time per rank:";
  for (int r = 0; r < mesh_.shape().pp; ++r) {
    const double* x = &v[static_cast<size_t>(4 * r)];
    const double total = std::max(x[3], 1e-12);
    line += fmt::format("{} pp {}: forward {:.0f}%, backward {:.0f}%, optimizer {:.0f}%, idle {:.0f}%", r ? " |" : "",
                        r, 100 * x[0] / total, 100 * x[1] / total, 100 * x[2] / total,
                        100 * (total - x[0] - x[1] - x[2]) / total);
  }
  return line;
}

}  // namespace zt

#include "launch/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <fmt/format.h>

#include "launch/checkpoint.h"
#include "launch/data/embedded_corpus.h"
#include "launch/data/loader.h"
#include "launch/data/tokenizer.h"
#include "launch/estimate.h"
#include "launch/gemm_tuning_sync.h"
#include "launch/input_staging.h"
#include "launch/model_parallel.h"
#include "launch/pipeline_step.h"
#include "launch/progress.h"
#include "models/gpt.h"
#include "models/hf_gpt2.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "parallel/zero/zero_engine.h"

namespace zt {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

DType compute_dtype_of(Precision p) {
  switch (p) {
    case Precision::f32: return DType::f32;
    case Precision::bf16: return DType::bf16;
    case Precision::fp16: return DType::f16;
  }
  return DType::f32;
}

std::unique_ptr<data::Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte" || spec.empty()) return std::make_unique<data::ByteTokenizer>();
  // "gpt2:ENCODER_JSON,VOCAB_BPE" or a folder holding encoder.json and vocab.bpe.
  std::string enc, bpe;
  if (spec.starts_with("gpt2:")) {
    const std::string rest = spec.substr(5);
    const size_t comma = rest.find(',');
    ZT_CHECK(comma != std::string::npos, "train", "data.tokenizer '", spec,
             "': expected gpt2:ENCODER_JSON,VOCAB_BPE");
    enc = rest.substr(0, comma);
    bpe = rest.substr(comma + 1);
  } else {
    enc = (std::filesystem::path(spec) / "encoder.json").string();
    bpe = (std::filesystem::path(spec) / "vocab.bpe").string();
  }
  return data::Gpt2BpeTokenizer::load(enc, bpe);
}

struct DataSources {
  data::TokenSource train, val;
  bool has_val = false;
};

DataSources open_data(const TrainConfig& cfg, const data::Tokenizer& tok) {
  DataSources d;
  const auto& dc = cfg.data();
  if (dc.train() == "embedded:") {
    auto corpus = data::open_embedded_corpus(tok);
    d.train = std::move(corpus.train);
    if (dc.val().empty() || dc.val() == "embedded:") {
      d.val = std::move(corpus.val);
      d.has_val = true;
    }
  } else {
    d.train = data::TokenSource::from_glob(dc.train());
  }
  if (!dc.val().empty() && dc.val() != "embedded:") {
    d.val = data::TokenSource::from_glob(dc.val());
    d.has_val = true;
  }
  return d;
}

// The mean of a per-rank value over the group.
double average(comm::Communicator& world, double value) {
  if (world.size() == 1) return value;
  Tensor t = full({1}, value, DType::f64, world.device());
  world.all_reduce(t, comm::ReduceOp::avg)->wait();
  return t.item();
}

class Run {
 public:
  Run(const TrainConfig& cfg, comm::Communicator& world, Device device)
      : cfg_(cfg), world_(world), device_(device), rank0_(world.rank() == 0), inputs_(device) {}

  TrainOutcome execute();

 private:
  void say(const std::string& line) const {
    if (rank0_) std::printf("%s\n", line.c_str()), std::fflush(stdout);
  }
  double evaluate(data::DataLoader& loader, int64_t micro_batches);
  std::string sample(int64_t tokens, uint64_t seed);

  const TrainConfig& cfg_;
  comm::Communicator& world_;
  Device device_;
  bool rank0_;
  InputStaging inputs_;  // token ids to the device without a stream drain
  std::unique_ptr<data::Tokenizer> tokenizer_;
  // parallel.tp > 1 (launch/model_parallel.h); declared first so that its mesh outlives the model and engine.
  std::unique_ptr<TensorParallelTraining> tensor_parallel_;
  std::unique_ptr<Gpt> model_;
  std::unique_ptr<zero::ZeroEngine> engine_;
  std::unique_ptr<PipelineTraining> pipeline_;  // parallel.pp > 1 (launch/pipeline_step.h)
  CheckpointPolicy checkpointing_;  // parallel.activation_checkpointing and its settings
  std::unique_ptr<GemmTuningSync> gemm_tuning_;  // train.gemm_algorithms (Note [GEMM tuning file])
};

double Run::evaluate(data::DataLoader& loader, int64_t micro_batches) {
  if (pipeline_) return pipeline_->evaluate(loader, micro_batches);
  NoGradGuard no_grad;
  const auto& c = model_->config();
  const int64_t B = cfg_.train().micro_batch_size();
  double total = 0;
  for (int64_t i = 0; i < micro_batches; ++i) {
    data::Batch b = loader.next();
    engine_->begin_micro_batch(true);
    Tensor ids = inputs_.upload(b.inputs, B, c.seq_len), targets = inputs_.upload(b.targets, B, c.seq_len);
    Tensor loss = model_->forward_loss(*engine_, ids, targets, StepRng{}, false);
    total += loss.item();
  }
  return average(world_, total / static_cast<double>(micro_batches));
}

std::string Run::sample(int64_t tokens, uint64_t seed) {
  const std::vector<int32_t> prompt = tokenizer_->encode("The ");
  gemm_tuning_->pause_timing(true);
  std::vector<int32_t> out = model_->generate(*engine_, prompt, tokens, 0.8, 40, seed);
  gemm_tuning_->pause_timing(false);
  std::vector<int32_t> printable;
  for (int32_t t : out)
    if (t < tokenizer_->vocab_size() && t != tokenizer_->eot_token()) printable.push_back(t);
  return "The " + tokenizer_->decode(printable);
}

TrainOutcome Run::execute() {
  const auto& tc = cfg_.train();
  const Precision precision_kind = precision(cfg_);
  const DType cdt = compute_dtype_of(precision_kind);
  ZT_CHECK(!(device_.is_cpu() && cdt == DType::f16), "train", "precision.dtype fp16 needs a GPU; use f32 or bf16 on the CPU");

  if (device_.is_cuda() && tc.device_memory_limit_gib() > 0) {
    cuda::set_memory_limit(device_.index, static_cast<size_t>(tc.device_memory_limit_gib() * 1073741824.0));
    say(fmt::format("{}: allocations capped at {:.1f} GiB (train.device_memory_limit_gib)", device_.str(),
                    tc.device_memory_limit_gib()));
  }
  gemm_tuning_ = std::make_unique<GemmTuningSync>(cfg_, world_, device_.is_cuda() ? cuda_gemm_tuner(device_.index) : nullptr,
                                                  [this](const std::string& line) { say(line); });
  tokenizer_ = make_tokenizer(cfg_.data().tokenizer());
  const GptDims dims = model_dims(cfg_);
  ZT_CHECK(tokenizer_->vocab_size() <= dims.vocab_size, "train", "model.vocab_size (", dims.vocab_size,
           ") is smaller than the tokenizer's vocabulary (", tokenizer_->vocab_size(), ", ", tokenizer_->name(), ")");
  GptConfig mc = GptConfig::from_dims(dims, cdt, cfg_.model().dropout());
  mc.loss_chunk_rows = resolved_loss_chunk_rows(estimate_input_from_config(cfg_));  // Note [Chunked loss]
  if (cfg_.parallel().pp() > 1) pipeline_ = std::make_unique<PipelineTraining>(cfg_, world_);
  if (cfg_.parallel().tp() > 1) tensor_parallel_ = std::make_unique<TensorParallelTraining>(cfg_, world_);
  if (tensor_parallel_) {  // with pp > 1 too: this stage's units as tp shards
    model_ = tensor_parallel_->make_model(mc, device_, tc.seed(), cfg_.model().init_from(),
                                          pipeline_ ? pipeline_->owned_units() : std::vector<bool>{});
  } else {
    model_ = std::make_unique<Gpt>(mc, device_, tc.seed(), pipeline_ ? pipeline_->owned_units() : std::vector<bool>{});
    if (!cfg_.model().init_from().empty()) load_hf_gpt2(*model_, cfg_.model().init_from());
  }
  if (!cfg_.model().init_from().empty()) say("initialised from " + cfg_.model().init_from());

  const int dp = pipeline_ ? pipeline_->dp_size() : tensor_parallel_ ? tensor_parallel_->dp_size() : world_.size();
  AdamWConfig ac;
  ac.lr = cfg_.optimizer().lr();
  ac.beta1 = cfg_.optimizer().beta1();
  ac.beta2 = cfg_.optimizer().beta2();
  ac.eps = cfg_.optimizer().eps();
  ac.weight_decay = cfg_.optimizer().weight_decay();
  zero::ZeroConfig zc;
  zc.stage = cfg_.parallel().zero_stage();
  zc.compute_dtype = cdt;
  zc.bucket_mb = cfg_.parallel().bucket_mb();
  zc.offload_optimizer = cfg_.parallel().offload_optimizer();
  zc.offload_optimizer_fraction = cfg_.parallel().offload_optimizer_fraction();
  zc.offload_params = cfg_.parallel().offload_params();
  engine_ = std::make_unique<zero::ZeroEngine>(model_->parameters(), model_->num_units(),
                                               pipeline_ ? pipeline_->dp() : tensor_parallel_ ? tensor_parallel_->dp() : world_,
                                               ac, zc);
  // Full checkpointing recomputes segments of checkpoint_every_k_blocks blocks among the first
  // checkpoint_num_blocks (of each pipeline chunk); selective only the attention core and
  // gelu(linear), inside Gpt::block (Note [Checkpointing modes] in models/checkpointing.h).
  checkpointing_ = checkpoint_policy(cfg_);
  model_->set_selective_recompute(checkpointing_.selective());
  if (pipeline_) {
    pipeline_->attach(*model_, *engine_, checkpointing_);  // norm groups: pp, and tp when the model has it
  } else if (tensor_parallel_) {
    tensor_parallel_->attach(*engine_);
  }

  LossScalerConfig lsc;
  lsc.enabled = precision_kind == Precision::fp16;
  lsc.initial_scale = cfg_.precision().initial_loss_scale();
  lsc.growth = cfg_.precision().loss_scale_growth_factor();
  lsc.backoff = cfg_.precision().loss_scale_backoff();
  lsc.growth_interval = cfg_.precision().loss_scale_growth_interval();
  LossScaler scaler(lsc);

  const int64_t B = tc.micro_batch_size(), T = mc.seq_len, accum = tc.grad_accumulation();
  DataSources sources = open_data(cfg_, *tokenizer_);
  data::DataLoaderConfig dlc;
  dlc.batch_size = B;
  dlc.seq_len = T;
  dlc.rank = pipeline_ ? pipeline_->dp_rank() : tensor_parallel_ ? tensor_parallel_->dp_rank() : world_.rank();
  dlc.world_size = dp;
  dlc.seed = tc.seed();
  dlc.vocab_size = mc.vocab_size;  // the model is what cannot take larger ids
  data::DataLoader train_loader(std::move(sources.train), dlc);
  std::unique_ptr<data::DataLoader> val_loader;
  if (sources.has_val) val_loader = std::make_unique<data::DataLoader>(std::move(sources.val), dlc);

  LrSchedule sched;
  sched.kind = lr_schedule_kind(cfg_) == LrScheduleKind::linear     ? ScheduleKind::linear
               : lr_schedule_kind(cfg_) == LrScheduleKind::constant ? ScheduleKind::constant
                                                                    : ScheduleKind::warmup_cosine;
  sched.lr = ac.lr;
  sched.warmup_steps = cfg_.schedule().warmup_steps();
  sched.total_steps = tc.steps();
  sched.min_lr_ratio = cfg_.schedule().min_lr_ratio();

  // Resume (Note [Checkpoint safety] in launch/checkpoint.h).
  TrainingState state;
  state.seed = tc.seed();
  const auto& cc = cfg_.checkpoint();
  std::optional<std::string> resume_from;
  if (tensor_parallel_) {
    resume_from = tensor_parallel_->resume_from(cc);  // Note [TP checkpoints] in launch/model_parallel.h
  } else if (cc.resume() == "auto") {
    resume_from = latest_checkpoint(cc.dir());
  } else if (cc.resume() != "none") {
    resume_from = cc.resume();
  }
  if (resume_from) {
    state = load_checkpoint(*resume_from, *engine_, mc);
    if (pipeline_) pipeline_->sync_tied_embedding();
    ZT_CHECK(state.seed == tc.seed(), "train", "checkpoint ", *resume_from, " was trained with train.seed ", state.seed,
             ", this run has ", tc.seed(), "; resuming would not continue the same run");
    scaler.restore(state.loss_scale > 0 ? state.loss_scale : scaler.scale(), state.loss_scale_clean_steps,
                   state.loss_scale_skipped_steps);
    train_loader.set_position(
        {state.data_epoch, state.data_part_index, state.data_window_index, state.data_window_tokens});
    say(fmt::format("resumed from {} at step {}", *resume_from, state.step));
  }

  const int64_t start_step = state.step;
  // Note [Checkpoint safety]: a save never overwrites step_N, so a later checkpoint already in the
  // folder (another run's, or the one a resume from an older path skips) would silently stand where
  // this run's should be written, and resume=auto would pick it up later.
  if (tc.steps() > start_step && !cc.dir().empty()) {
    const std::string save_dir = tensor_parallel_ ? tensor_parallel_->checkpoint_dir(cc.dir()) : cc.dir();
    const std::optional<std::string> newest = latest_checkpoint(save_dir);
    ZT_CHECK(!newest || checkpoint_step(*newest).value_or(0) <= start_step, "train", "checkpoint.dir '", save_dir,
             "' already holds ", *newest, ", past the step this run starts from (", start_step,
             "), and checkpoints are never overwritten; use checkpoint.resume=auto to continue that run, or remove "
             "the later checkpoints or choose another checkpoint.dir");
  }
  const int64_t n_params = tensor_parallel_ ? tensor_parallel_->num_parameters(mc)
                           : pipeline_      ? pipeline_->num_parameters(*model_)
                                            : model_->num_parameters();
  const double tokens_per_step = static_cast<double>(B * T * accum * dp);
  const double flops = flops_per_token(n_params, mc.n_layer, T, mc.d_model);
  const std::optional<double> peak = peak_flops(device_);
  std::string layout = fmt::format("ZeRO-{} x dp {}", zc.stage, dp);
  if (tensor_parallel_) layout += tensor_parallel_->describe();
  if (pipeline_)
    layout += fmt::format(" x pp {} ({}, {} chunk(s) per rank)", cfg_.parallel().pp(),
                          pipeline_schedule_name(pipeline_schedule(cfg_)), cfg_.parallel().virtual_stages());
  if (mc.loss_chunk_rows > 0) layout += fmt::format(" | loss in chunks of {} rows", mc.loss_chunk_rows);
  say(fmt::format("zerotrain: GPT {}L {}H {}C vocab {} (padded {}), {:.2f}M parameters | {} | {} | {} | "
                  "batch {} x {} tokens x {} micro-batches x {} ranks = {:.0f} tokens/step",
                  mc.n_layer, mc.n_head, mc.d_model, mc.vocab_size, mc.padded_vocab, n_params / 1e6, device_.str(),
                  precision_name(precision_kind), layout, B, T, accum, dp, tokens_per_step));
  if (const zero::ModelStateBytes ms = engine_->model_state_bytes(); ms.host_total() > 0) {
    // Offload: where the model states went (Note [Partial optimizer offload] picks the units).
    int units = 0, offloaded = 0;
    for (int u = 0; u < model_->num_units(); ++u)
      if (!engine_->layouts()[static_cast<size_t>(u)].params.empty()) ++units, offloaded += engine_->unit_offloaded(u);
    say(fmt::format("model states on {}: parameters {}, gradients {}, optimizer {} | in host memory: parameters {}, "
                    "gradients {}, optimizer {} (optimizer of {} of {} units)",
                    device_.str(), format_bytes(ms.parameters), format_bytes(ms.gradients), format_bytes(ms.optimizer),
                    format_bytes(ms.host_parameters), format_bytes(ms.host_gradients), format_bytes(ms.host_optimizer),
                    offloaded, units));
  }
  const bool sampling = cfg_.logging().sample_every() > 0 && !pipeline_;
  if (cfg_.logging().sample_every() > 0 && pipeline_) say("logging.sample_every is ignored with parallel.pp > 1 (no pipelined sampling yet)");
  MetricsWriter metrics(rank0_ ? cfg_.logging().metrics_jsonl() : "");
  Allocator& alloc = allocator_for(device_);
  const auto& lc = cfg_.logging();

  TrainOutcome outcome;
  if (sampling && start_step == 0) {
    std::string text = sample(lc.sample_tokens(), tc.seed());
    say("sample before training: " + text);
    metrics.write_sample(0, text);
  }

  auto save = [&](int64_t step) {
    state.step = step;
    const data::DataPosition pos = train_loader.position();
    state.data_epoch = pos.epoch;
    state.data_part_index = pos.part_index;
    state.data_window_index = pos.window_index;
    state.data_window_tokens = pos.window_tokens;
    state.loss_scale = scaler.scale();
    state.loss_scale_clean_steps = scaler.clean_steps();
    state.loss_scale_skipped_steps = scaler.skipped_steps();
    gemm_tuning_->share();  // the file holds every choice a resume from this checkpoint will meet
    const std::string dir = tensor_parallel_ ? tensor_parallel_->checkpoint_dir(cc.dir()) : cc.dir();
    std::filesystem::create_directories(dir);
    std::string path = save_checkpoint(dir, state, *engine_, mc, config_to_text(cfg_),
                                       tensor_parallel_ ? tensor_parallel_->checkpoint_group() : world_, cc.keep_last(),
                                       pipeline_ ? pipeline_->checkpoint_placement() : CheckpointPlacement{});
    say("checkpoint saved: " + path);
    return path;
  };

  const auto run_start = Clock::now();
  double window_seconds = 0;
  int64_t window_steps = 0;
  bool first_logged = false;
  // Note [Deferred loss read]: a step's loss stays on the device until the next step's optimizer
  // has been queued (by then the device finished it long ago), or until something else is about to
  // print. Reading it at once would make the host wait for the step's optimizer kernels before it
  // could queue the next forward, leaving the GPU idle in between.
  struct PendingStep {
    Tensor loss_sum;      // on the device (undefined: `loss` already holds the value)
    double loss = 0;
    StepMetrics metrics;  // all but the loss
    bool log = false;     // a progress line and a JSONL record
  };
  std::optional<PendingStep> pending;
  auto finish_pending = [&] {
    if (!pending) return;
    double loss = pending->loss;
    if (pending->loss_sum.defined()) loss = average(world_, pending->loss_sum.item() / static_cast<double>(accum));
    outcome.last_loss = loss;
    if (!first_logged) {
      outcome.first_loss = loss;
      first_logged = true;
    }
    if (pending->log) {
      pending->metrics.loss = loss;
      say(format_step_line(pending->metrics));
      metrics.write_step(pending->metrics);
    }
    pending.reset();
  };
  data::Batch batch;
  for (int64_t step = start_step; step < tc.steps(); ++step) {
    const auto step_start = Clock::now();
    alloc.reset_peak_stats();
    const double lr = sched.at(step);
    PendingStep now;
    zero::StepResult r;
    if (pipeline_) {
      const PipelineTraining::Outcome o = pipeline_->step(train_loader, step, lr, cfg_.optimizer().grad_clip(),
                                                          scaler.scale());
      now.loss = o.loss;
      r = o.optimizer;
    }
    Tensor loss_sum;  // on the device, read once after the step is queued
    for (int64_t micro = 0; micro < accum && !pipeline_; ++micro) {
      engine_->begin_micro_batch(micro == accum - 1);
      train_loader.next(batch);
      StepRng rng{tc.seed(), static_cast<uint64_t>(step), static_cast<uint64_t>(micro)};
      Tensor loss;
      {
        MemoryCategoryScope scope(MemoryCategory::activations);
        Tensor ids = inputs_.upload(batch.inputs, B, T), targets = inputs_.upload(batch.targets, B, T);
        loss = model_->forward_loss(*engine_, ids, targets, rng, true, checkpointing_);
        backward(mul_scalar(loss, scaler.scale() / static_cast<double>(accum)));
      }
      engine_->end_backward();
      NoGradGuard no_grad;
      loss_sum = loss_sum.defined() ? add(loss_sum, loss.detach()) : loss.detach();
    }
    if (!pipeline_) {
      r = engine_->step(lr, cfg_.optimizer().grad_clip(), scaler.scale());
      now.loss_sum = loss_sum;
    }
    finish_pending();  // the previous step's loss: long computed, read without a wait
    scaler.update(!r.skipped);
    state.tokens_seen += static_cast<int64_t>(tokens_per_step);
    const double dt = seconds_since(step_start);
    window_seconds += dt;
    ++window_steps;
    const int64_t done = step + 1;
    now.log = done % std::max(1, lc.every()) == 0 || done == tc.steps() || done == start_step + 1;
    if (now.log) {
      StepMetrics& m = now.metrics;
      m.step = done;
      m.total_steps = tc.steps();
      m.lr = lr;
      m.grad_norm = r.grad_norm;
      m.skipped = r.skipped;
      m.loss_scale = scaler.scale();
      m.step_seconds = window_seconds / static_cast<double>(window_steps);
      m.tokens_per_second = tokens_per_step / m.step_seconds;
      if (peak) m.mfu = m.tokens_per_second / world_.size() * flops / *peak;  // per rank, every pp stage counted
      const MemoryStats ms = alloc.stats();  // this step's peak, before the next step resets it
      m.memory_allocated = ms.total.current;
      m.memory_peak = ms.total.peak;
      m.eta_seconds = m.step_seconds * static_cast<double>(tc.steps() - done);
      window_seconds = 0;
      window_steps = 0;
    }
    pending = std::move(now);
    if (done == start_step + 1) gemm_tuning_->share();  // Note [GEMM tuning file]
    const int val_every = cfg_.data().val_every();
    const bool validate = val_loader && ((val_every > 0 && done % val_every == 0) || done == tc.steps());
    const bool sample_now = sampling && (done % lc.sample_every() == 0 || done == tc.steps());
    const bool save_now = cc.every() > 0 && done % cc.every() == 0 && done != tc.steps();
    if (validate || sample_now || save_now) finish_pending();  // its line first
    if (validate) {
      val_loader->reset();
      outcome.last_val_loss = evaluate(*val_loader, cfg_.data().val_steps());
      say(fmt::format("step {} | val loss {:.4f}", done, outcome.last_val_loss));
      metrics.write_eval(done, outcome.last_val_loss);
    }
    if (sample_now) {
      std::string text = sample(lc.sample_tokens(), tc.seed() + static_cast<uint64_t>(done));
      say(fmt::format("sample at step {}: {}", done, text));
      metrics.write_sample(done, text);
    }
    if (save_now) save(done);
    outcome.steps_done = done;
  }
  finish_pending();
  if (pipeline_) {
    pipeline_->finish();
    say(pipeline_->timing_summary());
  }
  if (tc.steps() > 0 && cc.save_at_end()) outcome.final_checkpoint = save(tc.steps());
  say(fmt::format("done: {} steps in {}", tc.steps() - start_step, format_duration(seconds_since(run_start))));
  return outcome;
}

}  // namespace

TrainOutcome train(const TrainConfig& cfg, comm::Communicator& world, Device device) {
  Run run(cfg, world, device);
  return run.execute();
}

}  // namespace zt

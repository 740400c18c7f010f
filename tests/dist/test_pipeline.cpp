// ranks: 2 4
// Pipeline parallelism against one process. Several AdamW steps of a tiny GPT through GPipe, 1F1B
// and interleaved 1F1B (pp 2 and 4, with and without data parallelism and ZeRO 0-2, clipping on)
// must give the losses, gradient norms and parameters of one process that sees the whole global
// batch (f32), also with full activation checkpointing (every block, segments of 2, each stage's
// first block only). Also: the Chrome trace of real steps, refusals with their messages, and
// `zerotrain train` with pp > 1: equal to pp = 1, checkpoints resumed across pipeline layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "launch/config.h"
#include "launch/pipeline_step.h"
#include "launch/trainer.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "global_batch_reference.h"
#include "parallel/comm/mpi_communicator.h"

namespace zt {
namespace {

using pipeline::ScheduleKind;
constexpr int64_t kB = 2, kT = 16, kSteps = 3;
constexpr int kMicroBatches = 4;
constexpr double kLr = 3e-3, kClip = 0.5;

const reference::Setup kSetup{kB, kT, kSteps, kMicroBatches, kLr, kClip, 500};
GptConfig tiny_config(double dropout) { return reference::tiny_config(kSetup, dropout); }
using reference::adamw_config;
using reference::relative_error;
using Reference = reference::Result;
Reference reference_run(int dp, double dropout) { return reference::run(kSetup, dp, dropout); }

struct Case {
  ScheduleKind schedule;
  int pp, virtual_chunks, dp, zero_stage;
  CheckpointPolicy checkpointing = {};  // full: blocks recomputed in backward
  int64_t loss_chunk_rows = 0;          // Note [Chunked loss] on the last stage; 0: whole logits
};

std::string case_name(const Case& c) {
  const char* s = c.schedule == ScheduleKind::gpipe ? "gpipe" : c.schedule == ScheduleKind::one_f_one_b ? "1f1b" : "interleaved";
  const CheckpointPolicy& r = c.checkpointing;
  std::string recompute;
  if (r.mode == Recompute::full) {
    recompute = "_recompute";
    if (r.every_k_blocks > 1) recompute += fmt::format("_k{}", r.every_k_blocks);
    if (r.num_blocks > 0) recompute += fmt::format("_first{}", r.num_blocks);
  }
  const std::string chunked = c.loss_chunk_rows > 0 ? fmt::format("_loss_chunks{}", c.loss_chunk_rows) : "";
  return fmt::format("{}_pp{}_v{}_dp{}_zero{}{}{}", s, c.pp, c.virtual_chunks, c.dp, c.zero_stage, recompute, chunked);
}

void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

GptConfig config_for(const Case& c, double dropout) {
  GptConfig mc = tiny_config(dropout);
  mc.loss_chunk_rows = c.loss_chunk_rows;
  return mc;
}

// One rank's share of a pipelined run: mesh, stage model, engine, step.
struct PipelineRank {
  PipelineRank(comm::Communicator& world, const Case& c, double dropout)
      : mesh(world, MeshShape{c.dp, 1, c.pp}),
        plan(pipeline::partition_from_sizes(std::vector<int>(static_cast<size_t>(c.pp * c.virtual_chunks),
                                                             4 / (c.pp * c.virtual_chunks)),
                                            4, c.pp * c.virtual_chunks),
             c.pp, mesh.coord().pp),
        model(config_for(c, dropout), Device::cpu(), 7, plan.owned_units()) {
    zero::ZeroConfig zc;
    zc.stage = c.zero_stage;
    zc.bucket_mb = 0.005;  // several buckets even for this small model
    engine = std::make_unique<zero::ZeroEngine>(model.parameters(), model.num_units(), mesh.dp(), adamw_config(), zc);
    PipelineStepOptions o;
    o.schedule = c.schedule;
    o.micro_batches = kMicroBatches;
    o.micro_batch_size = kB;
    o.seed = 11;
    o.checkpointing = c.checkpointing;
    step = std::make_unique<PipelineStep>(model, *engine, plan, mesh.pp(), o);
  }

  pipeline::StepReport run_step(int64_t s, int dp, bool record_events = false) {
    reference::MicroBatches batches = reference::replica_micro_batches(kSetup, s, dp, mesh.coord().dp);
    pipeline::StepArgs args;
    args.lr = kLr;
    args.max_grad_norm = kClip;
    args.record_events = record_events;
    return step->train_step(s, std::move(batches.inputs), std::move(batches.targets), args);
  }

  Mesh mesh;
  pipeline::StagePlan plan;
  Gpt model;
  std::unique_ptr<zero::ZeroEngine> engine;
  std::unique_ptr<PipelineStep> step;
};

class Pipeline : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    world = comm::MpiCommunicator::world();
    const Case& c = GetParam();
    if (c.pp * c.dp != world->size()) GTEST_SKIP() << "needs " << c.pp * c.dp << " ranks";
  }
  std::unique_ptr<comm::Communicator> world;
};

TEST_P(Pipeline, MatchesOneProcessOnTheGlobalBatch) {
  const Case& c = GetParam();
  // Dropout masks depend on the batch's shape, so only a single replica can match them.
  const double dropout = c.dp == 1 ? 0.1 : 0.0;
  const Reference want = reference_run(c.dp, dropout);
  PipelineRank r(*world, c, dropout);
  for (int64_t s = 0; s < kSteps; ++s) {
    const pipeline::StepReport rep = r.run_step(s, c.dp);
    Tensor loss = full({1}, rep.loss, DType::f64);
    r.mesh.dp().all_reduce(loss, comm::ReduceOp::avg)->wait();
    EXPECT_NEAR(loss.item(), want.losses[static_cast<size_t>(s)], 1e-5 * want.losses[static_cast<size_t>(s)])
        << "step " << s;
    EXPECT_NEAR(rep.optimizer.grad_norm, want.grad_norms[static_cast<size_t>(s)],
                1e-5 * want.grad_norms[static_cast<size_t>(s)])
        << "step " << s;
    EXPECT_GT(want.grad_norms[static_cast<size_t>(s)], kClip);  // clipping is exercised
    EXPECT_FALSE(rep.optimizer.skipped);
  }
  // Every parameter this rank holds, and the head copy on the last stage, equal the reference.
  const std::vector<bool> owned = r.plan.owned_units();
  size_t expected = 0;
  Gpt whole(tiny_config(0), Device::cpu(), 7);
  for (const Parameter& p : whole.parameters()) expected += owned[static_cast<size_t>(p.unit)] ? 1 : 0;
  EXPECT_EQ(r.model.parameters().size(), expected);
  for (const Parameter& p : r.model.parameters()) {
    EXPECT_LT(relative_error(p.tensor.detach(), want.params.at(p.name)), 1e-5) << p.name << " on rank " << world->rank();
  }
  EXPECT_EQ(r.step->head_copy().defined(), r.plan.holds_last_stage() && !r.plan.holds_first_stage());
  if (r.step->head_copy().defined()) {
    EXPECT_LT(relative_error(r.step->head_copy().detach(), want.params.at("wte.weight")), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schedules, Pipeline,
    ::testing::Values(Case{ScheduleKind::gpipe, 2, 1, 1, 0},
                      Case{ScheduleKind::one_f_one_b, 2, 1, 1, 1, {Recompute::full, 1}},
                      Case{ScheduleKind::interleaved, 2, 2, 1, 2},
                      Case{ScheduleKind::one_f_one_b, 4, 1, 1, 0, {Recompute::full, 1}},
                      Case{ScheduleKind::gpipe, 4, 1, 1, 2}, Case{ScheduleKind::one_f_one_b, 2, 1, 2, 1},
                      Case{ScheduleKind::interleaved, 2, 2, 2, 0},
                      // Each stage's 2 blocks as one segment; only each stage's first block.
                      Case{ScheduleKind::gpipe, 2, 1, 1, 0, {Recompute::full, 2}},
                      Case{ScheduleKind::one_f_one_b, 2, 1, 1, 1, {Recompute::full, 1, 1}},
                      // The chunked loss on the last stage (its head copy of wte): 32 rows in 5s and 7s.
                      Case{ScheduleKind::one_f_one_b, 2, 1, 1, 1, {}, 5},
                      Case{ScheduleKind::interleaved, 2, 2, 2, 2, {Recompute::full, 1}, 7}),
    [](const auto& info) { return case_name(info.param); });

TEST(PipelineTrace, IsValidJsonWithEveryRanksInstructions) {
  auto world = comm::MpiCommunicator::world();
  const int n = world->size();
  const Case c{n == 2 ? ScheduleKind::interleaved : ScheduleKind::one_f_one_b, 2, n == 2 ? 2 : 1, n / 2, 1};
  PipelineRank r(*world, c, 0.0);
  const pipeline::StepReport rep = r.run_step(0, c.dp, /*record_events=*/true);
  const pipeline::StepTimings& t = rep.timings;
  EXPECT_GT(t.forward, 0);
  EXPECT_GT(t.backward, 0);
  EXPECT_GE(t.idle(), -1e-6);
  EXPECT_LE(t.forward + t.backward + t.optimizer, t.total + 1e-6);
  const std::string path = reference::shared_temp_path(*world, "zt_pipeline_trace") + ".json";
  pipeline::write_pipeline_trace(path, rep.events,
                                 {r.mesh.coord().dp, r.mesh.coord().pp, c.pp, c.virtual_chunks}, *world);
  // What each rank's list makes: forwards and backwards, the optimizer, every send and receive (and
  // on pipeline rank 0 the tied embedding's gradient).
  std::vector<int64_t> mine = {0, 0};
  for (const pipeline::Instruction& in : r.step->schedule().ranks[static_cast<size_t>(r.mesh.coord().pp)])
    ++mine[pipeline::is_compute(in.op) ? 0 : 1];
  if (r.mesh.coord().pp == 0) ++mine[1];
  Tensor all = empty({2 * static_cast<int64_t>(n)}, DType::i64);
  world->all_gather(from_vector(mine, {2}), all)->wait();
  if (world->rank() == 0) {
    std::ifstream in(path);
    const nlohmann::json trace = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(trace.is_object() && trace.contains("traceEvents")) << path;
    std::vector<int64_t> lanes(2 * static_cast<size_t>(n), 0), names(static_cast<size_t>(n), 0);
    for (const auto& e : trace["traceEvents"]) {
      const int pid = e.at("pid").get<int>();
      ASSERT_TRUE(pid >= 0 && pid < n) << e.dump();
      if (e.at("ph") == "M" && e.at("name") == "process_name") {
        ++names[static_cast<size_t>(pid)];
        EXPECT_NE(e["args"]["name"].get<std::string>().find(fmt::format("rank {} (dp", pid)), std::string::npos);
      }
      if (e.at("ph") != "X") continue;
      EXPECT_GE(e.at("ts").get<double>(), 0);
      EXPECT_GE(e.at("dur").get<double>(), 0);
      ++lanes[static_cast<size_t>(2 * pid + e.at("tid").get<int>())];
    }
    const std::vector<int64_t> want = all.to_vector<int64_t>();
    for (int p = 0; p < n; ++p) {
      EXPECT_EQ(names[static_cast<size_t>(p)], 1) << "rank " << p;
      EXPECT_EQ(lanes[static_cast<size_t>(2 * p)], want[static_cast<size_t>(2 * p)]) << "compute events of rank " << p;
      EXPECT_EQ(lanes[static_cast<size_t>(2 * p + 1)], want[static_cast<size_t>(2 * p + 1)]) << "p2p events of rank " << p;
    }
    EXPECT_EQ(want[0], 2 * kMicroBatches * c.virtual_chunks + 1);
    std::filesystem::remove(path);
  }
}

// Runs fn, expects a zt::Error whose message contains `part`.
void expect_error(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(PipelineErrors, NameWhatIsWrong) {
  auto world = comm::MpiCommunicator::world();
  const pipeline::StagePartition three = pipeline::partition_from_sizes({1, 1, 2}, 4, 3);
  expect_error([&] { pipeline::StagePlan(three, 2, 0); },
               "[pipeline] the partition has 3 stages; it needs a multiple of pp (2)");
  expect_error([&] { pipeline::StagePlan(three, 3, 3); }, "[pipeline] pipeline rank 3 is not in [0, 3)");

  // ZeRO-3 is refused (identically on every rank, so no rank is left in a collective).
  Mesh mesh(*world, MeshShape{1, 1, world->size()});
  pipeline::StagePlan plan(pipeline::partition_from_sizes(std::vector<int>(static_cast<size_t>(world->size()), 1),
                                                          world->size(), world->size()),
                           world->size(), mesh.coord().pp);
  GptConfig cfg = tiny_config(0);
  cfg.n_layer = world->size();
  Gpt model(cfg, Device::cpu(), 7, plan.owned_units());
  zero::ZeroConfig zc;
  zc.stage = 3;
  zero::ZeroEngine engine3(model.parameters(), model.num_units(), mesh.dp(), adamw_config(), zc);
  PipelineStepOptions o;
  o.micro_batches = 2;
  o.micro_batch_size = kB;
  expect_error([&] { PipelineStep(model, engine3, plan, mesh.pp(), o); },
               "[pipeline] ZeRO stage 3 is not supported with pipeline parallelism");

  // A schedule for another number of ranks; micro-batches of the wrong shape.
  Gpt model0(cfg, Device::cpu(), 7, plan.owned_units());
  zero::ZeroEngine engine0(model0.parameters(), model0.num_units(), mesh.dp(), adamw_config(), {});
  pipeline::StageSource source(engine0, plan, mesh.pp(), {cfg.padded_vocab, cfg.d_model}, DType::f32, Device::cpu());
  GptChunks chunks(model0, plan, source, kB, {});
  expect_error([&] { GptChunks(model0, plan, source, kB, {Recompute::full, 1, -1}); },
               "[checkpointing] num_blocks must be >= 0 (0: all blocks), got -1");
  expect_error([&] { pipeline::Executor(pipeline::make_1f1b(world->size() + 1, 2), mesh.pp(), plan, chunks, source, engine0); },
               fmt::format("[pipeline] the schedule is for pp {} but the pipeline group has {} ranks", world->size() + 1,
                           world->size()));
  expect_error([&] { chunks.set_micro_batches({zeros({kB, kT + 1}, DType::i64)}, {zeros({kB, kT + 1}, DType::i64)}, 0, 0); },
               "[pipeline] micro-batch 0 has inputs [2, 17] i64 cpu");
  GptConfig wrong = cfg;
  wrong.n_layer = world->size() + 1;
  Gpt other(wrong, Device::cpu(), 7);
  expect_error([&] { GptChunks(other, plan, source, kB, {}); },
               fmt::format("[pipeline] the stage plan splits {} blocks but the model has n_layer = {}", world->size(),
                           world->size() + 1));
}

// ---- `zerotrain train` with pp > 1 ---------------------------------------------------------------

TrainConfig train_config(int dp, int pp, int64_t micro_batch_size, int steps, const std::string& schedule,
                         const std::string& dir, const std::string& resume) {
  const std::string text = fmt::format(R"(
model {{ n_layer: 4 n_head: 2 d_model: 32 vocab_size: 257 seq_len: 32 }}
optimizer {{ lr: 3e-3 grad_clip: 0.5 eps: 1e-5 }}
schedule {{ kind: constant warmup_steps: 2 }}
train {{ steps: {} micro_batch_size: {} grad_accumulation: 4 seed: 5 device: cpu }}
precision {{ dtype: f32 }}
data {{ train: "embedded:" val: "embedded:" val_steps: 2 }}
checkpoint {{ dir: "{}" every: 2 keep_last: 0 resume: "{}" }}
logging {{ every: 100 }}
parallel {{ dp: {} pp: {} zero_stage: 1 pipeline_schedule: {} }}
)",
                                       steps, micro_batch_size, dir, resume, dp, pp, schedule);
  TrainConfig cfg = parse_config_text(text, "test_pipeline");
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

// Each rank trains one process's worth alone (a group of one), as the pp = 1 reference.
TrainOutcome train_alone(comm::Communicator& world, const TrainConfig& cfg) {
  auto self = world.split(world.rank(), 0);
  return train(cfg, *self, Device::cpu());
}

TEST(PipelineTrain, EqualsOneProcessAndResumesAcrossLayouts) {
  auto world = comm::MpiCommunicator::world();
  const int n = world->size(), pp = 2, dp = n / 2;
  const std::string root = reference::shared_temp_path(*world, "zt_pipeline_train");
  if (world->rank() == 0) std::filesystem::remove_all(root);
  world->barrier()->wait();
  const std::string piped = root + "/piped", alone = root + fmt::format("/alone{}", world->rank());
  const std::string schedule = n == 2 ? "gpipe" : "one_f_one_b";

  const TrainOutcome p = train(train_config(dp, pp, 2, 4, schedule, piped, "none"), *world, Device::cpu());
  const TrainOutcome one = train_alone(*world, train_config(1, 1, 2 * dp, 4, "gpipe", alone, "none"));
  EXPECT_NEAR(p.first_loss, one.first_loss, 1e-5 * one.first_loss);
  EXPECT_NEAR(p.last_loss, one.last_loss, 1e-5 * one.last_loss);
  EXPECT_NEAR(p.last_val_loss, one.last_val_loss, 1e-5 * one.last_val_loss);
  EXPECT_LT(p.last_loss, p.first_loss);
  EXPECT_TRUE(std::filesystem::exists(piped + "/step_00000002/stage_01_shard_00000.safetensors"));

  // Resume the pipelined run's step-2 checkpoint with pp 2 and with pp 1: both finish as it did.
  const std::string step2 = piped + "/step_00000002";
  const TrainOutcome again = train(train_config(dp, pp, 2, 4, schedule, root + "/again", step2), *world, Device::cpu());
  EXPECT_DOUBLE_EQ(again.last_loss, p.last_loss);
  EXPECT_DOUBLE_EQ(again.last_val_loss, p.last_val_loss);
  const TrainOutcome flat = train_alone(*world, train_config(1, 1, 2 * dp, 4, "gpipe", alone + "_flat", step2));
  EXPECT_NEAR(flat.last_loss, p.last_loss, 1e-5 * p.last_loss);
  // ... and the pp = 1 checkpoint in a pipeline.
  const TrainOutcome back =
      train(train_config(dp, pp, 2, 4, schedule, root + "/back", root + "/alone0/step_00000002"), *world, Device::cpu());
  EXPECT_NEAR(back.last_loss, one.last_loss, 1e-5 * one.last_loss);

  // ZeRO-3 with pp > 1 is refused when the config is validated.
  TrainConfig z3 = parse_config_text("model { preset: tiny }\nparallel { pp: 2 zero_stage: 3 }");
  resolve_config(z3);
  expect_error([&] { validate_config(z3); }, "parallel.zero_stage 3 with parallel.pp (2) > 1 is not supported");
  world->barrier()->wait();
  if (world->rank() == 0) std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace zt

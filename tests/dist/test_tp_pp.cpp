// ranks: 4 8
// Tensor and pipeline parallelism together (dp x tp x pp, Note [Pipeline with tensor parallelism] in
// parallel/pipeline/stage.h) against one process. tp 2 x pp 2 on 4 ranks and tp 2 x pp 2 x dp 2 on
// 8: several AdamW steps of a tiny GPT (1F1B, 4 micro-batches, f32, clipping on), with and without
// sequence parallelism, must give the losses, gradient norms and (gathered) parameters of one
// process on the whole global batch. Also `zerotrain train` with dp, tp and pp set: equal to one
// process, its checkpoints resumed with the same tp, and refused with another.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <map>

#include "launch/config.h"
#include "launch/model_parallel.h"
#include "launch/pipeline_step.h"
#include "launch/trainer.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "global_batch_reference.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/pipeline/partition.h"

namespace zt {
namespace {

constexpr int64_t kB = 2, kT = 16, kSteps = 3;
constexpr int kMicroBatches = 4, kTp = 2, kPp = 2;
constexpr double kLr = 3e-3, kClip = 0.4;

const reference::Setup kSetup{kB, kT, kSteps, kMicroBatches, kLr, kClip, 900};
GptConfig tiny_config(double dropout) { return reference::tiny_config(kSetup, dropout); }
using reference::adamw_config;
using reference::relative_error;
using Reference = reference::Result;
Reference reference_run(int dp, double dropout) { return reference::run(kSetup, dp, dropout); }

struct Case {
  int dp, zero_stage;
  bool sequence_parallel;
};

std::string case_name(const Case& c) {
  return fmt::format("dp{}_tp{}_pp{}_zero{}{}", c.dp, kTp, kPp, c.zero_stage, c.sequence_parallel ? "_sp" : "");
}

void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

// One rank's share: the dp x tp x pp mesh, its stage's units as tp shards, engine, 1F1B step.
struct TpPpRank {
  TpPpRank(comm::Communicator& world, const Case& c, double dropout)
      : mesh(world, MeshShape{c.dp, kTp, kPp}),
        plan(pipeline::partition_from_sizes({2, 2}, 4, kPp), kPp, mesh.coord().pp),
        model(tiny_config(dropout), Device::cpu(), 7, plan.owned_units(), tp::TpGroup{&mesh.tp(), c.sequence_parallel}) {
    zero::ZeroConfig zc;
    zc.stage = c.zero_stage;
    zc.bucket_mb = 0.002;  // several buckets even for this small model
    engine = std::make_unique<zero::ZeroEngine>(model.parameters(), model.num_units(), mesh.dp(), adamw_config(), zc);
    PipelineStepOptions o;
    o.schedule = pipeline::ScheduleKind::one_f_one_b;
    o.micro_batches = kMicroBatches;
    o.micro_batch_size = kB;
    o.seed = 11;
    step = std::make_unique<PipelineStep>(model, *engine, plan, mesh.pp(), o);
  }

  pipeline::StepReport run_step(int64_t s, int dp) {
    reference::MicroBatches batches = reference::replica_micro_batches(kSetup, s, dp, mesh.coord().dp);
    pipeline::StepArgs args;
    args.lr = kLr;
    args.max_grad_norm = kClip;
    return step->train_step(s, std::move(batches.inputs), std::move(batches.targets), args);
  }

  Mesh mesh;
  pipeline::StagePlan plan;
  Gpt model;
  std::unique_ptr<zero::ZeroEngine> engine;
  std::unique_ptr<PipelineStep> step;
};

class TpPp : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    world = comm::MpiCommunicator::world();
    const Case& c = GetParam();
    if (c.dp * kTp * kPp != world->size()) GTEST_SKIP() << "needs " << c.dp * kTp * kPp << " ranks";
  }
  std::unique_ptr<comm::Communicator> world;
};

TEST_P(TpPp, MatchesOneProcessOnTheGlobalBatch) {
  const Case& c = GetParam();
  // Dropout masks depend on the batch's shape, so only a single replica can match them.
  const double dropout = c.dp == 1 ? 0.1 : 0.0;
  const Reference want = reference_run(c.dp, dropout);
  TpPpRank r(*world, c, dropout);
  // What travels between stages is the tp-local activation: a sequence shard under sequence parallelism.
  GptChunks probe(r.model, r.plan, r.step->source(), kB, {});
  EXPECT_EQ(probe.activation_shape(), (Shape{kB, c.sequence_parallel ? kT / kTp : kT, 24}));
  for (int64_t s = 0; s < kSteps; ++s) {
    const pipeline::StepReport rep = r.run_step(s, c.dp);
    Tensor loss = full({1}, rep.loss, DType::f64);
    r.mesh.dp().all_reduce(loss, comm::ReduceOp::avg)->wait();
    const double want_loss = want.losses[static_cast<size_t>(s)], want_norm = want.grad_norms[static_cast<size_t>(s)];
    EXPECT_NEAR(loss.item(), want_loss, 1e-5 * want_loss) << "step " << s;
    EXPECT_NEAR(rep.optimizer.grad_norm, want_norm, 1e-5 * want_norm) << "step " << s;
    EXPECT_GT(want_norm, kClip);  // clipping is exercised
    EXPECT_FALSE(rep.optimizer.skipped);
  }
  // Every parameter of this stage, gathered over tp, and the head copy on the last stage, equal the
  // reference; the rank holds exactly its stage's parameters.
  const std::vector<bool> owned = r.plan.owned_units();
  size_t expected = 0;
  const Gpt whole_model(tiny_config(0), Device::cpu(), 7);
  for (const Parameter& p : whole_model.parameters())
    expected += owned[static_cast<size_t>(p.unit)] ? 1 : 0;
  EXPECT_EQ(r.model.parameters().size(), expected);
  for (const Parameter& p : r.model.parameters()) {
    const Tensor& whole = want.params.at(p.name);
    EXPECT_LT(relative_error(tp::gather_shards(p.tensor.detach(), p.tp_split, r.mesh.tp()), whole), 1e-5)
        << p.name << " on rank " << world->rank();
    // The shard is this tp rank's part (not, say, another rank's copy).
    EXPECT_EQ(p.tensor.shape(), tp::take_shard(whole, p.tp_split, r.mesh.coord().tp, kTp).shape()) << p.name;
  }
  const bool head = r.plan.holds_last_stage();
  EXPECT_EQ(r.step->head_copy().defined(), head);
  const Tensor head_copy = head ? r.step->head_copy().detach() : zeros({1}, DType::f32);
  if (head) {
    EXPECT_EQ(head_copy.shape(), (Shape{tiny_config(0).padded_vocab / kTp, 24}));
    // Gathered over the tp ranks of the last stage (a collective those ranks run together).
    EXPECT_LT(relative_error(tp::gather_shards(head_copy, tp::TpSplit::rows, r.mesh.tp()), want.params.at("wte.weight")),
              1e-5);
  }
  world->barrier()->wait();
}

INSTANTIATE_TEST_SUITE_P(Layouts, TpPp,
                         ::testing::Values(Case{1, 0, false}, Case{1, 1, true}, Case{2, 1, false}, Case{2, 2, true}),
                         [](const auto& info) { return case_name(info.param); });

// ---- `zerotrain train` with dp, tp and pp ------------------------------------------------------

TrainConfig train_config(int dp, int tp, int pp, bool sp, int64_t micro_batch_size, const std::string& dir,
                         const std::string& resume) {
  const std::string text = fmt::format(R"(
model {{ n_layer: 4 n_head: 2 d_model: 32 vocab_size: 257 seq_len: 32 }}
optimizer {{ lr: 3e-3 grad_clip: 0.5 eps: 1e-5 }}
schedule {{ kind: constant warmup_steps: 2 }}
train {{ steps: 4 micro_batch_size: {} grad_accumulation: 4 seed: 5 device: cpu }}
precision {{ dtype: f32 }}
data {{ train: "embedded:" val: "embedded:" val_steps: 2 }}
checkpoint {{ dir: "{}" every: 2 keep_last: 0 resume: "{}" }}
logging {{ every: 100 sample_every: 0 }}
parallel {{ dp: {} tp: {} pp: {} sequence_parallel: {} zero_stage: 1 pipeline_schedule: one_f_one_b }}
)",
                                       micro_batch_size, dir, resume, dp, tp, pp, sp ? "true" : "false");
  TrainConfig cfg = parse_config_text(text, "test_tp_pp");
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

TEST(TpPpTrain, EqualsOneProcessAndResumesWithTheSameTp) {
  auto world = comm::MpiCommunicator::world();
  const int n = world->size(), dp = n / (kTp * kPp);
  const std::string root = reference::shared_temp_path(*world, "zt_tp_pp_train");
  if (world->rank() == 0) std::filesystem::remove_all(root);
  world->barrier()->wait();
  const std::string mesh_dir = root + "/mesh";

  const TrainOutcome got = train(train_config(dp, kTp, kPp, true, 2, mesh_dir, "none"), *world, Device::cpu());
  auto self = world->split(world->rank(), 0);  // the reference: one process alone, the global batch
  const TrainOutcome one =
      train(train_config(1, 1, 1, false, 2 * dp, root + fmt::format("/alone{}", world->rank()), "none"), *self,
            Device::cpu());
  EXPECT_EQ(got.steps_done, 4);
  EXPECT_NEAR(got.first_loss, one.first_loss, 1e-5 * one.first_loss);
  EXPECT_NEAR(got.last_loss, one.last_loss, 1e-5 * one.last_loss);
  EXPECT_NEAR(got.last_val_loss, one.last_val_loss, 1e-5 * one.last_val_loss);
  EXPECT_LT(got.last_loss, got.first_loss);
  // Note [TP checkpoints]: a series per tp rank, each with a file per pipeline stage.
  for (int t = 0; t < kTp; ++t)
    for (int s = 0; s < kPp; ++s)
      EXPECT_TRUE(std::filesystem::exists(mesh_dir + fmt::format("/tp_{}_of_{}/step_00000002/stage_{:02d}_shard_00000.safetensors", t, kTp, s)));

  // Resume step 2 with the same layout, and with the same tp but the pipeline folded into dp: both
  // finish as the uninterrupted run.
  const std::string step2 = mesh_dir + "/step_00000002";
  const TrainOutcome again = train(train_config(dp, kTp, kPp, true, 2, root + "/again", step2), *world, Device::cpu());
  EXPECT_DOUBLE_EQ(again.last_loss, got.last_loss);
  EXPECT_DOUBLE_EQ(again.last_val_loss, got.last_val_loss);
  const TrainOutcome no_pp =
      train(train_config(dp * kPp, kTp, 1, false, 1, root + "/no_pp", step2), *world, Device::cpu());
  EXPECT_NEAR(no_pp.last_loss, got.last_loss, 1e-5 * got.last_loss);

  // Another tp size is refused (each tp rank's units have other sizes); every rank throws.
  const std::string other_tp = mesh_dir + "/tp_0_of_2/step_00000002";
  try {
    train(train_config(n / 2, 1, kPp, false, 2, root + "/tp1", other_tp), *world, Device::cpu());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("elements, the model's has"), std::string::npos) << e.what();
  }
  world->barrier()->wait();
  if (world->rank() == 0) std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace zt

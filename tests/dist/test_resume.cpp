// ranks: 1 2
// Resume is bit-identical: `train` for N steps straight, against the same run stopped at N/2 (its
// checkpoint) and resumed to N in a fresh train() call (new model, engine, data loader, scaler).
// Every f32 value of the final masters and Adam moments, every logged loss, gradient norm and
// validation loss must be equal, not close: a resumed run is the same run. Covered: f32 and bf16
// compute, dropout (the per-step RNG), gradient accumulation, ZeRO stages 0-3 on every rank count.
// Resharding: a checkpoint written by 2 ranks loads into 1 (and one written by 1 into 2) with the
// masters copied exactly, and a run continued on 1 rank with the same global batch follows the
// 2-rank run.
#include <gtest/gtest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/trainer.h"
#include "models/safetensors.h"
#include "parallel/comm/mpi_communicator.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSteps = 6, kHalf = 3;

struct RunSpec {
  std::string dtype = "f32";
  int zero_stage = 0;
  int accum = 1;
  int micro_batch = 2;
  int dp = 1;
  double dropout = 0.0;
  double offload = 0.0;        // parallel.offload_optimizer_fraction; 0: no optimizer offload
  std::string dir;             // checkpoint.dir
  std::string resume = "none";
  std::string metrics;         // logging.metrics_jsonl
};

TrainConfig make_config(const RunSpec& s) {
  const std::string text = fmt::format(R"(
model {{ n_layer: 2 n_head: 2 d_model: 32 vocab_size: 257 seq_len: 16 dropout: {dropout} }}
optimizer {{ lr: 3e-3 weight_decay: 0.1 grad_clip: 1.0 }}
schedule {{ kind: warmup_cosine warmup_steps: 2 min_lr_ratio: 0.1 }}
train {{ steps: {steps} micro_batch_size: {mb} grad_accumulation: {accum} seed: 4242 device: cpu }}
precision {{ dtype: {dtype} }}
data {{ train: "embedded:" val: "embedded:" val_every: 2 val_steps: 2 tokenizer: "byte" }}
checkpoint {{ dir: "{dir}" every: {half} keep_last: 0 resume: "{resume}" }}
logging {{ every: 1 metrics_jsonl: "{metrics}" sample_every: 0 }}
parallel {{ dp: {dp} zero_stage: {stage} bucket_mb: 0.01 {offload} }}
)",
                                       fmt::arg("dropout", s.dropout), fmt::arg("steps", kSteps),
                                       fmt::arg("mb", s.micro_batch), fmt::arg("accum", s.accum),
                                       fmt::arg("dtype", s.dtype), fmt::arg("dir", s.dir), fmt::arg("half", kHalf),
                                       fmt::arg("resume", s.resume), fmt::arg("metrics", s.metrics),
                                       fmt::arg("dp", s.dp), fmt::arg("stage", s.zero_stage),
                                       fmt::arg("offload", s.offload > 0 ? fmt::format("offload_optimizer: true "
                                                                                       "offload_optimizer_fraction: {}",
                                                                                       s.offload)
                                                                         : std::string()));
  TrainConfig cfg = parse_config_text(text, "<test_resume>");
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

// What a run logged, by step: the step lines' loss, lr and grad_norm, and the validation losses.
struct Logged {
  std::map<int64_t, nlohmann::json> steps;
  std::map<int64_t, double> val;
};

Logged read_metrics(const std::string& path) {
  Logged out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.steps[j.at("step").get<int64_t>()] = j;
    if (j.contains("val_loss")) out.val[j.at("step").get<int64_t>()] = j.at("val_loss").get<double>();
  }
  return out;
}

// Every tensor of every shard file of checkpoint b is bit-identical to a's.
void expect_identical_shards(const std::string& a, const std::string& b) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(a))
    if (e.path().extension() == ".safetensors") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_FALSE(names.empty()) << a << " holds no shard files";
  for (const std::string& name : names) {
    ASSERT_TRUE(fs::exists(fs::path(b) / name)) << b << " lacks " << name;
    const SafetensorsFile fa = read_safetensors((fs::path(a) / name).string());
    const SafetensorsFile fb = read_safetensors((fs::path(b) / name).string());
    ASSERT_EQ(fa.order, fb.order) << name;
    for (const std::string& t : fa.order) {
      const std::vector<float> va = fa.at(t).to_vector<float>(), vb = fb.at(t).to_vector<float>();
      ASSERT_EQ(va.size(), vb.size()) << name << ":" << t;
      int64_t differ = 0, first = -1;
      for (size_t i = 0; i < va.size(); ++i)
        if (std::bit_cast<uint32_t>(va[i]) != std::bit_cast<uint32_t>(vb[i]) && differ++ == 0) first = static_cast<int64_t>(i);
      EXPECT_EQ(differ, 0) << name << ":" << t << ": " << differ << " of " << va.size() << " values differ, first at "
                           << first << " (" << (first >= 0 ? va[static_cast<size_t>(first)] : 0.f) << " vs "
                           << (first >= 0 ? vb[static_cast<size_t>(first)] : 0.f) << ")";
    }
  }
}

class Resume : public ::testing::Test {
 protected:
  void SetUp() override {
    world = comm::MpiCommunicator::world();
    // One scratch folder for all ranks: rank 0's pid, broadcast.
    Tensor pid = full({1}, world->rank() == 0 ? static_cast<double>(getpid()) : 0.0, DType::i64, Device::cpu());
    world->broadcast(pid, 0)->wait();
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = fmt::format("zt_test_resume_{}_{}_{}", static_cast<int64_t>(pid.item()), info->test_suite_name(),
                                   info->name());
    std::replace(name.begin(), name.end(), '/', '_');
    root = (fs::temp_directory_path() / name).string();
    if (world->rank() == 0) {
      fs::remove_all(root);
      fs::create_directories(root);
    }
    world->barrier()->wait();
  }
  void TearDown() override {
    world->barrier()->wait();
    if (world->rank() == 0) fs::remove_all(root);
  }
  std::string path(const std::string& name) const { return (fs::path(root) / name).string(); }

  std::unique_ptr<comm::Communicator> world;
  std::string root;
};

struct Case {
  std::string dtype;
  int stage;
  int accum;
  double dropout;
  double offload = 0.0;  // RunSpec::offload
};

class ResumeCase : public Resume, public ::testing::WithParamInterface<Case> {};

TEST_P(ResumeCase, StraightAndResumedRunsAreBitIdentical) {
  const Case c = GetParam();
  RunSpec straight;
  straight.dtype = c.dtype;
  straight.zero_stage = c.stage;
  straight.accum = c.accum;
  straight.dropout = c.dropout;
  straight.offload = c.offload;
  straight.dp = world->size();
  straight.dir = path("straight");
  straight.metrics = path("straight.jsonl");
  const TrainOutcome a = train(make_config(straight), *world, Device::cpu());

  // The "interrupted" run: only its checkpoint at N/2 survives, in a folder of its own.
  RunSpec resumed = straight;
  resumed.dir = path("resumed");
  resumed.metrics = path("resumed.jsonl");
  resumed.resume = (fs::path(straight.dir) / checkpoint_dir_name(kHalf)).string();
  const TrainOutcome b = train(make_config(resumed), *world, Device::cpu());

  EXPECT_EQ(a.steps_done, kSteps);
  EXPECT_EQ(b.steps_done, kSteps);
  EXPECT_EQ(a.last_loss, b.last_loss);
  EXPECT_EQ(a.last_val_loss, b.last_val_loss);
  if (world->rank() == 0) {
    const Logged la = read_metrics(straight.metrics), lb = read_metrics(resumed.metrics);
    ASSERT_EQ(la.steps.size(), static_cast<size_t>(kSteps));
    ASSERT_EQ(lb.steps.size(), static_cast<size_t>(kSteps - kHalf));
    EXPECT_EQ(lb.steps.begin()->first, kHalf + 1) << "the resumed run must start after the checkpoint's step";
    for (const auto& [step, j] : lb.steps) {
      const nlohmann::json& want = la.steps.at(step);
      EXPECT_TRUE(std::isfinite(j.at("loss").get<double>()));
      for (const char* key : {"loss", "lr", "grad_norm"})
        EXPECT_EQ(j.at(key).get<double>(), want.at(key).get<double>()) << key << " at step " << step;
    }
    // Validation after the resume (steps 4 and 6) sees the same model.
    for (const auto& [step, v] : lb.val) EXPECT_EQ(v, la.val.at(step)) << "val_loss at step " << step;
    EXPECT_EQ(lb.val.size(), 2u);
    // The model moved during the second half, so equal final states are not an accident.
    EXPECT_NE(la.steps.at(kSteps).at("loss").get<double>(), la.steps.at(kHalf).at("loss").get<double>());
    expect_identical_shards(a.final_checkpoint, b.final_checkpoint);
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, ResumeCase,
                         ::testing::Values(Case{"f32", 0, 1, 0.1}, Case{"f32", 2, 2, 0.0}, Case{"bf16", 0, 2, 0.1},
                                           Case{"bf16", 2, 1, 0.0}, Case{"f32", 1, 2, 0.1}, Case{"bf16", 3, 2, 0.1},
                                           Case{"bf16", 2, 2, 0.0, 0.5}, Case{"f32", 3, 1, 0.0, 1.0}),
                         [](const auto& info) {
                           return fmt::format("{}_zero{}_accum{}{}{}", info.param.dtype, info.param.stage,
                                              info.param.accum, info.param.dropout > 0 ? "_dropout" : "",
                                              info.param.offload > 0
                                                  ? fmt::format("_offload{}", static_cast<int>(info.param.offload * 100))
                                                  : "");
                         });

// The f32 masters and moments of every unit, concatenated over a checkpoint's shard files and cut
// to the unit's size: what any data-parallel size must load.
std::map<std::string, std::vector<float>> unpadded_states(const std::string& checkpoint) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(checkpoint))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::map<std::string, std::vector<float>> out;
  for (const std::string& f : files) {
    const SafetensorsFile s = read_safetensors(f);
    for (const std::string& name : s.order) {
      const std::vector<float> v = s.at(name).to_vector<float>();
      auto& dst = out[name];
      dst.insert(dst.end(), v.begin(), v.end());
    }
  }
  return out;
}

GptConfig model_of(const TrainConfig& cfg) { return GptConfig::from_dims(model_dims(cfg), DType::f32); }

// Loads `checkpoint` into a fresh engine over `group` and checks that this rank's shard of every
// unit equals the slice of the unpadded states, bit for bit, and that the compute parameters were
// refreshed from the loaded masters.
void expect_loads_exactly(const std::string& checkpoint, const TrainConfig& cfg, comm::Communicator& group, int stage,
                          const std::map<std::string, std::vector<float>>& want) {
  const GptConfig mc = model_of(cfg);
  Gpt model(mc, Device::cpu(), 999);  // another seed: every value must come from the checkpoint
  zero::ZeroConfig zc;
  zc.stage = stage;
  AdamWConfig ac;
  zero::ZeroEngine engine(model.parameters(), model.num_units(), group, ac, zc);
  const TrainingState st = load_checkpoint(checkpoint, engine, mc);
  EXPECT_EQ(st.step, kSteps);
  EXPECT_EQ(engine.step_count(), kSteps);
  auto states = engine.shard_states();
  const int r = engine.shard_rank();
  for (size_t u = 0; u < states.size(); ++u) {
    const auto& L = engine.layouts()[u];
    const std::pair<const char*, Tensor*> kinds[] = {
        {"master", &states[u].master}, {"exp_avg", &states[u].exp_avg}, {"exp_avg_sq", &states[u].exp_avg_sq}};
    for (const auto& [kind, tensor] : kinds) {
      const std::vector<float>& full_state = want.at(fmt::format("unit.{}.{}", u, kind));
      ASSERT_GE(full_state.size(), static_cast<size_t>(L.numel));
      const std::vector<float> got = tensor->to_vector<float>();
      int64_t differ = 0;
      for (int64_t i = 0; i < L.shard; ++i) {
        const int64_t g = r * L.shard + i;
        const float expect = g < L.numel ? full_state[static_cast<size_t>(g)] : 0.0f;  // padding is zero
        if (std::bit_cast<uint32_t>(got[static_cast<size_t>(i)]) != std::bit_cast<uint32_t>(expect)) ++differ;
      }
      EXPECT_EQ(differ, 0) << "unit " << u << " " << kind << " shard " << r << " of " << group.size();
    }
  }
  // The parameters the model computes with are the loaded masters (f32: the same values).
  if (stage < 3) {
    for (int u = 0; u < model.num_units(); ++u) {
      const auto& L = engine.layouts()[static_cast<size_t>(u)];
      const std::vector<float>& master = want.at(fmt::format("unit.{}.master", u));
      const std::vector<int> idx = model.unit_parameter_indices(u);
      for (size_t k = 0; k < idx.size(); ++k) {
        const std::vector<float> p = model.parameters()[static_cast<size_t>(idx[k])].tensor.to_vector<float>();
        const auto begin = master.begin() + L.offsets[k];
        EXPECT_TRUE(std::equal(p.begin(), p.end(), begin))
            << model.parameters()[static_cast<size_t>(idx[k])].name << " was not refreshed from the checkpoint";
      }
    }
  }
}

TEST_F(Resume, CheckpointsMoveBetweenDataParallelSizes) {
  if (world->size() != 2) GTEST_SKIP() << "needs 2 ranks";
  // Written by 2 ranks with ZeRO-2, micro-batch 2 each.
  RunSpec two;
  two.zero_stage = 2;
  two.dp = 2;
  two.dir = path("two");
  two.metrics = path("two.jsonl");
  const TrainOutcome a = train(make_config(two), *world, Device::cpu());
  const std::string ckpt2 = a.final_checkpoint;

  // Rank 0 alone: load it into 1 rank (stages 0 and 2) exactly, and continue the run from step 3
  // with micro-batch 4: the same global batch, so the same run up to summation order.
  std::unique_ptr<comm::Communicator> solo = world->split(world->rank() == 0 ? 0 : -1, 0);
  RunSpec one = two;
  one.dp = 1;
  one.micro_batch = 4;
  one.dir = path("one");
  one.metrics = path("one.jsonl");
  one.resume = (fs::path(two.dir) / checkpoint_dir_name(kHalf)).string();
  std::string ckpt1;
  // In a lambda, so that a failed ASSERT on rank 0 still reaches the collectives below.
  auto on_one_rank = [&] {
    const auto want = unpadded_states(ckpt2);
    expect_loads_exactly(ckpt2, make_config(one), *solo, 0, want);
    expect_loads_exactly(ckpt2, make_config(one), *solo, 2, want);
    const TrainOutcome b = train(make_config(one), *solo, Device::cpu());
    ckpt1 = b.final_checkpoint;
    const Logged l2 = read_metrics(two.metrics), l1 = read_metrics(one.metrics);
    ASSERT_EQ(l1.steps.size(), static_cast<size_t>(kSteps - kHalf));
    for (const auto& [step, j] : l1.steps) {
      const double got = j.at("loss").get<double>(), ref = l2.steps.at(step).at("loss").get<double>();
      EXPECT_NEAR(got, ref, 1e-5 * std::abs(ref)) << "loss at step " << step << " on 1 rank vs 2";
    }
    const auto w2 = unpadded_states(ckpt2), w1 = unpadded_states(ckpt1);
    for (int u = 0; u < 4; ++u) {
      const std::vector<float>& p1 = w1.at(fmt::format("unit.{}.master", u));
      const std::vector<float>& p2 = w2.at(fmt::format("unit.{}.master", u));
      double worst = 0;
      for (size_t i = 0; i < p1.size(); ++i) worst = std::max(worst, std::abs(double(p1[i]) - double(p2[i])));
      EXPECT_LT(worst, 1e-5) << "unit " << u << " masters after continuing on 1 rank";
    }
  };
  if (solo) on_one_rank();
  // And back: the 1-rank checkpoint (one shard file) into 2 ranks with ZeRO-2 and ZeRO-3.
  world->barrier()->wait();
  ckpt1 = (fs::path(one.dir) / checkpoint_dir_name(kSteps)).string();
  const auto want1 = unpadded_states(ckpt1);
  for (int stage : {2, 3}) expect_loads_exactly(ckpt1, make_config(two), *world, stage, want1);
}

}  // namespace
}  // namespace zt

// ranks: 2 4
// Memory savers against training without them: activation checkpointing (full, every k blocks,
// of the first N blocks only, selective; with dropout, under ZeRO 2-3 where recomputed units are
// gathered again), optimizer offload (stages 0-3) and parameter offload (stage 3). Several AdamW
// steps with gradient
// accumulation and clipping must give the same parameters, bit for bit where the arithmetic is the
// same: f32 on the CPU for every saver; on GPUs (bf16, the CUDA attention's dtype) for
// checkpointing, while offload there accumulates gradients in f32 on the host and runs the host
// AdamW, so it agrees to bf16 rounding. Also:
// model-state bytes per category and memory kind, as the allocators measure them, equal the
// engine's account and the estimator's; offload traffic and unit gathers are what they should be;
// peak activation memory falls mode by mode.
//
// ZT_TEST_DEVICE=cuda runs the same tests with one GPU per rank (NCCL); the default is the CPU (MPI).
#include <gtest/gtest.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>
#include <map>
#include <string>

#include "core/cuda_support.h"
#include "launch/estimate.h"
#include "models/checkpointing.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/zero/zero_engine.h"
#include "unit/gradcheck.h"
#include "unit/selective_block.h"

namespace zt {
namespace {

constexpr int64_t kB = 2, kT = 16, kAccum = 2, kSteps = 3, kVocab = 70;
constexpr double kLr = 3e-3, kClip = 0.5;

// On the CPU, d_model 21 makes every block unit odd-sized, so dp = 2 pads each one. The CUDA
// attention takes head dims of 64 or 128 only: one head of 64 there.
GptConfig tiny_config(Device device) {
  GptConfig c;
  c.n_layer = 4;
  c.n_head = device.is_cpu() ? 3 : 1;
  c.d_model = device.is_cpu() ? 21 : 64;
  c.vocab_size = kVocab;
  c.padded_vocab = pad_vocab(kVocab);
  c.seq_len = kT;
  c.dropout = 0.1;
  return c;
}

AdamWConfig adamw_config() {  // eps as in test_zero: above the rounding noise of exactly-zero gradients
  AdamWConfig a;
  a.eps = 1e-5;
  a.beta2 = 0.95;
  a.weight_decay = 0.1;
  return a;
}

struct Saver {
  std::string name;
  int stage = 3;
  bool offload_optimizer = false, offload_params = false;
  double offload_fraction = 1.0;  // Note [Partial optimizer offload]
  CheckpointPolicy policy;
  bool selective = false;
  int64_t loss_chunk_rows = 0;  // Note [Chunked loss]; 0: whole logits
};

struct Trained {
  std::vector<Tensor> params;  // every parameter, gathered, on the CPU (f32)
  zero::EngineCounters counters;
  int64_t peak_activations = 0;  // the largest activation high-water mark of a micro-batch
};

class MemorySavers : public ::testing::Test {
 protected:
  void SetUp() override {
    mpi_world = comm::MpiCommunicator::world();
    const char* env = std::getenv("ZT_TEST_DEVICE");
    const bool cuda = env != nullptr && std::string(env) == "cuda";
    if (cuda) {
      device = Device::cuda(mpi_world->rank() % std::max(1, zt::cuda::device_count()));
      nccl_world = comm::make_world_communicator(device);
    }
  }
  comm::Communicator& world() { return nccl_world ? *nccl_world : *mpi_world; }
  bool on_cpu() const { return device.is_cpu(); }
  DType compute() const { return on_cpu() ? DType::f32 : DType::bf16; }
  int64_t compute_bytes() const { return static_cast<int64_t>(dtype_size(compute())); }

  Trained train(const Saver& s) {
    const int dp = world().size(), rank = world().rank();
    GptConfig mc = tiny_config(device);
    mc.loss_chunk_rows = s.loss_chunk_rows;
    Gpt model(mc, device, 7);
    zero::ZeroConfig zc;
    zc.stage = s.stage;
    zc.compute_dtype = compute();
    zc.bucket_mb = 0.01;  // several buckets under stage 0
    zc.offload_optimizer = s.offload_optimizer;
    zc.offload_optimizer_fraction = s.offload_fraction;
    zc.offload_params = s.offload_params;
    zero::ZeroEngine engine(model.parameters(), model.num_units(), world(), adamw_config(), zc);
    Allocator& alloc = allocator_for(device);
    Trained out;
    for (int64_t step = 0; step < kSteps; ++step) {
      for (int64_t m = 0; m < kAccum; ++m) {
        engine.begin_micro_batch(m == kAccum - 1);
        Tensor all = randint({dp * kB, kT + 1}, kVocab, 1000 + static_cast<uint64_t>(step * 16 + m), 0, DType::i64);
        Tensor tok = to(contiguous(narrow(all, 0, rank * kB, kB)), device);
        Tensor ids = contiguous(narrow(tok, 1, 0, kT)), targets = contiguous(narrow(tok, 1, 1, kT));
        const StepRng rng{9, static_cast<uint64_t>(step), static_cast<uint64_t>(m)};
        const int64_t base = alloc.stats()[MemoryCategory::activations].current;
        alloc.reset_peak_stats();
        {
          MemoryCategoryScope scope(MemoryCategory::activations);
          Tensor loss = forward_loss_checkpointed(model, engine, ids, targets, rng, true, s.policy,
                                                  testing::recompute_block_fn(model, engine, rng, true, s.selective));
          backward(mul_scalar(loss, 1.0 / kAccum));
        }
        out.peak_activations =
            std::max(out.peak_activations, alloc.stats()[MemoryCategory::activations].peak - base);
        engine.end_backward();
      }
      EXPECT_FALSE(engine.step(kLr, kClip).skipped);
    }
    for (int u = 0; u < model.num_units(); ++u) {
      for (const Tensor& p : engine.acquire(u)) out.params.push_back(clone(to(to(p.detach(), DType::f32), Device::cpu())));
      engine.release(u);
    }
    out.counters = engine.counters();
    return out;
  }

  // The run without savers, once per stage.
  const Trained& baseline(int stage) {
    auto it = baselines.find(stage);
    if (it == baselines.end()) {
      Saver plain;
      plain.stage = stage;
      it = baselines.emplace(stage, train(plain)).first;
    }
    return it->second;
  }

  // Every element bit for bit (tolerance 0), or each tensor within `tolerance` in relative norm
  // ||got - want|| / ||want||.
  void expect_same_parameters(const Trained& got, const Trained& want, double tolerance, const std::string& what) {
    ASSERT_EQ(got.params.size(), want.params.size());
    double worst = 0;
    for (size_t i = 0; i < got.params.size(); ++i) {
      const double diff = max_abs_diff(got.params[i], want.params[i]);
      const double relative = norm(sub(got.params[i], want.params[i])) / std::max(1e-30, norm(want.params[i]));
      worst = std::max(worst, relative);
      if (tolerance == 0) {
        EXPECT_EQ(diff, 0.0) << what << ": parameter " << i << " of " << got.params.size();
      } else {
        EXPECT_LE(relative, tolerance) << what << ": parameter " << i;
      }
    }
    if (world().rank() == 0) std::printf("[ savers ] %-40s largest relative difference %.3g\n", what.c_str(), worst);
  }

  std::unique_ptr<comm::MpiCommunicator> mpi_world;
  std::unique_ptr<comm::Communicator> nccl_world;
  Device device = Device::cpu();
  std::map<int, Trained> baselines;
};

Saver checkpointing(std::string name, int stage, Recompute mode, int k, bool selective, int num_blocks = 0) {
  Saver s;
  s.name = std::move(name);
  s.stage = stage;
  s.policy = {mode, k, num_blocks};
  s.selective = selective;
  return s;
}

Saver offload(std::string name, int stage, bool optimizer, bool params, double fraction = 1.0) {
  Saver s;
  s.name = std::move(name);
  s.stage = stage;
  s.offload_optimizer = optimizer;
  s.offload_params = params;
  s.offload_fraction = fraction;
  return s;
}

TEST_F(MemorySavers, ActivationCheckpointingGivesTheSameParameters) {
  const Saver savers[] = {
      checkpointing("stage 3, full, every block", 3, Recompute::full, 1, false),
      checkpointing("stage 3, full, every 3 blocks", 3, Recompute::full, 3, false),
      checkpointing("stage 3, selective", 3, Recompute::selective, 1, true),
      checkpointing("stage 2, full, every 2 blocks", 2, Recompute::full, 2, false),
      checkpointing("stage 0, selective inside full", 0, Recompute::full, 2, true),
      checkpointing("stage 3, full, first 2 of 4 blocks", 3, Recompute::full, 1, false, 2),
      checkpointing("stage 2, full, first 3 blocks, every 2", 2, Recompute::full, 2, false, 3),
  };
  for (const Saver& s : savers) {
    SCOPED_TRACE(s.name);
    const Trained& want = baseline(s.stage);
    const Trained got = train(s);
    // Recomputation replays the same kernels on the same inputs: exact on any device.
    expect_same_parameters(got, want, 0.0, s.name);
    // A recomputed unit stays gathered for its backward: no more all-gathers than without.
    EXPECT_EQ(got.counters.unit_gathers, want.counters.unit_gathers);
    EXPECT_LT(got.peak_activations, want.peak_activations);
  }
}

TEST_F(MemorySavers, PeakActivationsFallModeByMode) {
  const Trained& none = baseline(3);
  const Trained selective = train(checkpointing("selective", 3, Recompute::selective, 1, true));
  const Trained full = train(checkpointing("full", 3, Recompute::full, 1, false));
  const Trained partial = train(checkpointing("full, first 2 of 4 blocks", 3, Recompute::full, 1, false, 2));
  if (world().rank() == 0)
    std::printf("[ savers ] peak activations per micro-batch (stage 3): none %lld B, selective %lld B, full %lld B, "
                "full of the first 2 blocks %lld B\n",
                static_cast<long long>(none.peak_activations), static_cast<long long>(selective.peak_activations),
                static_cast<long long>(full.peak_activations), static_cast<long long>(partial.peak_activations));
  EXPECT_LT(selective.peak_activations, none.peak_activations);
  EXPECT_LT(full.peak_activations, selective.peak_activations);
  // Checkpointing some of the blocks lies between none and all of them.
  EXPECT_LT(partial.peak_activations, none.peak_activations);
  EXPECT_GT(partial.peak_activations, full.peak_activations);
}

// The chunked head and loss (Note [Chunked loss]) train the same model as whole logits, under every
// ZeRO stage and with the other savers: the same arithmetic up to the order of the head weight
// gradient's sum over rows and where the mean's factor is applied (f32 on the CPU; on a GPU the
// whole-logits path rounds dlogits with that factor to bf16 first).
TEST_F(MemorySavers, ChunkedLossGivesTheSameParameters) {
  std::vector<Saver> savers;
  for (int stage : {0, 2, 3}) {
    Saver s;
    s.name = "stage " + std::to_string(stage) + ", loss in chunks of 5 rows";
    s.stage = stage;
    s.loss_chunk_rows = 5;  // 32 rows per rank and micro-batch: 6 whole chunks and one of 2
    savers.push_back(s);
  }
  Saver both = checkpointing("stage 3, full checkpointing and optimizer offload, chunks of 8", 3, Recompute::full, 1,
                             false);
  both.offload_optimizer = true;
  both.loss_chunk_rows = 8;
  savers.push_back(both);
  const double tolerance = on_cpu() ? 1e-5 : 2e-2;
  for (const Saver& s : savers) {
    SCOPED_TRACE(s.name);
    expect_same_parameters(train(s), baseline(s.stage), tolerance, s.name);
  }
}

// Per unit sizes, from the model's parameter list (independently of the engine): the elements a
// rank's optimizer steps per unit are the shard under stages 1-3 and the whole unit under stage 0.
std::vector<int64_t> unit_elements(Device device, int dp, int stage) {
  Gpt model(tiny_config(device), Device::cpu(), 7);
  std::vector<int64_t> numel(static_cast<size_t>(model.num_units()), 0), out;
  for (const Parameter& p : model.parameters()) numel[static_cast<size_t>(p.unit)] += p.tensor.numel();
  for (int64_t n : numel) out.push_back(stage == 0 ? n : shard_elements(n, dp));
  return out;
}

TEST_F(MemorySavers, OffloadGivesTheSameParameters) {
  const Saver savers[] = {
      offload("stage 0, optimizer offload", 0, true, false), offload("stage 1, optimizer offload", 1, true, false),
      offload("stage 2, optimizer offload", 2, true, false), offload("stage 3, optimizer offload", 3, true, false),
      offload("stage 3, parameter offload", 3, false, true), offload("stage 3, both offloads", 3, true, true),
      offload("stage 2, half the optimizer offloaded", 2, true, false, 0.5),
      offload("stage 1, a third of the optimizer offloaded", 1, true, false, 0.34),
      offload("stage 3, half the optimizer and the parameters offloaded", 3, true, true, 0.5),
  };
  // On the CPU the arithmetic is the same, and so must be every bit. On a GPU (bf16) the offloaded
  // run accumulates micro-batches in f32 and runs AdamW on the host, the plain one accumulates in
  // bf16 and runs it on the device: they agree to bf16 rounding (2^-8 relative per element).
  const double tolerance = on_cpu() ? 0.0 : 1e-2;
  for (const Saver& s : savers) {
    SCOPED_TRACE(s.name);
    const Trained got = train(s);
    expect_same_parameters(got, baseline(s.stage), tolerance, s.name);
    // Traffic, in compute-dtype bytes: each reduced gradient shard goes to the host (every
    // micro-batch under stages 2-3, once per step under 0-1); the masters come back once per step,
    // unless they are the host parameter shards themselves (f32, both offloads); parameter fetches
    // are checked below.
    // Only offloaded units cross (Note [Partial optimizer offload]; unit_elements' shards are in the
    // same order as the units' full sizes the rule reads, and the rule keeps it).
    const std::vector<int64_t> shards = unit_elements(device, world().size(), s.stage);
    const std::vector<bool> crossing =
        zero::offloaded_units(unit_elements(device, 1, 0), s.offload_optimizer ? s.offload_fraction : 1.0);
    int64_t elements = 0, offloaded_units = 0;
    for (size_t u = 0; u < shards.size(); ++u)
      if (crossing[u]) elements += shards[u], ++offloaded_units;
    if (s.offload_fraction < 1.0) {  // a partial offload keeps some units, and moves some
      EXPECT_GT(offloaded_units, 0);
      EXPECT_LT(offloaded_units, static_cast<int64_t>(shards.size()));
    }
    const int64_t reductions = s.stage >= 2 ? kSteps * kAccum : kSteps;
    EXPECT_EQ(got.counters.offload.device_to_host_bytes,
              s.offload_optimizer ? reductions * elements * compute_bytes() : 0);
    if (!s.offload_params) {
      EXPECT_EQ(got.counters.offload.host_to_device_bytes, s.offload_optimizer ? kSteps * elements * compute_bytes() : 0);
    }
  }
  // Everything together.
  Saver all = offload("stage 3, all savers", 3, true, true);
  all.policy = {Recompute::full, 2};
  all.selective = true;
  expect_same_parameters(train(all), baseline(3), tolerance, all.name);
}

TEST_F(MemorySavers, ParameterOffloadFetchesEachGatheredShard) {
  // The same gathers as with the shards on the device; each one fetches one unit's shard.
  const Trained& on_device = baseline(3);
  const Trained offloaded = train(offload("stage 3, parameter offload", 3, false, true));
  EXPECT_EQ(offloaded.counters.unit_gathers, on_device.counters.unit_gathers);
  EXPECT_EQ(on_device.counters.offload.host_to_device_bytes, 0);
  EXPECT_EQ(on_device.counters.offload.device_to_host_bytes, 0);
  EXPECT_EQ(offloaded.counters.offload.device_to_host_bytes, 0);  // the optimizer is not offloaded
  const std::vector<int64_t> shards = unit_elements(device, world().size(), 3);
  const int64_t smallest = *std::min_element(shards.begin(), shards.end());
  const int64_t largest = *std::max_element(shards.begin(), shards.end());
  const int64_t gathers = offloaded.counters.unit_gathers, bytes = offloaded.counters.offload.host_to_device_bytes;
  EXPECT_GE(bytes, gathers * smallest * compute_bytes());
  EXPECT_LE(bytes, gathers * largest * compute_bytes());
  EXPECT_EQ(bytes % compute_bytes(), 0);
}

// ---- model-state bytes: allocators, engine, estimator ----------------------------------------

TEST_F(MemorySavers, ModelStateBytesMatchTheAllocatorsAndTheEstimator) {
  const int dp = world().size();
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int stage = 0; stage <= 3; ++stage) {
      for (int mode = 0; mode < 6; ++mode) {
        // Modes 4 and 5: half the optimizer offloaded (Note [Partial optimizer offload]).
        const bool opt = (mode & 1) || mode >= 4, params = mode & 2 || mode == 5;
        const double fraction = mode >= 4 ? 0.5 : 1.0;
        if (params && stage != 3) continue;
        SCOPED_TRACE(fmt::format("{} stage {} offload optimizer {} (fraction {}) params {}", dtype_name(dtype), stage,
                                 opt, fraction, params));
        Allocator& dev = allocator_for(device);
        Allocator& host = allocator_for(Device::cpu());
        // Host states that cross every step are page-locked on GPU runs (Note [Parameter offload]):
        // their bytes are in the pinned allocator's statistics (the CPU allocator itself on CPU runs).
        Allocator& pinned = zt::cuda::pinned_host_allocator();
        const bool separate_pinned = &pinned != &host;
        auto host_stats = [&] {
          MemoryStats s = host.stats();
          if (separate_pinned)
            for (MemoryCategory c : {MemoryCategory::parameters, MemoryCategory::gradients, MemoryCategory::optimizer})
              s.by_category[static_cast<size_t>(c)].current += pinned.stats()[c].current;
          return s;
        };
        const MemoryStats dev0 = dev.stats(), host0 = host_stats();
        auto model = std::make_unique<Gpt>(tiny_config(device), device, 7);
        zero::ZeroConfig zc;
        zc.stage = stage;
        zc.compute_dtype = dtype;
        zc.offload_optimizer = opt;
        zc.offload_optimizer_fraction = fraction;
        zc.offload_params = params;
        zero::ZeroEngine engine(model->parameters(), model->num_units(), world(), adamw_config(), zc);
        const MemoryStats dev1 = dev.stats(), host1 = host_stats();
        const zero::ModelStateBytes b = engine.model_state_bytes();
        auto delta = [](const MemoryStats& after, const MemoryStats& before, MemoryCategory c) {
          return after[c].current - before[c].current;
        };
        if (on_cpu()) {  // one allocator: device and host bytes together
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::parameters), b.parameters + b.host_parameters);
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::gradients), b.gradients + b.host_gradients);
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::optimizer), b.optimizer + b.host_optimizer);
        } else {
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::parameters), b.parameters);
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::gradients), b.gradients);
          EXPECT_EQ(delta(dev1, dev0, MemoryCategory::optimizer), b.optimizer);
          EXPECT_EQ(delta(host1, host0, MemoryCategory::parameters), b.host_parameters);
          EXPECT_EQ(delta(host1, host0, MemoryCategory::gradients), b.host_gradients);
          EXPECT_EQ(delta(host1, host0, MemoryCategory::optimizer), b.host_optimizer);
        }
        // Offload moves states, and only the ones it names; a partial one keeps some on the device.
        const bool whole_optimizer = opt && fraction == 1.0;
        EXPECT_EQ(b.optimizer == 0, whole_optimizer);
        EXPECT_EQ(b.gradients == 0, whole_optimizer && stage >= 2);
        EXPECT_EQ(b.host_optimizer > 0, opt);
        EXPECT_EQ(b.parameters == 0, params);
        EXPECT_EQ(b.host_total() == 0, !opt && !params);

        const GptConfig c = tiny_config(device);
        MemoryEstimateInput in;
        in.dims = GptDims{c.n_layer, c.n_head, c.d_model, c.vocab_size, c.padded_vocab, c.seq_len};
        in.dp = dp;
        in.zero_stage = stage;
        in.offload_optimizer = opt;
        in.offload_optimizer_fraction = fraction;
        in.offload_params = params;
        in.precision = dtype == DType::f32 ? Precision::f32 : Precision::bf16;
        in.seq_len = kT;
        const StageMemory est = estimate_memory(in).worst();
        EXPECT_EQ(est.parameters, b.parameters);
        EXPECT_EQ(est.gradients, b.gradients);
        EXPECT_EQ(est.optimizer_states, b.optimizer);
        EXPECT_EQ(est.host, b.host_total());
      }
    }
  }
}

TEST_F(MemorySavers, ParameterOffloadNeedsStage3) {
  Gpt model(tiny_config(device), device, 7);
  zero::ZeroConfig zc;
  zc.stage = 2;
  zc.offload_params = true;
  EXPECT_ZT_ERROR(zero::ZeroEngine(model.parameters(), model.num_units(), world(), adamw_config(), zc), "[zero]",
                  "offload_params needs stage 3", "got stage 2");
}

}  // namespace
}  // namespace zt

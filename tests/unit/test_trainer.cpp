// `zerotrain train` in one process (an MPI world of one): resume is bit-identical to a straight run
// (f32 and bf16, dropout, gradient accumulation); a fresh run refuses a checkpoint folder holding a
// later step it would silently not overwrite; bad input through the built binary exits with code 1
// and a message naming the problem; and the demo config learns.
#include <gtest/gtest.h>
#include <omp.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "process_test_util.h"
#include "core/error.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/data/shard.h"
#include "launch/data/tokenizer.h"
#include "launch/trainer.h"
#include "models/hf_gpt2.h"
#include "models/safetensors.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/mpi_session.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using testing::MpiEnvironment;
using testing::error_of;



class Trainer : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = fmt::format("zt_test_trainer_{}_{}_{}", getpid(), info->test_suite_name(), info->name());
    std::replace(name.begin(), name.end(), '/', '_');
    root = (fs::temp_directory_path() / name).string();
    fs::remove_all(root);
    fs::create_directories(root);
  }
  void TearDown() override { fs::remove_all(root); }
  std::string path(const std::string& name) const { return (fs::path(root) / name).string(); }
  std::string root;
};

constexpr int64_t kSteps = 6, kHalf = 3;

// A small run on the embedded corpus: 2 layers, d_model 32, 16 tokens, checkpoints every kHalf steps.
TrainConfig small_config(const std::string& dir, const std::string& metrics, const std::vector<std::string>& extra) {
  TrainConfig cfg = parse_config_text(fmt::format(R"(
model {{ n_layer: 2 n_head: 2 d_model: 32 vocab_size: 257 seq_len: 16 }}
optimizer {{ lr: 3e-3 }}
schedule {{ warmup_steps: 2 }}
train {{ steps: {} micro_batch_size: 2 seed: 4242 device: cpu }}
data {{ train: "embedded:" val: "embedded:" val_every: 2 val_steps: 2 }}
checkpoint {{ dir: "{}" every: {} keep_last: 0 resume: "none" }}
logging {{ every: 1 metrics_jsonl: "{}" }}
)",
                                                  kSteps, dir, kHalf, metrics),
                                      "<test_trainer>");
  apply_overrides(cfg, extra);
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

std::map<int64_t, nlohmann::json> logged_steps(const std::string& metrics) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss") || j.contains("val_loss")) {
      auto& slot = out[j.at("step").get<int64_t>()];
      for (auto& [k, v] : j.items()) slot[k] = v;
    }
  }
  return out;
}

// Every value of every tensor of both checkpoints' shard files, compared bit for bit.
void expect_same_states(const std::string& a, const std::string& b) {
  const SafetensorsFile fa = read_safetensors((fs::path(a) / "shard_00000.safetensors").string());
  const SafetensorsFile fb = read_safetensors((fs::path(b) / "shard_00000.safetensors").string());
  ASSERT_EQ(fa.order, fb.order);
  for (const std::string& name : fa.order) {
    const std::vector<float> va = fa.at(name).to_vector<float>(), vb = fb.at(name).to_vector<float>();
    ASSERT_EQ(va.size(), vb.size()) << name;
    size_t differ = 0;
    for (size_t i = 0; i < va.size(); ++i) differ += std::bit_cast<uint32_t>(va[i]) != std::bit_cast<uint32_t>(vb[i]);
    EXPECT_EQ(differ, 0u) << name << ": " << differ << " of " << va.size() << " values differ";
  }
}

struct ResumeCase {
  const char* name;
  std::vector<std::string> overrides;
};

class TrainerResume : public Trainer, public ::testing::WithParamInterface<ResumeCase> {};

TEST_P(TrainerResume, IsBitIdenticalToTheStraightRun) {
  const std::vector<std::string>& extra = GetParam().overrides;
  const TrainOutcome a = train(small_config(path("a"), path("a.jsonl"), extra), MpiEnvironment::world(), Device::cpu());
  // The interrupted run: only its checkpoint at kHalf survives; resume=auto finds it.
  fs::create_directories(path("b"));
  fs::copy(fs::path(path("a")) / checkpoint_dir_name(kHalf), fs::path(path("b")) / checkpoint_dir_name(kHalf),
           fs::copy_options::recursive);
  std::vector<std::string> resume = extra;
  resume.push_back("checkpoint.resume=auto");
  const TrainOutcome b = train(small_config(path("b"), path("b.jsonl"), resume), MpiEnvironment::world(), Device::cpu());

  EXPECT_EQ(b.steps_done, kSteps);
  const auto la = logged_steps(path("a.jsonl")), lb = logged_steps(path("b.jsonl"));
  ASSERT_EQ(la.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(lb.size(), static_cast<size_t>(kSteps - kHalf));
  for (const auto& [step, j] : lb) {
    ASSERT_TRUE(la.count(step)) << step;
    for (const char* key : {"loss", "lr", "grad_norm", "val_loss"})
      if (j.contains(key)) {
        EXPECT_EQ(j.at(key).get<double>(), la.at(step).at(key).get<double>()) << key << " at step " << step;
      }
  }
  EXPECT_TRUE(lb.at(kSteps).contains("val_loss"));
  EXPECT_NE(la.at(kSteps).at("loss").get<double>(), la.at(1).at("loss").get<double>());
  expect_same_states(a.final_checkpoint, b.final_checkpoint);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, TrainerResume,
    ::testing::Values(ResumeCase{"f32", {"precision.dtype=f32"}},
                      ResumeCase{"bf16_dropout", {"precision.dtype=bf16", "model.dropout=0.1"}},
                      ResumeCase{"f32_accum2_dropout", {"precision.dtype=f32", "train.grad_accumulation=2", "model.dropout=0.1"}},
                      ResumeCase{"bf16_accum2_zero2", {"precision.dtype=bf16", "train.grad_accumulation=2", "parallel.zero_stage=2"}}),
    [](const auto& info) { return std::string(info.param.name); });

// Activation checkpointing from the config (all blocks, or only the first of the 2) trains the same
// model as none, bit for bit: the replays are exact (Note [Checkpointing modes]).
TEST_F(Trainer, ActivationCheckpointingTrainsTheSameModel) {
  const std::vector<std::string> base = {"precision.dtype=f32", "model.dropout=0.1", "train.grad_accumulation=2"};
  const TrainOutcome plain = train(small_config(path("none"), "", base), MpiEnvironment::world(), Device::cpu());
  const std::vector<std::vector<std::string>> settings = {
      {"parallel.activation_checkpointing=full"},
      {"parallel.activation_checkpointing=full", "parallel.checkpoint_num_blocks=1"},
      {"parallel.activation_checkpointing=full", "parallel.checkpoint_num_blocks=2",
       "parallel.checkpoint_every_k_blocks=2"}};
  for (size_t i = 0; i < settings.size(); ++i) {
    SCOPED_TRACE(settings[i].back());
    std::vector<std::string> overrides = base;
    overrides.insert(overrides.end(), settings[i].begin(), settings[i].end());
    const TrainOutcome got =
        train(small_config(path("full_" + std::to_string(i)), "", overrides), MpiEnvironment::world(), Device::cpu());
    EXPECT_EQ(got.last_loss, plain.last_loss);
    EXPECT_EQ(got.last_val_loss, plain.last_val_loss);
    expect_same_states(got.final_checkpoint, plain.final_checkpoint);
  }
}

// parallel.loss_chunk_rows from the config: the chunked head (Note [Chunked loss]) trains the same
// model as whole logits up to f32 rounding (its weight gradient sums the rows chunk by chunk).
TEST_F(Trainer, ChunkedLossTrainsTheSameModel) {
  const std::vector<std::string> base = {"precision.dtype=f32", "train.grad_accumulation=2"};
  std::vector<std::string> whole = base, chunked = base;
  whole.push_back("parallel.loss_chunk_rows=0");
  chunked.push_back("parallel.loss_chunk_rows=7");
  const TrainOutcome a = train(small_config(path("whole"), "", whole), MpiEnvironment::world(), Device::cpu());
  const TrainOutcome b = train(small_config(path("chunked"), "", chunked), MpiEnvironment::world(), Device::cpu());
  EXPECT_NEAR(b.last_loss, a.last_loss, 1e-5 * std::abs(a.last_loss));
  EXPECT_NEAR(b.last_val_loss, a.last_val_loss, 1e-5 * std::abs(a.last_val_loss));
  EXPECT_NE(b.last_loss, 0.0);
}

TEST_F(Trainer, RefusesToStartBeneathALaterCheckpoint) {
  train(small_config(path("ck"), "", {"precision.dtype=f32"}), MpiEnvironment::world(), Device::cpu());
  // A fresh run in the same folder: its step_3 and step_6 would silently stay the old run's.
  std::string msg = error_of(
      [&] { train(small_config(path("ck"), "", {"precision.dtype=f32"}), MpiEnvironment::world(), Device::cpu()); });
  EXPECT_NE(msg.find("step_00000006"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checkpoint.resume=auto"), std::string::npos) << msg;
  // Resuming from the older one while the newer is there: the same.
  const std::string older = (fs::path(path("ck")) / checkpoint_dir_name(kHalf)).string();
  msg = error_of([&] {
    train(small_config(path("ck"), "", {"precision.dtype=f32", "checkpoint.resume=" + older}), MpiEnvironment::world(),
          Device::cpu());
  });
  EXPECT_NE(msg.find("step_00000006"), std::string::npos) << msg;
  // resume=auto continues the finished run: nothing left to do, the checkpoint stays as it is.
  const uint32_t crc = file_crc32((fs::path(path("ck")) / checkpoint_dir_name(kSteps) / "shard_00000.safetensors").string());
  const TrainOutcome again = train(small_config(path("ck"), "", {"precision.dtype=f32", "checkpoint.resume=auto"}),
                                   MpiEnvironment::world(), Device::cpu());
  EXPECT_EQ(again.final_checkpoint, (fs::path(path("ck")) / checkpoint_dir_name(kSteps)).string());
  EXPECT_EQ(crc, file_crc32((fs::path(path("ck")) / checkpoint_dir_name(kSteps) / "shard_00000.safetensors").string()));
}

TEST_F(Trainer, RefusesACheckpointOfAnotherRun) {
  train(small_config(path("ck"), "", {"precision.dtype=f32"}), MpiEnvironment::world(), Device::cpu());
  const std::string ckpt = (fs::path(path("ck")) / checkpoint_dir_name(kHalf)).string();
  std::string msg = error_of([&] {
    train(small_config(path("other"), "", {"model.n_layer=3", "checkpoint.resume=" + ckpt}), MpiEnvironment::world(),
          Device::cpu());
  });
  EXPECT_NE(msg.find("n_layer"), std::string::npos) << msg;
  msg = error_of([&] {
    train(small_config(path("other"), "", {"train.seed=1", "checkpoint.resume=" + ckpt}), MpiEnvironment::world(),
          Device::cpu());
  });
  EXPECT_NE(msg.find("train.seed"), std::string::npos) << msg;
}

// ---- the built binary ---------------------------------------------------------------------------

// build/bin/zerotrain, next to this test's build/tests/ folder.
std::string zerotrain_binary() {
  return (fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bin" / "zerotrain").string();
}

struct Exit {
  int code = -1;
  std::string output;  // stdout and stderr
};

Exit run_binary(const std::string& args, const std::string& cwd) {
  const std::string cmd = fmt::format("cd '{}' && OMP_NUM_THREADS=1 '{}' {} 2>&1", cwd, zerotrain_binary(), args);
  Exit e;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return e;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) e.output.append(buf.data(), n);
  const int status = pclose(pipe);
  e.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return e;
}

class Cli : public Trainer {
 protected:
  void SetUp() override {
    Trainer::SetUp();
    if (!fs::exists(zerotrain_binary())) GTEST_SKIP() << zerotrain_binary() << " is not built (target zerotrain)";
    std::ofstream(path("run.pbtxt")) << R"(
model { n_layer: 1 n_head: 2 d_model: 16 vocab_size: 257 seq_len: 8 }
train { steps: 2 micro_batch_size: 2 device: cpu }
precision { dtype: f32 }
data { val: "" }
checkpoint { dir: "ck" resume: "none" }
logging { every: 1 }
)";
  }
  // Exit code 1 and every fragment in the message.
  void expect_refused(const std::string& args, const std::vector<std::string>& fragments) {
    const Exit e = run_binary(args, root);
    EXPECT_EQ(e.code, 1) << args << "\n" << e.output;
    for (const std::string& f : fragments) EXPECT_NE(e.output.find(f), std::string::npos) << f << " in:\n" << e.output;
  }
};

// estimate --gpu-memory: whether the run fits, and the offload fraction that makes it fit (the
// estimator's own search, smallest_offload_fraction, is held to the estimate in test_estimate).
TEST_F(Cli, EstimateSaysWhetherItFitsAndWhatOffloadMakesItFit) {
  const std::string model = "estimate --preset 124M --set parallel.dp=1 --set train.micro_batch_size=4 ";
  const Exit roomy = run_binary(model + "--gpu-memory 100", root);
  ASSERT_EQ(roomy.code, 0) << roomy.output;
  EXPECT_NE(roomy.output.find("fits in 100 GiB per GPU (90.00 GiB of estimate, the rest left for the allocator's "
                               "cache and workspaces): yes"),
            std::string::npos)
      << roomy.output;
  EXPECT_EQ(roomy.output.find("smallest optimizer offload"), std::string::npos) << roomy.output;
  // 124M at micro-batch 4 needs about 3.5 GiB with ZeRO-2 on one rank; 3 GiB (2 GiB of estimate after
  // the headroom) needs part of the optimizer offloaded.
  const Exit tight = run_binary(model + "--set parallel.zero_stage=2 --gpu-memory 3", root);
  ASSERT_EQ(tight.code, 0) << tight.output;
  EXPECT_NE(tight.output.find("fits in 3 GiB per GPU (2.00 GiB of estimate"), std::string::npos) << tight.output;
  EXPECT_NE(tight.output.find("): no (3.45 GiB needed"), std::string::npos) << tight.output;
  EXPECT_NE(tight.output.find("--set parallel.offload_optimizer_fraction=0."), std::string::npos) << tight.output;
  // 124M at micro-batch 16 (8.0 GiB) in 5 GiB (4 GiB of estimate): checkpointing 9 of the 12 blocks is
  // the first lever.
  const Exit big = run_binary("estimate --preset 124M --set parallel.dp=1 --set train.micro_batch_size=16 --gpu-memory 5",
                              root);
  ASSERT_EQ(big.code, 0) << big.output;
  EXPECT_NE(big.output.find("fewest recomputed blocks that fit: --set parallel.activation_checkpointing=full --set "
                            "parallel.checkpoint_num_blocks=9"),
            std::string::npos)
      << big.output;
  const Exit stage0 = run_binary(model + "--gpu-memory 1", root);
  EXPECT_NE(stage0.output.find("optimizer offload needs parallel.zero_stage >= 1"), std::string::npos) << stage0.output;
}

TEST_F(Cli, TrainsAndExportsAGoodConfig) {
  const Exit e = run_binary("train run.pbtxt", root);
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("step 2/2"), std::string::npos) << e.output;
  const Exit x = run_binary("export ck/step_00000002 out.safetensors", root);
  ASSERT_EQ(x.code, 0) << x.output;
  // The export holds the checkpoint's masters: import it and compare with the shard.
  GptConfig c;
  c.n_layer = 1;
  c.n_head = 2;
  c.d_model = 16;
  c.vocab_size = 257;
  c.padded_vocab = pad_vocab(257);
  c.seq_len = 8;
  Gpt model(c, Device::cpu(), 5);
  load_hf_gpt2(model, path("out.safetensors"));
  const SafetensorsFile shard = read_safetensors(path("ck/step_00000002/shard_00000.safetensors"));
  for (int u = 0; u < model.num_units(); ++u) {
    const std::vector<float> flat = shard.at(fmt::format("unit.{}.master", u)).to_vector<float>();
    size_t offset = 0;
    for (int i : model.unit_parameter_indices(u)) {
      const Parameter& p = model.parameters()[static_cast<size_t>(i)];
      std::vector<float> got = p.tensor.to_vector<float>();
      if (p.name == "wte.weight") got.resize(static_cast<size_t>(257 * 16));  // padding rows are not exported
      EXPECT_TRUE(std::equal(got.begin(), got.end(), flat.begin() + static_cast<std::ptrdiff_t>(offset))) << p.name;
      offset += static_cast<size_t>(p.tensor.numel());
    }
  }
  // A damaged checkpoint is not exported.
  fs::resize_file(path("ck/step_00000002/shard_00000.safetensors"), 100);
  expect_refused("export ck/step_00000002 out2.safetensors", {"shard_00000.safetensors", "100 bytes"});
  EXPECT_FALSE(fs::exists(path("out2.safetensors")));
  expect_refused("export ck/nothing out2.safetensors", {"ck/nothing", "checkpoint.pb"});
}

TEST_F(Cli, RefusesAnUnknownConfigField) {
  std::ofstream(path("bad.pbtxt")) << "model {\n  n_layers: 2\n}\n";
  expect_refused("train bad.pbtxt", {"bad.pbtxt:2", "n_layers", "n_layer"});
  expect_refused("train missing.pbtxt", {"missing.pbtxt"});
}

TEST_F(Cli, RefusesBadSetValues) {
  expect_refused("train run.pbtxt --set optimizer.lr=abc", {"optimizer.lr", "abc", "number"});
  expect_refused("train run.pbtxt --set optimizer.nope=1", {"nope", "optimizer"});
  expect_refused("train run.pbtxt --set train.steps", {"train.steps", "section.field=value"});
  expect_refused("train run.pbtxt --set precision.dtype=f8", {"precision.dtype", "f8"});
}

TEST_F(Cli, RefusesDataThatIsNotTokenShards) {
  {
    std::ofstream f(path("junk.bin"), std::ios::binary);
    for (int i = 0; i < 3000; ++i) f.put(static_cast<char>(i * 37));
  }
  expect_refused("train run.pbtxt --set data.train=junk.bin", {"junk.bin", "not an llm.c token shard"});
  expect_refused("train run.pbtxt --set 'data.train=nowhere/*.bin'", {"nowhere/*.bin", "no file matches"});
  // A real shard whose tokens the model cannot embed.
  std::vector<int32_t> tokens(400);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37) % 300);  // 259 at position 7
  data::write_shard(path("wide.bin"), tokens);
  expect_refused("train run.pbtxt --set data.train=wide.bin", {"wide.bin", "257"});
}

TEST_F(Cli, RefusesATokenizerLargerThanTheModel) {
  expect_refused("train run.pbtxt --set model.vocab_size=100", {"model.vocab_size", "257"});
  // A GPT-2 BPE tokenizer of 260 tokens: the 256 bytes, three merges and <|endoftext|>.
  fs::create_directories(path("bpe"));
  nlohmann::json enc = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) enc[data::gpt2_byte_to_unicode()[static_cast<size_t>(b)]] = b;
  enc["he"] = 256;
  enc["ll"] = 257;
  enc["or"] = 258;
  enc["<|endoftext|>"] = 259;
  std::ofstream(path("bpe/encoder.json")) << enc.dump();
  std::ofstream(path("bpe/vocab.bpe")) << "#version: 0.2\nh e\nl l\no r\n";
  expect_refused("train run.pbtxt --set data.tokenizer=bpe --set model.vocab_size=258",
                 {"model.vocab_size (258)", "260"});
  // And the same tokenizer with room for it trains.
  const Exit ok = run_binary("train run.pbtxt --set data.tokenizer=bpe --set model.vocab_size=260", root);
  EXPECT_EQ(ok.code, 0) << ok.output;
}

// ---- the demo -----------------------------------------------------------------------------------

TEST_F(Trainer, TheDemoLearns) {
  TrainConfig cfg = load_config(std::string(ZT_SOURCE_DIR) + "/examples/tiny.pbtxt",
                                {"train.steps=60", "model.seq_len=64", "logging.sample_every=0", "data.val_steps=4",
                                 "checkpoint.dir=" + path("ck"), "logging.metrics_jsonl=" + path("m.jsonl")});
  const TrainOutcome o = train(cfg, MpiEnvironment::world(), Device::cpu());
  EXPECT_EQ(o.steps_done, 60);
  EXPECT_GT(o.first_loss, 5.0);  // about ln(257) = 5.55 at initialisation
  EXPECT_LT(o.last_loss, 0.8 * o.first_loss) << "first " << o.first_loss << ", last " << o.last_loss;
  EXPECT_LT(o.last_val_loss, 0.8 * o.first_loss) << "first " << o.first_loss << ", val " << o.last_val_loss;
}

}  // namespace
}  // namespace zt

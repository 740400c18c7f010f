// Checkpoints (launch/checkpoint.h, Note [Checkpoint safety]) in one process, an MPI world of one:
// a save/load round trip restores every f32 master and Adam moment bit for bit into a model built
// with another seed; damaged checkpoints are refused naming the file and the fault (checksum,
// size, missing metadata, another model's dimensions); interrupted saves (step_N.tmp) are never
// taken for checkpoints and are cleaned up; an existing step_N is never overwritten; keep_last
// prunes the oldest.
#include <gtest/gtest.h>
#include <omp.h>

#include <unistd.h>

#include <bit>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "process_test_util.h"
#include "core/error.h"
#include "launch/checkpoint.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/mpi_session.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using testing::MpiEnvironment;
using testing::error_of;
using testing::bits;


GptConfig tiny_model(int64_t n_layer = 2, DType compute = DType::f32) {
  GptConfig c;
  c.n_layer = n_layer;
  c.n_head = 2;
  c.d_model = 16;
  c.vocab_size = 50;
  c.padded_vocab = pad_vocab(50);
  c.seq_len = 8;
  c.compute_dtype = compute;
  return c;
}

// A model and its engine after `steps` AdamW steps on random tokens, so that masters and both
// moments hold values no fresh model has.
struct Trained {
  explicit Trained(GptConfig c, uint64_t seed, int stage = 0, int steps = 2)
      : config(c), model(c, Device::cpu(), seed) {
    zero::ZeroConfig zc;
    zc.stage = stage;
    zc.compute_dtype = c.compute_dtype;
    engine = std::make_unique<zero::ZeroEngine>(model.parameters(), model.num_units(), MpiEnvironment::world(),
                                                AdamWConfig{}, zc);
    for (int s = 0; s < steps; ++s) {
      Tensor tok = randint({2, c.seq_len + 1}, c.vocab_size, 77, static_cast<uint64_t>(s), DType::i64);
      engine->begin_micro_batch(true);
      Tensor loss = model.forward_loss(*engine, narrow(tok, 1, 0, c.seq_len), narrow(tok, 1, 1, c.seq_len),
                                       StepRng{}, true);
      backward(loss);
      engine->end_backward();
      engine->step(1e-2, 1.0);
    }
  }
  GptConfig config;
  Gpt model;
  std::unique_ptr<zero::ZeroEngine> engine;
};

TrainingState some_state(int64_t step) {
  TrainingState s;
  s.step = step;
  s.tokens_seen = 1234 * step;
  s.seed = 99;
  s.data_epoch = 1;
  s.data_part_index = 2;
  s.data_window_index = 3;
  s.data_window_tokens = 4096;
  s.loss_scale = 512;
  s.loss_scale_clean_steps = 5;
  s.loss_scale_skipped_steps = 6;
  return s;
}

std::string save(const std::string& dir, Trained& t, int64_t step, int keep_last = 0) {
  return save_checkpoint(dir, some_state(step), *t.engine, t.config, "# config text", MpiEnvironment::world(),
                         keep_last);
}



class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = (fs::temp_directory_path() / fmt::format("zt_test_checkpoint_{}_{}", getpid(), info->name())).string();
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string dir;
};

TEST(Crc32, MatchesTheStandardCheckValueAndChains) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32(s.data(), s.size()), 0xCBF43926u);  // CRC-32/ISO-HDLC check value (zlib's crc32)
  EXPECT_EQ(crc32(s.data() + 4, 5, crc32(s.data(), 4)), 0xCBF43926u);
  EXPECT_EQ(crc32(nullptr, 0), 0u);
  const fs::path f = fs::temp_directory_path() / fmt::format("zt_crc_{}.bin", getpid());
  std::string big(3 << 20, '\0');  // more than file_crc32's 1 MiB read buffer
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::ofstream(f, std::ios::binary).write(big.data(), static_cast<std::streamsize>(big.size()));
  EXPECT_EQ(file_crc32(f.string()), crc32(big.data(), big.size()));
  fs::remove(f);
  EXPECT_NE(error_of([&] { file_crc32(f.string()); }).find(f.string()), std::string::npos);
}

TEST(CheckpointNames, AreZeroPaddedSteps) {
  EXPECT_EQ(checkpoint_dir_name(100), "step_00000100");
  EXPECT_EQ(checkpoint_dir_name(0), "step_00000000");
}

struct RoundTripCase {
  DType compute;
  int stage;
};

class CheckpointRoundTrip : public Checkpoint, public ::testing::WithParamInterface<RoundTripCase> {};

TEST_P(CheckpointRoundTrip, RestoresEveryStateBitForBit) {
  const auto [compute, stage] = GetParam();
  Trained a(tiny_model(2, compute), 1, stage);
  const std::string path = save(dir, a, 7);
  EXPECT_EQ(path, (fs::path(dir) / "step_00000007").string());
  EXPECT_TRUE(fs::exists(fs::path(path) / "checkpoint.pb"));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  Trained b(tiny_model(2, compute), 2, stage, /*steps=*/0);  // other seed, fresh moments
  const TrainingState s = load_checkpoint(path, *b.engine, b.config);
  const TrainingState want = some_state(7);
  EXPECT_EQ(s.step, want.step);
  EXPECT_EQ(s.tokens_seen, want.tokens_seen);
  EXPECT_EQ(s.seed, want.seed);
  EXPECT_EQ(s.data_epoch, want.data_epoch);
  EXPECT_EQ(s.data_part_index, want.data_part_index);
  EXPECT_EQ(s.data_window_index, want.data_window_index);
  EXPECT_EQ(s.data_window_tokens, want.data_window_tokens);
  EXPECT_EQ(s.loss_scale, want.loss_scale);
  EXPECT_EQ(s.loss_scale_clean_steps, want.loss_scale_clean_steps);
  EXPECT_EQ(s.loss_scale_skipped_steps, want.loss_scale_skipped_steps);
  EXPECT_EQ(b.engine->step_count(), a.engine->step_count());

  auto sa = a.engine->shard_states(), sb = b.engine->shard_states();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t u = 0; u < sa.size(); ++u) {
    EXPECT_EQ(bits(sa[u].master), bits(sb[u].master)) << "unit " << u << " master";
    EXPECT_EQ(bits(sa[u].exp_avg), bits(sb[u].exp_avg)) << "unit " << u << " exp_avg";
    EXPECT_EQ(bits(sa[u].exp_avg_sq), bits(sb[u].exp_avg_sq)) << "unit " << u << " exp_avg_sq";
  }
  // The compute parameters follow the loaded masters (cast to the compute dtype; gathered under ZeRO-3).
  for (int u = 0; u < a.model.num_units(); ++u) {
    const std::vector<Tensor> pa = a.engine->acquire(u), pb = b.engine->acquire(u);
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t k = 0; k < pa.size(); ++k) {
      EXPECT_EQ(pa[k].dtype(), compute);
      EXPECT_EQ(bits(pa[k]), bits(pb[k])) << "unit " << u << " parameter " << k;
    }
    a.engine->release(u);
    b.engine->release(u);
  }
  // And the next step is the same step: same loss, same update.
  for (Trained* t : {&a, &b}) {
    Tensor tok = randint({2, 9}, 50, 5, 0, DType::i64);
    t->engine->begin_micro_batch(true);
    Tensor loss = t->model.forward_loss(*t->engine, narrow(tok, 1, 0, 8), narrow(tok, 1, 1, 8), StepRng{}, true);
    backward(loss);
    t->engine->end_backward();
    t->engine->step(1e-2, 1.0);
  }
  sa = a.engine->shard_states();
  sb = b.engine->shard_states();
  for (size_t u = 0; u < sa.size(); ++u) EXPECT_EQ(bits(sa[u].master), bits(sb[u].master)) << "unit " << u;
}

INSTANTIATE_TEST_SUITE_P(Layouts, CheckpointRoundTrip,
                         ::testing::Values(RoundTripCase{DType::f32, 0}, RoundTripCase{DType::bf16, 0},
                                           RoundTripCase{DType::f32, 2}, RoundTripCase{DType::bf16, 3}),
                         [](const auto& info) {
                           return fmt::format("{}_zero{}", dtype_name(info.param.compute), info.param.stage);
                         });

TEST_F(Checkpoint, CorruptedShardIsRefusedNamingTheFileAndTheChecksum) {
  Trained a(tiny_model(), 1);
  const std::string path = save(dir, a, 3);
  const std::string shard = (fs::path(path) / "shard_00000.safetensors").string();
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(shard) - 17));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(fs::file_size(shard) - 17));
    f.write(&c, 1);
  }
  Trained b(tiny_model(), 2, 0, 0);
  const std::string msg = error_of([&] { load_checkpoint(path, *b.engine, b.config); });
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;
}

TEST_F(Checkpoint, TruncatedShardIsRefusedNamingItsSize) {
  Trained a(tiny_model(), 1);
  const std::string path = save(dir, a, 3);
  const std::string shard = (fs::path(path) / "shard_00000.safetensors").string();
  const auto size = fs::file_size(shard);
  fs::resize_file(shard, size - 100);
  Trained b(tiny_model(), 2, 0, 0);
  const std::string msg = error_of([&] { load_checkpoint(path, *b.engine, b.config); });
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(size - 100)), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(size)), std::string::npos) << msg;
}

TEST_F(Checkpoint, MissingShardOrMetadataIsRefused) {
  Trained a(tiny_model(), 1);
  const std::string path = save(dir, a, 3);
  Trained b(tiny_model(), 2, 0, 0);
  fs::remove(fs::path(path) / "shard_00000.safetensors");
  std::string msg = error_of([&] { load_checkpoint(path, *b.engine, b.config); });
  EXPECT_NE(msg.find("shard_00000.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

  fs::remove(fs::path(path) / "checkpoint.pb");
  msg = error_of([&] { load_checkpoint(path, *b.engine, b.config); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("checkpoint.pb"), std::string::npos) << msg;

  // Garbage metadata.
  std::ofstream(fs::path(path) / "checkpoint.pb", std::ios::binary) << "\xff\xff\xff not a protobuf";
  msg = error_of([&] { load_checkpoint(path, *b.engine, b.config); });
  EXPECT_NE(msg.find("checkpoint.pb"), std::string::npos) << msg;

  msg = error_of([&] { load_checkpoint((fs::path(dir) / "step_00000099").string(), *b.engine, b.config); });
  EXPECT_NE(msg.find("step_00000099"), std::string::npos) << msg;
}

TEST_F(Checkpoint, AnotherModelIsRefusedNamingTheField) {
  Trained a(tiny_model(2), 1);
  const std::string path = save(dir, a, 3);
  Trained deeper(tiny_model(3), 2, 0, 0);
  std::string msg = error_of([&] { load_checkpoint(path, *deeper.engine, deeper.config); });
  EXPECT_NE(msg.find("n_layer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  GptConfig wide = tiny_model(2);
  wide.d_model = 24;
  Trained w(wide, 2, 0, 0);
  msg = error_of([&] { load_checkpoint(path, *w.engine, w.config); });
  EXPECT_NE(msg.find("d_model"), std::string::npos) << msg;
}

TEST_F(Checkpoint, InterruptedSavesAreIgnoredAndCleanedUp) {
  EXPECT_FALSE(latest_checkpoint(dir).has_value());
  EXPECT_FALSE(latest_checkpoint((fs::path(dir) / "nonexistent").string()).has_value());
  Trained a(tiny_model(), 1);
  const std::string s2 = save(dir, a, 2);
  // A crash during later saves leaves these behind; none is a checkpoint.
  for (const char* leftover : {"step_00000004.tmp", "step_00000009.tmp"}) {
    fs::create_directories(fs::path(dir) / leftover);
    std::ofstream(fs::path(dir) / leftover / "shard_00000.safetensors") << "half written";
  }
  fs::create_directories(fs::path(dir) / "step_abc");              // not a step
  std::ofstream(fs::path(dir) / "step_00000050") << "a file";     // not a directory
  ASSERT_TRUE(latest_checkpoint(dir).has_value());
  EXPECT_EQ(*latest_checkpoint(dir), s2);

  const std::string s4 = save(dir, a, 4);
  EXPECT_EQ(*latest_checkpoint(dir), s4);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "step_00000004.tmp"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "step_00000009.tmp")) << "stale .tmp folders of other steps stay forever";
  Trained b(tiny_model(), 2, 0, 0);
  EXPECT_EQ(load_checkpoint(s4, *b.engine, b.config).step, 4);
}

TEST_F(Checkpoint, AnExistingCheckpointIsNeverOverwritten) {
  Trained a(tiny_model(), 1);
  const std::string path = save(dir, a, 5);
  const std::string shard = (fs::path(path) / "shard_00000.safetensors").string();
  const uint32_t before = file_crc32(shard);
  Trained other(tiny_model(), 3);  // different values
  EXPECT_EQ(save(dir, other, 5), path);
  EXPECT_EQ(file_crc32(shard), before);
  Trained b(tiny_model(), 2, 0, 0);
  load_checkpoint(path, *b.engine, b.config);
  EXPECT_EQ(bits(b.engine->shard_states()[1].master), bits(a.engine->shard_states()[1].master));
}

TEST_F(Checkpoint, KeepLastPrunesTheOldest) {
  Trained a(tiny_model(), 1, 0, 1);
  for (int64_t step : {10, 20, 30, 40}) save(dir, a, step, /*keep_last=*/2);
  fs::create_directories(fs::path(dir) / "step_00000005.tmp");  // leftovers are not counted
  save(dir, a, 50, 2);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000040", "step_00000050"}));

  // keep_last = 0 keeps all.
  save(dir, a, 60, 0);
  save(dir, a, 70, 0);
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.is_directory();
  EXPECT_EQ(n, 4);
}

}  // namespace
}  // namespace zt

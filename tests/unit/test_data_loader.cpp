// The data loader against a naive reference built from the rule in loader.h (Note [data-parallel
// windows]): every batch element compared, multi-rank slices against one process with R*B, resume
// against an uninterrupted run, shuffles checked to be permutations.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "core/error.h"
#include "launch/data/loader.h"
#include "launch/data/shard.h"
#include "error_text.h"

namespace zt::data {

// Readable positions in failure messages (found by GoogleTest through argument-dependent lookup).
inline void PrintTo(const DataPosition& p, std::ostream* os) { *os << p.to_string(); }

namespace {

namespace fs = std::filesystem;

using test::error_of;

std::vector<int32_t> random_tokens(size_t n, int32_t limit, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, limit - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = dist(gen);
  return tokens;
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_loader_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes parts as shards named part_0.bin, part_1.bin, ... and keeps their tokens for the reference.
  void write_parts(const std::vector<std::vector<int32_t>>& parts) {
    parts_ = parts;
    for (size_t i = 0; i < parts.size(); ++i) write_shard(path("part_" + std::to_string(i) + ".bin"), parts[i]);
  }
  TokenSource source() const { return TokenSource::from_glob(path("part_*.bin")); }

  // The reference: unshuffled windows of W = R*B*T in source order, wrapping; rank r's rows of
  // global micro-batch k.
  Batch reference(int64_t B, int64_t T, int R, int r, int64_t k) const {
    const int64_t W = R * B * T;
    std::vector<std::pair<size_t, int64_t>> windows;  // (part, offset)
    for (size_t p = 0; p < parts_.size(); ++p) {
      for (int64_t off = 0; off + W + 1 <= static_cast<int64_t>(parts_[p].size()); off += W) windows.push_back({p, off});
    }
    const auto [part, off] = windows[k % windows.size()];
    Batch b;
    for (int64_t row = 0; row < B; ++row) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t at = off + r * B * T + row * T + t;
        b.inputs.push_back(parts_[part][at]);
        b.targets.push_back(parts_[part][at + 1]);
      }
    }
    b.position.epoch = k / windows.size();
    return b;
  }

  fs::path dir_;
  std::vector<std::vector<int32_t>> parts_;
};

void expect_same_batch(const Batch& got, const Batch& want, const std::string& where) {
  ASSERT_EQ(got.inputs.size(), want.inputs.size()) << where;
  ASSERT_EQ(got.targets.size(), want.targets.size()) << where;
  for (size_t i = 0; i < want.inputs.size(); ++i) {
    ASSERT_EQ(got.inputs[i], want.inputs[i]) << where << " input " << i;
    ASSERT_EQ(got.targets[i], want.targets[i]) << where << " target " << i;
  }
}

TEST_F(LoaderTest, UnshuffledBatchesMatchTheReferenceAcrossEpochs) {
  // 1000 tokens: 31 windows of 32 (+1); 20 tokens: none (skipped); 2500 tokens: 78 windows.
  write_parts({random_tokens(1000, 50257, 1), random_tokens(20, 50257, 2), random_tokens(2500, 50257, 3)});
  DataLoader loader(source(), {.batch_size = 2, .seq_len = 16, .vocab_size = 50257});
  ASSERT_EQ(loader.windows_per_epoch(), 31 + 78);
  for (int64_t k = 0; k < 250; ++k) {
    const Batch got = loader.next();
    EXPECT_EQ(got.batch_size, 2);
    EXPECT_EQ(got.seq_len, 16);
    EXPECT_EQ(got.position.epoch, static_cast<uint64_t>(k / 109));
    expect_same_batch(got, reference(2, 16, 1, 0, k), "batch " + std::to_string(k));
  }
  EXPECT_EQ(loader.position(), (DataPosition{2, 1, 1, 32}));  // 250 = 2 * 109 + 31 + 1
}

TEST_F(LoaderTest, InMemoryTokensReadLikeTheSameTokensInAShard) {
  write_parts({random_tokens(3001, 65536, 4)});
  DataLoader from_file(source(), {.batch_size = 3, .seq_len = 10});
  DataLoader from_memory(TokenSource::from_tokens(parts_[0]), {.batch_size = 3, .seq_len = 10});
  for (int k = 0; k < 250; ++k) {
    const Batch want = reference(3, 10, 1, 0, k);
    expect_same_batch(from_file.next(), want, "file " + std::to_string(k));
    expect_same_batch(from_memory.next(), want, "memory " + std::to_string(k));
  }
}

TEST_F(LoaderTest, RanksTogetherReadWhatOneProcessWithRTimesTheBatchReads) {
  write_parts({random_tokens(1500, 50257, 5), random_tokens(700, 50257, 6), random_tokens(2200, 50257, 7)});
  for (const int R : {2, 3, 4}) {
    for (const bool shuffle : {false, true}) {
      const DataLoaderConfig base{.batch_size = 2, .seq_len = 8, .shuffle_parts = shuffle,
                                  .shuffle_windows = shuffle, .seed = 42};
      DataLoaderConfig single_config = base;
      single_config.batch_size = base.batch_size * R;
      DataLoader single(source(), single_config);
      std::vector<DataLoader> ranks;
      for (int r = 0; r < R; ++r) {
        DataLoaderConfig c = base;
        c.rank = r;
        c.world_size = R;
        ranks.emplace_back(source(), c);
      }
      const int64_t steps = 3 * single.windows_per_epoch() + 5;  // several epochs, so orders change
      for (int64_t k = 0; k < steps; ++k) {
        const std::string where = "R " + std::to_string(R) + (shuffle ? " shuffled" : "") + " step " + std::to_string(k);
        Batch joined;
        DataPosition rank0_position;
        for (int r = 0; r < R; ++r) {
          const Batch b = ranks[r].next();
          if (!shuffle) expect_same_batch(b, reference(2, 8, R, r, k), where + " rank " + std::to_string(r));
          joined.inputs.insert(joined.inputs.end(), b.inputs.begin(), b.inputs.end());
          joined.targets.insert(joined.targets.end(), b.targets.begin(), b.targets.end());
          if (r == 0) rank0_position = b.position;
          EXPECT_EQ(b.position, rank0_position) << where;  // all ranks at the same place
        }
        expect_same_batch(single.next(), joined, where);
      }
    }
  }
}

// Tokens encode their own place (part * 10000 + offset), so a batch tells which window it came from.
class ShuffleTest : public LoaderTest {
 protected:
  void SetUp() override {
    LoaderTest::SetUp();
    std::vector<std::vector<int32_t>> parts;
    for (int p = 0; p < 5; ++p) {
      std::vector<int32_t> tokens(900 + 300 * p);
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = p * 10000 + static_cast<int32_t>(i);
      parts.push_back(tokens);
    }
    write_parts(parts);
  }
  // (part, window) of every batch of one epoch.
  static std::vector<std::pair<int, int>> epoch_windows(DataLoader& loader) {
    std::vector<std::pair<int, int>> seen;
    for (int64_t i = 0; i < loader.windows_per_epoch(); ++i) {
      const Batch b = loader.next();
      seen.push_back({b.inputs[0] / 10000, static_cast<int>((b.inputs[0] % 10000) / loader.window_tokens())});
    }
    return seen;
  }
};

TEST_F(ShuffleTest, EachEpochVisitsEveryWindowOnceInAnOrderThatChanges) {
  DataLoader loader(source(), {.batch_size = 4, .seq_len = 25, .shuffle_parts = true, .shuffle_windows = true,
                               .seed = 7});
  std::set<std::pair<int, int>> all;
  for (int p = 0; p < 5; ++p) {
    for (int w = 0; w < (900 + 300 * p - 1) / 100; ++w) all.insert({p, w});
  }
  ASSERT_EQ(loader.windows_per_epoch(), static_cast<int64_t>(all.size()));
  std::set<std::vector<std::pair<int, int>>> orders;
  for (int epoch = 0; epoch < 4; ++epoch) {
    const std::vector<std::pair<int, int>> seen = epoch_windows(loader);
    const std::set<std::pair<int, int>> distinct(seen.begin(), seen.end());
    EXPECT_EQ(distinct.size(), seen.size()) << "epoch " << epoch;
    EXPECT_EQ(distinct, all) << "epoch " << epoch;
    // A part's windows are contiguous in the stream: the part order is shuffled, not interleaved.
    std::vector<int> part_runs;
    for (const auto& [p, w] : seen) {
      if (part_runs.empty() || part_runs.back() != p) part_runs.push_back(p);
    }
    EXPECT_EQ(part_runs.size(), 5u) << "epoch " << epoch;
    orders.insert(seen);
  }
  EXPECT_EQ(orders.size(), 4u);  // four different orders
}

TEST_F(ShuffleTest, PartsOnlyOrWindowsOnly) {
  DataLoader parts_only(source(), {.batch_size = 4, .seq_len = 25, .shuffle_parts = true, .seed = 3});
  std::set<std::vector<int>> part_orders;
  for (int epoch = 0; epoch < 4; ++epoch) {
    std::vector<int> order;
    int last_window = -1;
    for (const auto& [p, w] : epoch_windows(parts_only)) {
      if (order.empty() || order.back() != p) {
        order.push_back(p);
        last_window = -1;
      }
      EXPECT_EQ(w, last_window + 1);  // windows in order inside a part
      last_window = w;
    }
    part_orders.insert(order);
  }
  EXPECT_GT(part_orders.size(), 1u);

  DataLoader windows_only(source(), {.batch_size = 4, .seq_len = 25, .shuffle_windows = true, .seed = 3});
  const std::vector<std::pair<int, int>> seen = epoch_windows(windows_only);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end(), [](auto a, auto b) { return a.first < b.first; }));
  EXPECT_FALSE(std::is_sorted(seen.begin(), seen.end()));
}

TEST_F(ShuffleTest, SameSeedSameOrderOtherSeedOtherOrder) {
  const DataLoaderConfig c{.batch_size = 2, .seq_len = 50, .shuffle_parts = true, .shuffle_windows = true, .seed = 11};
  DataLoader a(source(), c), b(source(), c);
  DataLoaderConfig other = c;
  other.seed = 12;
  DataLoader d(source(), other);
  EXPECT_EQ(epoch_windows(a), epoch_windows(b));
  const auto next_a = epoch_windows(a);
  EXPECT_EQ(next_a, epoch_windows(b));
  epoch_windows(d);
  EXPECT_NE(next_a, epoch_windows(d));
}

TEST_F(ShuffleTest, ResumeContinuesExactlyAsAnUninterruptedRun) {
  for (const int R : {1, 3}) {
    const DataLoaderConfig c{.batch_size = 2, .seq_len = 20, .rank = R - 1, .world_size = R, .shuffle_parts = true,
                             .shuffle_windows = true, .seed = 5};
    DataLoader uninterrupted(source(), c);
    const int64_t per_epoch = uninterrupted.windows_per_epoch();
    const int64_t total = 2 * per_epoch + 9;
    std::vector<Batch> want;
    for (int64_t k = 0; k < total; ++k) want.push_back(uninterrupted.next());
    for (const int64_t cut : {int64_t{0}, int64_t{1}, int64_t{7}, per_epoch - 1, per_epoch, per_epoch + 3}) {
      DataLoader first(source(), c);
      for (int64_t k = 0; k < cut; ++k) first.next();
      const DataPosition saved = first.position();
      DataLoader resumed(source(), c);  // a fresh process
      resumed.set_position(saved);
      EXPECT_EQ(resumed.position(), saved);
      for (int64_t k = cut; k < total; ++k) {
        const Batch b = resumed.next();
        EXPECT_EQ(b.position, want[k].position);
        expect_same_batch(b, want[k], "R " + std::to_string(R) + " cut " + std::to_string(cut) + " batch " +
                                          std::to_string(k));
      }
    }
  }
}

TEST_F(ShuffleTest, ResumeWithAnotherWindowSizeKeepsTheTokenOffsetWithoutWindowShuffle) {
  // Saved by 2 ranks x B 2 x T 25 (W = 100), resumed by 1 rank (W = 50) and by 3 ranks (W = 150).
  DataLoader writer(source(), {.batch_size = 2, .seq_len = 25, .world_size = 2, .shuffle_parts = true, .seed = 9});
  for (int k = 0; k < 4; ++k) writer.next();
  const DataPosition saved = writer.position();
  ASSERT_EQ(saved.window_index, 4u);
  const Batch at_save = writer.next();
  const int part = at_save.inputs[0] / 10000;
  ASSERT_EQ(at_save.inputs[0] % 10000, 400);

  DataLoader smaller(source(), {.batch_size = 2, .seq_len = 25, .shuffle_parts = true, .seed = 9});
  smaller.set_position(saved);
  EXPECT_EQ(smaller.next().inputs[0], part * 10000 + 400);  // window 8 of 50 tokens
  DataLoader larger(source(), {.batch_size = 2, .seq_len = 25, .world_size = 3, .shuffle_parts = true, .seed = 9});
  larger.set_position(saved);
  EXPECT_EQ(larger.next().inputs[0], part * 10000 + 450);  // rounded up to window 3 of 150 tokens

  DataLoader shuffled(source(), {.batch_size = 2, .seq_len = 25, .shuffle_windows = true, .seed = 9});
  EXPECT_EQ(error_of([&] { shuffled.set_position(saved); }),
            "[data] cannot resume at epoch 0, part 0, window 4 (100 tokens per window): this loader reads 50 tokens "
            "per window (1 ranks x B 2 x T 25) and shuffled window orders differ between window sizes; resume with "
            "the saved world size, batch and sequence length, or without shuffle_windows");
}

TEST_F(ShuffleTest, RefusesAPositionOutsideTheSource) {
  DataLoader loader(source(), {.batch_size = 2, .seq_len = 25});
  EXPECT_EQ(error_of([&] { loader.set_position({0, 5, 0, 50}); }),
            "[data] cannot resume at epoch 0, part 5, window 0 (50 tokens per window): the source has 5 parts "
            "holding a window; was it saved with other data?");
  EXPECT_EQ(error_of([&] { loader.set_position({0, 0, 17, 50}); }),
            "[data] cannot resume at epoch 0, part 0, window 17 (50 tokens per window): part '" + path("part_0.bin") +
                "' holds 17 windows; was it saved with other data?");
}

TEST_F(LoaderTest, GlobExpandsSortedAndNamesAPatternWithoutMatches) {
  for (const char* name : {"b.bin", "c.bin", "a.bin"}) write_shard(path(name), random_tokens(10, 100, 1));
  const TokenSource s = TokenSource::from_glob(path("*.bin"));
  ASSERT_EQ(s.num_parts(), 3u);
  EXPECT_EQ(s.part_name(0), path("a.bin"));
  EXPECT_EQ(s.part_name(1), path("b.bin"));
  EXPECT_EQ(s.part_name(2), path("c.bin"));
  EXPECT_EQ(s.total_tokens(), 30);
  const std::string pattern = path("fineweb_train_*.bin");
  EXPECT_EQ(error_of([&] { TokenSource::from_glob(pattern); }),
            "[data] no file matches '" + pattern + "'; expected llm.c token shards such as data/tiny_train_*.bin");
}

TEST_F(LoaderTest, RefusesTooLittleDataAndBadRanks) {
  write_parts({random_tokens(100, 1000, 1), random_tokens(64, 1000, 2)});
  EXPECT_EQ(error_of([&] { DataLoader(source(), {.batch_size = 2, .seq_len = 16, .rank = 1, .world_size = 2}); }),
            "(no error)");  // 100 tokens hold one window of 64 + 1
  EXPECT_EQ(error_of([&] { DataLoader(source(), {.batch_size = 4, .seq_len = 16, .world_size = 2}); }),
            "[data] no part of '" + path("part_0.bin") +
                "' (2 parts, the largest 100 tokens) holds one window of 2 ranks x B 4 x T 16 + 1 = 129 tokens; use "
                "more data or a smaller batch or sequence length");
  EXPECT_EQ(error_of([&] { DataLoader(source(), {.batch_size = 1, .seq_len = 4, .rank = 2, .world_size = 2}); }),
            "[data] rank 2 is not in [0, world_size = 2)");
  EXPECT_EQ(error_of([&] { DataLoader(source(), {.batch_size = 0, .seq_len = 4}); }),
            "[data] batch_size and seq_len must be positive (got 0 and 4)");
}

TEST_F(LoaderTest, ChecksTokensAgainstTheVocabularyAsItReads) {
  std::vector<int32_t> tokens = random_tokens(200, 257, 3);
  tokens[150] = 300;
  write_parts({tokens});
  DataLoader loader(source(), {.batch_size = 1, .seq_len = 49, .vocab_size = 257});
  for (int k = 0; k < 3; ++k) loader.next();  // tokens 0..147
  EXPECT_EQ(error_of([&] { loader.next(); }),
            "[data] " + path("part_0.bin") + ": token 300 at position 150 is not below the vocabulary size 257");
  DataLoader memory(TokenSource::from_tokens(tokens, "mem"), {.batch_size = 1, .seq_len = 49, .vocab_size = 257});
  for (int k = 0; k < 3; ++k) memory.next();
  EXPECT_EQ(error_of([&] { memory.next(); }), "[data] mem: token 300 at position 150 is not below the vocabulary size 257");
}

}  // namespace
}  // namespace zt::data

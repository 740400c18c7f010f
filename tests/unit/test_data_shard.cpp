// llm.c token shards: round trips against the format written out byte by byte, and every kind of
// corrupt file refused with its message.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "launch/data/shard.h"
#include "error_text.h"

namespace zt::data {
namespace {

namespace fs = std::filesystem;

class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_shard_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a file from a header (256 int32) and raw uint16 body, bypassing write_shard.
  void write_raw(const std::string& p, std::vector<int32_t> header, const std::vector<uint16_t>& body,
                 size_t truncate_to = SIZE_MAX) const {
    header.resize(256, 0);
    std::string bytes(reinterpret_cast<const char*>(header.data()), 1024);
    bytes.append(reinterpret_cast<const char*>(body.data()), body.size() * 2);
    if (truncate_to < bytes.size()) bytes.resize(truncate_to);
    std::ofstream(p, std::ios::binary) << bytes;
  }

  fs::path dir_;
};

std::vector<int32_t> random_tokens(size_t n, int32_t limit, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, limit - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = dist(gen);
  return tokens;
}

using test::error_of;

TEST_F(ShardTest, RoundTripMatchesTheFormatByteForByte) {
  const std::vector<int32_t> tokens = random_tokens(10007, 65536, 1);
  const std::string p = path("round.bin");
  write_shard(p, tokens);
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  ASSERT_EQ(fs::file_size(p), 1024u + 2u * tokens.size());

  // Decode the file by hand: the reference for the format.
  std::ifstream in(p, std::ios::binary);
  std::vector<int32_t> header(256);
  in.read(reinterpret_cast<char*>(header.data()), 1024);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], static_cast<int32_t>(tokens.size()));
  for (int i = 3; i < 256; ++i) EXPECT_EQ(header[i], 0) << i;
  std::vector<uint16_t> body(tokens.size());
  in.read(reinterpret_cast<char*>(body.data()), static_cast<std::streamsize>(body.size() * 2));
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(body[i], tokens[i]) << i;

  EXPECT_EQ(read_shard(p), tokens);
  EXPECT_EQ(read_shard(p, 65536), tokens);
  const ShardFile shard(p);
  EXPECT_EQ(shard.num_tokens(), static_cast<int64_t>(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(shard.tokens()[i], tokens[i]) << i;
}

TEST_F(ShardTest, ReadsAFileWrittenByHandAndAnEmptyShard) {
  write_raw(path("hand.bin"), {20240520, 1, 3}, {7, 65535, 0});
  EXPECT_EQ(read_shard(path("hand.bin")), (std::vector<int32_t>{7, 65535, 0}));
  write_shard(path("empty.bin"), {});
  EXPECT_EQ(fs::file_size(path("empty.bin")), 1024u);
  EXPECT_TRUE(read_shard(path("empty.bin")).empty());
}

TEST_F(ShardTest, RewritingReplacesTheWholeFile) {
  const std::string p = path("again.bin");
  write_shard(p, random_tokens(5000, 50257, 2));
  const std::vector<int32_t> second = random_tokens(300, 50257, 3);
  write_shard(p, second);
  EXPECT_EQ(read_shard(p), second);
}

TEST_F(ShardTest, WriterRefusesTokensOutsideUint16OrTheVocabulary) {
  const std::string p = path("bad.bin");
  EXPECT_EQ(error_of([&] { write_shard(p, std::vector<int32_t>{1, 65536}); }),
            "[data] " + p + ": token 65536 at position 1 cannot be written: shard tokens are in [0, 65536) (uint16)");
  EXPECT_EQ(error_of([&] { write_shard(p, std::vector<int32_t>{-1}); }),
            "[data] " + p + ": token -1 at position 0 cannot be written: shard tokens are in [0, 65536) (uint16)");
  EXPECT_EQ(error_of([&] { write_shard(p, std::vector<int32_t>{3, 4, 300}, 257); }),
            "[data] " + p +
                ": token 300 at position 2 cannot be written: shard tokens are in [0, 257) (below the vocabulary size)");
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(ShardTest, RefusesAFileShorterThanTheHeader) {
  const std::string p = path("short.bin");
  std::ofstream(p, std::ios::binary) << std::string(100, 'x');
  EXPECT_EQ(error_of([&] { ShardFile s(p); }),
            "[data] " + p + ": 100 bytes is shorter than the 1024-byte header of an llm.c token shard");
  std::ofstream(p, std::ios::binary | std::ios::trunc).flush();
  EXPECT_EQ(error_of([&] { ShardFile s(p); }),
            "[data] " + p + ": 0 bytes is shorter than the 1024-byte header of an llm.c token shard");
}

TEST_F(ShardTest, RefusesAWrongMagic) {
  const std::string p = path("x.bin");
  write_raw(p, {12345, 1, 2}, {1, 2});
  EXPECT_EQ(error_of([&] { read_shard(p); }),
            "[data] " + p + ": magic 12345 is not 20240520: not an llm.c token shard");
}

TEST_F(ShardTest, RefusesAnUnsupportedVersion) {
  const std::string p = path("v2.bin");
  write_raw(p, {20240520, 2, 2}, {1, 2});
  EXPECT_EQ(error_of([&] { read_shard(p); }),
            "[data] " + p + ": version 2 is not supported (this reader knows version 1, uint16 tokens)");
}

TEST_F(ShardTest, RefusesANegativeCountAndSizesThatDoNotMatchTheCount) {
  const std::string p = path("size.bin");
  write_raw(p, {20240520, 1, -4}, {1, 2});
  EXPECT_EQ(error_of([&] { read_shard(p); }), "[data] " + p + ": token count -4 in the header is negative");
  write_raw(p, {20240520, 1, 5}, {1, 2, 3, 4, 5}, 1024 + 9);  // last token cut in half
  EXPECT_EQ(error_of([&] { read_shard(p); }),
            "[data] " + p + ": the header says 5 tokens (1034 bytes with the header) but the file has 1033 bytes: "
                            "truncated");
  write_raw(p, {20240520, 1, 2}, {1, 2, 3});
  EXPECT_EQ(error_of([&] { read_shard(p); }),
            "[data] " + p + ": the header says 2 tokens (1028 bytes with the header) but the file has 1030 bytes: "
                            "trailing bytes");
}

TEST_F(ShardTest, RefusesTokensAtOrAboveTheVocabularyNamingTheFirst) {
  const std::string p = path("vocab.bin");
  write_raw(p, {20240520, 1, 6}, {5, 50256, 50257, 9, 60000, 1});
  EXPECT_EQ(read_shard(p).size(), 6u);  // no vocabulary given: any uint16 is fine
  EXPECT_EQ(error_of([&] { read_shard(p, 50257); }),
            "[data] " + p + ": token 50257 at position 2 is not below the vocabulary size 50257");
  const ShardFile shard(p);
  EXPECT_NO_THROW(shard.validate_tokens(50257, 0, 2));
  EXPECT_EQ(error_of([&] { shard.validate_tokens(50257, 3, 3); }),
            "[data] " + p + ": token 60000 at position 4 is not below the vocabulary size 50257");
}

TEST_F(ShardTest, NamesAMissingFile) {
  const std::string p = path("missing.bin");
  EXPECT_EQ(error_of([&] { read_shard(p); }), "[data] " + p + ": cannot open: No such file or directory");
}

}  // namespace
}  // namespace zt::data

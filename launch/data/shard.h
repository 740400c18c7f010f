// llm.c's token shard format, so that its preprocessing scripts and data sets (fineweb, tinyshakespeare,
// ...) work unchanged: a header of 256 little-endian int32 (header[0] = magic 20240520, header[1] =
// version 1, header[2] = number of tokens, the rest zero), then that many uint16 token ids.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace zt::data {

static_assert(std::endian::native == std::endian::little, "llm.c shards are little-endian; a port would byte-swap");

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);
inline constexpr int64_t kShardMaxTokenId = 65535;  // uint16 tokens

// Writes tokens as a shard, atomically: to "<path>.tmp", fsync, rename to path (then fsync of the
// folder), so a reader never sees a half-written shard under the final name. Every token must be
// in [0, 65535] (and below vocab_size when that is given, > 0).
void write_shard(const std::string& path, std::span<const int32_t> tokens, int64_t vocab_size = 0);

// A shard mapped read-only into memory. Opening validates the header and the file size; the token
// values are checked by validate_tokens() (a full scan) or, by the loader, per window as it reads.
class ShardFile {
 public:
  explicit ShardFile(std::string path);
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;

  const std::string& path() const { return path_; }
  int64_t num_tokens() const { return num_tokens_; }
  std::span<const uint16_t> tokens() const { return {tokens_, static_cast<size_t>(num_tokens_)}; }

  // Throws "[data] PATH: token T at position P is not below the vocabulary size V" for the first
  // token >= vocab_size, counting positions from 0 (offset = start + position within the range).
  void validate_tokens(int64_t vocab_size) const;
  void validate_tokens(int64_t vocab_size, int64_t start, int64_t count) const;

 private:
  // A read-only mapping of the whole file, unmapped on destruction (also when the constructor throws
  // after mapping, since members are destroyed then).
  struct Mapping {
    void* data = nullptr;
    size_t bytes = 0;
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();
  };

  std::string path_;
  Mapping mapping_;
  const uint16_t* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
};

// Reads a whole shard, validating it (and its tokens against vocab_size when that is > 0).
std::vector<int32_t> read_shard(const std::string& path, int64_t vocab_size = 0);

}  // namespace zt::data

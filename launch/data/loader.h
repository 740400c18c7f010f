// The data loader: micro-batches of B sequences of T tokens (inputs) and the same shifted by one
// (targets), read from llm.c shards or from tokens in memory, each data-parallel rank reading its
// own slice, deterministically, resumable from a saved DataPosition. Pure C++: token ids in vectors;
// the trainer turns them into tensors.
//
// Note [data-parallel windows]
// With R data-parallel ranks, batch B and sequence length T, let W = R*B*T. An epoch is the parts of
// the source (shards, or one in-memory vector) in the epoch's part order; each part of n tokens is
// cut into floor((n - 1) / W) windows at offsets 0, W, 2W, ... (a window also needs the one token
// after it, for the last target); the tail that does not fill a window is skipped and no window spans
// two parts. The windows of a part are visited in the epoch's window order for that part. Micro-batch
// k of an epoch is the k-th window in that order. Rank r reads its B*T+1 tokens starting at
// window_offset + r*B*T; row b of its batch is inputs [r*B*T + b*T, +T) and targets shifted by one.
// So, for every micro-batch, the rows of ranks 0..R-1 concatenated in rank order are exactly the
// rows a single process (R = 1) with batch R*B reads for that micro-batch, with or without
// shuffling: the part and window orders depend only on (seed, epoch, part index, window count),
// identical on all ranks. This is llm.c's layout (dataloader.h) for the unshuffled case.
// Shuffling, when enabled, permutes the part order per epoch and/or the window order per (epoch, part)
// with a counter-based generator of our own (not std::shuffle, whose algorithm is unspecified), so
// the same seed gives the same order on every compiler and machine.
// After the last window of the last part, the next epoch starts at the first part of its own order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/data/shard.h"

namespace zt::data {

// An ordered list of token sequences ("parts"): shard files, or vectors held in memory.
class TokenSource {
 public:
  // Files matching a glob(3) pattern, sorted; throws naming the pattern when nothing matches.
  // Each file's header and size are validated on opening (ShardFile).
  static TokenSource from_glob(const std::string& pattern);
  static TokenSource from_files(const std::vector<std::string>& paths);
  // Token ids held in memory (for example the embedded corpus), one part.
  static TokenSource from_tokens(std::vector<int32_t> tokens, std::string name = "memory");

  size_t num_parts() const { return parts_.size(); }
  int64_t part_tokens(size_t part) const;
  const std::string& part_name(size_t part) const { return parts_.at(part).name; }
  int64_t total_tokens() const;

  // Copies tokens [offset, offset + count) of a part to out. With vocab_size > 0, a token outside
  // [0, vocab_size) throws, naming the part and the token's position in it.
  void read(size_t part, int64_t offset, int64_t count, int32_t* out, int64_t vocab_size) const;

 private:
  struct Part {
    std::string name;
    std::shared_ptr<const ShardFile> shard;                // a file, or
    std::shared_ptr<const std::vector<int32_t>> memory;  // tokens in memory
  };
  std::vector<Part> parts_;
};

struct DataLoaderConfig {
  int64_t batch_size = 0;  // B: sequences per micro-batch on this rank
  int64_t seq_len = 0;     // T
  int rank = 0;            // data-parallel rank and number of data-parallel ranks (Note above)
  int world_size = 1;
  bool shuffle_parts = false;    // permute the part (shard) order every epoch
  bool shuffle_windows = false;  // permute the window order inside each part every epoch
  uint64_t seed = 0;
  int64_t vocab_size = 0;  // > 0: every token read is checked to be below it
};

// Where the loader is: the next micro-batch it will read. Save it with a checkpoint and give it to
// set_position() of a loader with the same source and configuration to continue bit-identically.
struct DataPosition {
  uint64_t epoch = 0;
  uint64_t part_index = 0;    // index into the epoch's part order
  uint64_t window_index = 0;  // index into that part's window order
  // W = world_size * B * T of the loader that wrote it. Restoring into a loader with another W is
  // accepted without window shuffling (the position is then converted through its token offset,
  // rounding up so no data is seen twice) and refused with it.
  int64_t window_tokens = 0;

  bool operator==(const DataPosition&) const = default;
  std::string to_string() const;
};

struct Batch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;   // [batch_size, seq_len], row-major
  std::vector<int32_t> targets;  // [batch_size, seq_len]: targets[b][t] is the token after inputs[b][t]
  DataPosition position;         // where this batch was read
};

class DataLoader {
 public:
  // Throws when the source has no full window (naming its size and W) or the configuration is invalid.
  DataLoader(TokenSource source, const DataLoaderConfig& config);

  // Reads the next micro-batch into batch (its vectors are reused) and advances, wrapping to the
  // next epoch after the last window.
  void next(Batch& batch);
  Batch next();

  DataPosition position() const;
  void set_position(const DataPosition& position);
  void reset() { set_position(DataPosition{0, 0, 0, window_tokens_}); }

  int64_t windows_per_epoch() const { return windows_per_epoch_; }
  int64_t window_tokens() const { return window_tokens_; }
  const DataLoaderConfig& config() const { return config_; }
  const TokenSource& source() const { return source_; }

 private:
  // Recomputes the cached part order for epoch_ and window order for the current part.
  void prepare_orders();
  int64_t windows_in_part(size_t part) const;

  TokenSource source_;
  DataLoaderConfig config_;
  int64_t window_tokens_ = 0;        // W
  int64_t windows_per_epoch_ = 0;
  std::vector<size_t> usable_parts_;  // parts holding at least one window, in source order
  uint64_t epoch_ = 0;
  uint64_t part_index_ = 0;
  uint64_t window_index_ = 0;
  // Cached orders; valid for (ordered_epoch_, ordered_part_index_).
  std::vector<size_t> part_order_;
  std::vector<int64_t> window_order_;
  uint64_t ordered_epoch_ = UINT64_MAX;
  uint64_t ordered_part_index_ = UINT64_MAX;
  std::vector<int32_t> scratch_;  // B*T+1 tokens of the current read
};

}  // namespace zt::data

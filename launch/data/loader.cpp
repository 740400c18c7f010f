#include "launch/data/loader.h"

#include <glob.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace zt::data {
namespace {

// splitmix64's finaliser: a bijective mix, good enough to key independent streams by hashing.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A small counter-based generator: value i of the stream keyed by key is mix64(key + i * golden).
class StreamRng {
 public:
  explicit StreamRng(uint64_t key) : state_(key) {}
  uint64_t next() { return mix64(state_ += 0x9E3779B97F4A7C15ull); }
  // Uniform in [0, n), without modulo bias (rejects the top partial block).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
      x = next();
    } while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

// Streams of the loader's generator: one per (purpose, seed, epoch, part).
enum class Stream : uint64_t { kPartOrder = 1, kWindowOrder = 2 };

uint64_t stream_key(Stream stream, uint64_t seed, uint64_t epoch, uint64_t part) {
  return mix64(mix64(mix64(mix64(static_cast<uint64_t>(stream)) ^ seed) ^ epoch) ^ part);
}

// Fisher-Yates from the last element down.
template <typename T>
void shuffle_in_place(std::vector<T>& v, uint64_t key) {
  StreamRng rng(key);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

// ---- TokenSource ----

TokenSource TokenSource::from_glob(const std::string& pattern) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &matches);
  std::vector<std::string> paths;
  if (rc == 0) paths.assign(matches.gl_pathv, matches.gl_pathv + matches.gl_pathc);
  ::globfree(&matches);
  ZT_CHECK(rc != GLOB_NOMATCH && !paths.empty(), "data", "no file matches '", pattern,
           "'; expected llm.c token shards such as data/tiny_train_*.bin");
  ZT_CHECK(rc == 0, "data", "cannot expand '", pattern, "': ", rc == GLOB_ABORTED ? "read error" : "out of memory");
  return from_files(paths);  // glob(3) returns them sorted
}

TokenSource TokenSource::from_files(const std::vector<std::string>& paths) {
  ZT_CHECK(!paths.empty(), "data", "no token files given");
  TokenSource source;
  for (const std::string& path : paths) source.parts_.push_back({path, std::make_shared<const ShardFile>(path), {}});
  return source;
}

TokenSource TokenSource::from_tokens(std::vector<int32_t> tokens, std::string name) {
  TokenSource source;
  source.parts_.push_back({std::move(name), {}, std::make_shared<const std::vector<int32_t>>(std::move(tokens))});
  return source;
}

int64_t TokenSource::part_tokens(size_t part) const {
  const Part& p = parts_.at(part);
  return p.shard ? p.shard->num_tokens() : static_cast<int64_t>(p.memory->size());
}

int64_t TokenSource::total_tokens() const {
  int64_t total = 0;
  for (size_t i = 0; i < parts_.size(); ++i) total += part_tokens(i);
  return total;
}

void TokenSource::read(size_t part, int64_t offset, int64_t count, int32_t* out, int64_t vocab_size) const {
  const Part& p = parts_.at(part);
  ZT_CHECK(offset >= 0 && count >= 0 && offset + count <= part_tokens(part), "data", p.name, ": cannot read tokens [",
           offset, ", ", offset + count, "); it has ", part_tokens(part));
  if (p.shard) {
    p.shard->validate_tokens(vocab_size, offset, count);
    const uint16_t* src = p.shard->tokens().data() + offset;
    for (int64_t i = 0; i < count; ++i) out[i] = src[i];
    return;
  }
  const int32_t* src = p.memory->data() + offset;
  const int64_t limit = vocab_size > 0 ? vocab_size : INT32_MAX;
  for (int64_t i = 0; i < count; ++i) {
    ZT_CHECK(src[i] >= 0 && src[i] < limit, "data", p.name, ": token ", src[i], " at position ", offset + i,
             vocab_size > 0 ? " is not below the vocabulary size " : " is negative", vocab_size > 0 ? vocab_size : 0);
  }
  std::memcpy(out, src, static_cast<size_t>(count) * sizeof(int32_t));
}

// ---- DataPosition ----

std::string DataPosition::to_string() const {
  return detail::concat("epoch ", epoch, ", part ", part_index, ", window ", window_index, " (", window_tokens,
                        " tokens per window)");
}

// ---- DataLoader ----

DataLoader::DataLoader(TokenSource source, const DataLoaderConfig& config)
    : source_(std::move(source)), config_(config) {
  ZT_CHECK(config.batch_size > 0 && config.seq_len > 0, "data", "batch_size and seq_len must be positive (got ",
           config.batch_size, " and ", config.seq_len, ")");
  ZT_CHECK(config.world_size > 0 && config.rank >= 0 && config.rank < config.world_size, "data", "rank ", config.rank,
           " is not in [0, world_size = ", config.world_size, ")");
  window_tokens_ = static_cast<int64_t>(config.world_size) * config.batch_size * config.seq_len;
  for (size_t part = 0; part < source_.num_parts(); ++part) {
    const int64_t windows = windows_in_part(part);
    if (windows > 0) usable_parts_.push_back(part);
    windows_per_epoch_ += windows;
  }
  if (windows_per_epoch_ == 0) {
    int64_t largest = 0;
    for (size_t part = 0; part < source_.num_parts(); ++part) largest = std::max(largest, source_.part_tokens(part));
    ZT_FAIL("data", "no part of '", source_.num_parts() ? source_.part_name(0) : "", "' (", source_.num_parts(),
            " parts, the largest ", largest, " tokens) holds one window of ", config.world_size, " ranks x B ",
            config.batch_size, " x T ", config.seq_len, " + 1 = ", window_tokens_ + 1,
            " tokens; use more data or a smaller batch or sequence length");
  }
  scratch_.resize(static_cast<size_t>(config.batch_size * config.seq_len + 1));
  prepare_orders();
}

int64_t DataLoader::windows_in_part(size_t part) const {
  const int64_t n = source_.part_tokens(part);
  return n > 0 ? (n - 1) / window_tokens_ : 0;
}

void DataLoader::prepare_orders() {
  if (ordered_epoch_ != epoch_) {
    part_order_ = usable_parts_;
    if (config_.shuffle_parts) shuffle_in_place(part_order_, stream_key(Stream::kPartOrder, config_.seed, epoch_, 0));
    ordered_epoch_ = epoch_;
    ordered_part_index_ = UINT64_MAX;
  }
  if (ordered_part_index_ != part_index_) {
    const size_t part = part_order_[part_index_];
    window_order_.resize(static_cast<size_t>(windows_in_part(part)));
    std::iota(window_order_.begin(), window_order_.end(), int64_t{0});
    if (config_.shuffle_windows) {
      shuffle_in_place(window_order_, stream_key(Stream::kWindowOrder, config_.seed, epoch_, part));
    }
    ordered_part_index_ = part_index_;
  }
}

void DataLoader::next(Batch& batch) {
  const int64_t B = config_.batch_size, T = config_.seq_len;
  const size_t part = part_order_[part_index_];
  const int64_t offset = window_order_[window_index_] * window_tokens_ + config_.rank * B * T;
  source_.read(part, offset, B * T + 1, scratch_.data(), config_.vocab_size);

  batch.batch_size = B;
  batch.seq_len = T;
  batch.position = position();
  batch.inputs.assign(scratch_.begin(), scratch_.end() - 1);
  batch.targets.assign(scratch_.begin() + 1, scratch_.end());

  if (++window_index_ == window_order_.size()) {
    window_index_ = 0;
    if (++part_index_ == part_order_.size()) {
      part_index_ = 0;
      ++epoch_;
    }
  }
  prepare_orders();
}

Batch DataLoader::next() {
  Batch batch;
  next(batch);
  return batch;
}

DataPosition DataLoader::position() const { return DataPosition{epoch_, part_index_, window_index_, window_tokens_}; }

void DataLoader::set_position(const DataPosition& position) {
  const int64_t saved_w = position.window_tokens > 0 ? position.window_tokens : window_tokens_;
  ZT_CHECK(saved_w == window_tokens_ || !config_.shuffle_windows, "data", "cannot resume at ", position.to_string(),
           ": this loader reads ", window_tokens_, " tokens per window (", config_.world_size, " ranks x B ",
           config_.batch_size, " x T ", config_.seq_len,
           ") and shuffled window orders differ between window sizes; resume with the saved world size, batch and "
           "sequence length, or without shuffle_windows");
  ZT_CHECK(position.part_index < usable_parts_.size(), "data", "cannot resume at ", position.to_string(),
           ": the source has ", usable_parts_.size(), " parts holding a window; was it saved with other data?");
  epoch_ = position.epoch;
  part_index_ = position.part_index;
  window_index_ = 0;
  ordered_epoch_ = UINT64_MAX;
  prepare_orders();
  uint64_t window = position.window_index;
  if (saved_w != window_tokens_) {
    // Same token offset in the part, rounded up to a whole window of the new size.
    const auto offset = static_cast<uint64_t>(position.window_index) * static_cast<uint64_t>(saved_w);
    window = (offset + static_cast<uint64_t>(window_tokens_) - 1) / static_cast<uint64_t>(window_tokens_);
    if (window >= window_order_.size()) {  // the rest of the part does not fill a new window
      window = 0;
      if (++part_index_ == part_order_.size()) {
        part_index_ = 0;
        ++epoch_;
      }
      prepare_orders();
    }
  }
  ZT_CHECK(window < window_order_.size(), "data", "cannot resume at ", position.to_string(), ": part '",
           source_.part_name(part_order_[part_index_]), "' holds ", window_order_.size(),
           " windows; was it saved with other data?");
  window_index_ = window;
}

}  // namespace zt::data

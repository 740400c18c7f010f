#include "launch/data/tokenize.h"

#include <glob.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "core/error.h"
#include "launch/data/shard.h"
#include "models/safetensors.h"

namespace zt::data {
namespace {

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  ZT_CHECK(!inputs.empty(), "tokenize", "no input files given");
  std::vector<std::string> files;
  for (const std::string& pattern : inputs) {
    glob_t matches{};
    const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &matches);
    const size_t before = files.size();
    if (rc == 0) files.insert(files.end(), matches.gl_pathv, matches.gl_pathv + matches.gl_pathc);
    ::globfree(&matches);
    ZT_CHECK(files.size() > before, "tokenize", "no file matches '", pattern, "'");
  }
  return files;
}

std::string read_file(const std::string& path) { return read_file_bytes(path, "tokenize"); }

// Calls fn(document) for each non-empty document of a file's text.
template <typename Fn>
void for_each_document(std::string_view text, const std::string& separator, Fn&& fn) {
  if (separator.empty()) {
    if (!text.empty()) fn(text);
    return;
  }
  size_t start = 0;
  while (start <= text.size()) {
    size_t stop = text.find(separator, start);
    if (stop == std::string_view::npos) stop = text.size();
    if (stop > start) fn(text.substr(start, stop - start));
    start = stop + separator.size();
  }
}

std::string shard_name(const std::string& prefix, const char* split, size_t index) {
  std::ostringstream name;
  name << prefix << '_' << split << '_' << std::setw(6) << std::setfill('0') << index << ".bin";
  return name.str();
}

// Accumulates one split's tokens and writes a shard whenever shard_tokens are ready.
class ShardWriter {
 public:
  ShardWriter(const TokenizeOptions& options, const char* split, int32_t vocab_size,
              std::vector<std::string>* written)
      : options_(options), split_(split), vocab_size_(vocab_size), written_(written) {}

  void append(std::span<const int32_t> tokens) {
    buffer_.insert(buffer_.end(), tokens.begin(), tokens.end());
    total_ += static_cast<int64_t>(tokens.size());
    while (static_cast<int64_t>(buffer_.size()) >= options_.shard_tokens) {
      write(std::span<const int32_t>(buffer_).first(static_cast<size_t>(options_.shard_tokens)));
      buffer_.erase(buffer_.begin(), buffer_.begin() + options_.shard_tokens);
    }
  }
  void finish() {
    if (!buffer_.empty()) write(buffer_);
    buffer_.clear();
  }
  int64_t total() const { return total_; }

 private:
  void write(std::span<const int32_t> tokens) {
    const std::string path = shard_name(options_.output_prefix, split_, written_->size());
    write_shard(path, tokens, vocab_size_);
    written_->push_back(path);
    if (options_.progress) *options_.progress << "[tokenize] wrote " << path << " (" << tokens.size() << " tokens)\n";
  }

  const TokenizeOptions& options_;
  const char* split_;
  int32_t vocab_size_;
  std::vector<std::string>* written_;
  std::vector<int32_t> buffer_;
  int64_t total_ = 0;
};

void remove_or_refuse_old_shards(const TokenizeOptions& options) {
  for (const char* split : {"train", "val"}) {
    const std::string pattern = options.output_prefix + "_" + split + "_*.bin";
    glob_t matches{};
    if (::glob(pattern.c_str(), 0, nullptr, &matches) == 0) {
      for (size_t i = 0; i < matches.gl_pathc; ++i) {
        const std::string old = matches.gl_pathv[i];
        if (!options.overwrite) {
          ::globfree(&matches);
          ZT_FAIL("tokenize", old, " already exists; a loader reading '", pattern,
                  "' would mix old and new shards: remove them or set overwrite");
        }
        std::filesystem::remove(old);
      }
    }
    ::globfree(&matches);
  }
}

}  // namespace

bool is_validation_document(int64_t d, int64_t n, int64_t k) { return (d + 1) * k / n > d * k / n; }

TokenizeResult tokenize_files(const TokenizeOptions& options) {
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(options.tokenizer);
  return tokenize_files(options, *tokenizer);
}

TokenizeResult tokenize_files(const TokenizeOptions& options, const Tokenizer& tokenizer) {
  ZT_CHECK(!options.output_prefix.empty(), "tokenize", "output_prefix is empty; give e.g. data/tiny");
  ZT_CHECK(options.shard_tokens > 0 && options.shard_tokens <= INT32_MAX, "tokenize", "shard_tokens ",
           options.shard_tokens, " must be in [1, 2^31)");
  ZT_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "tokenize", "val_fraction ",
           options.val_fraction, " must be in [0, 1)");
  ZT_CHECK(tokenizer.vocab_size() <= kShardMaxTokenId + 1, "tokenize", "the ", tokenizer.name(),
           " tokenizer has ", tokenizer.vocab_size(), " tokens; llm.c shards hold uint16 ids (at most 65536)");

  TokenizeResult result;
  const std::vector<std::string> files = expand_inputs(options.inputs);
  result.files = static_cast<int64_t>(files.size());

  // Pass 1 counts documents, which the validation rule needs before any is assigned.
  for (const std::string& file : files) {
    for_each_document(read_file(file), options.document_separator, [&](std::string_view) { ++result.documents; });
  }
  ZT_CHECK(result.documents > 0, "tokenize", "the ", files.size(), " input files hold no text");
  const int64_t n = result.documents;
  const int64_t k = options.val_fraction > 0 ? std::max<int64_t>(1, std::llround(options.val_fraction * n)) : 0;
  ZT_CHECK(k < n, "tokenize", "val_fraction ", options.val_fraction, " of ", n, " document", n == 1 ? "" : "s",
           " leaves none for training; give more files",
           options.document_separator.empty() ? ", a document_separator," : "", " or val_fraction 0");

  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  remove_or_refuse_old_shards(options);

  ShardWriter train(options, "train", tokenizer.vocab_size(), &result.train_shards);
  ShardWriter val(options, "val", tokenizer.vocab_size(), &result.val_shards);
  const auto start = std::chrono::steady_clock::now();
  int64_t bytes_read = 0;
  int64_t d = 0;
  std::vector<int32_t> tokens;
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string text = read_file(files[f]);
    bytes_read += static_cast<int64_t>(text.size());
    int64_t file_tokens = 0;
    for_each_document(text, options.document_separator, [&](std::string_view document) {
      tokens.assign(1, tokenizer.eot_token());
      const std::vector<int32_t> ids = tokenizer.encode(document);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      file_tokens += static_cast<int64_t>(tokens.size());
      const bool is_val = is_validation_document(d++, n, k);
      (is_val ? val : train).append(tokens);
      result.val_documents += is_val;
    });
    if (options.progress) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      *options.progress << "[tokenize] " << f + 1 << "/" << files.size() << " " << files[f] << ": " << file_tokens
                        << " tokens; " << std::fixed << std::setprecision(2) << bytes_read / 1e6 << " MB in "
                        << seconds << " s\n"
                        << std::defaultfloat;
    }
  }
  train.finish();
  val.finish();
  result.train_tokens = train.total();
  result.val_tokens = val.total();
  if (options.progress) {
    *options.progress << "[tokenize] " << result.documents << " documents: " << result.train_tokens << " train tokens in "
                      << result.train_shards.size() << " shards, " << result.val_tokens << " validation tokens in "
                      << result.val_shards.size() << " shards\n";
  }
  return result;
}

}  // namespace zt::data

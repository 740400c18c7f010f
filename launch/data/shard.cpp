#include "launch/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace zt::data {
namespace {

// A file descriptor that closes itself; close errors after a successful fsync are not data loss.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    ZT_CHECK(n > 0, "data", path, ": write failed: ", std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

void write_shard(const std::string& path, std::span<const int32_t> tokens, int64_t vocab_size) {
  ZT_CHECK(static_cast<int64_t>(tokens.size()) <= INT32_MAX, "data", path, ": ", tokens.size(),
           " tokens do not fit one shard (the header counts them in an int32); split them");
  const int64_t limit = vocab_size > 0 ? std::min<int64_t>(vocab_size, kShardMaxTokenId + 1) : kShardMaxTokenId + 1;
  std::vector<uint16_t> body(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    ZT_CHECK(tokens[i] >= 0 && tokens[i] < limit, "data", path, ": token ", tokens[i], " at position ", i,
             " cannot be written: shard tokens are in [0, ", limit, ")",
             vocab_size > 0 ? " (below the vocabulary size)" : " (uint16)");
    body[i] = static_cast<uint16_t>(tokens[i]);
  }
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());

  const std::string tmp = path + ".tmp";
  {
    Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ZT_CHECK(out.fd >= 0, "data", tmp, ": cannot create: ", std::strerror(errno));
    write_all(out.fd, header, sizeof(header), tmp);
    write_all(out.fd, body.data(), body.size() * sizeof(uint16_t), tmp);
    ZT_CHECK(::fsync(out.fd) == 0, "data", tmp, ": fsync failed: ", std::strerror(errno));
  }
  ZT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "data", "cannot rename ", tmp, " to ", path, ": ",
           std::strerror(errno));
  // The rename itself is durable only once the folder is synced; best effort (some file systems refuse).
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  Fd dir_fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.fd >= 0) ::fsync(dir_fd.fd);
}

ShardFile::ShardFile(std::string path) : path_(std::move(path)) {
  Fd in(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  ZT_CHECK(in.fd >= 0, "data", path_, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  ZT_CHECK(::fstat(in.fd, &st) == 0, "data", path_, ": cannot stat: ", std::strerror(errno));
  ZT_CHECK(S_ISREG(st.st_mode), "data", path_, ": not a regular file");
  const auto file_bytes = static_cast<int64_t>(st.st_size);
  ZT_CHECK(file_bytes >= kShardHeaderBytes, "data", path_, ": ", file_bytes, " bytes is shorter than the ",
           kShardHeaderBytes, "-byte header of an llm.c token shard");

  void* data = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, in.fd, 0);
  ZT_CHECK(data != MAP_FAILED, "data", path_, ": mmap failed: ", std::strerror(errno));
  mapping_.data = data;
  mapping_.bytes = static_cast<size_t>(file_bytes);

  const auto* header = static_cast<const int32_t*>(data);
  ZT_CHECK(header[0] == kShardMagic, "data", path_, ": magic ", header[0], " is not ", kShardMagic,
           ": not an llm.c token shard");
  ZT_CHECK(header[1] == kShardVersion, "data", path_, ": version ", header[1],
           " is not supported (this reader knows version ", kShardVersion, ", uint16 tokens)");
  num_tokens_ = header[2];
  ZT_CHECK(num_tokens_ >= 0, "data", path_, ": token count ", num_tokens_, " in the header is negative");
  const int64_t expected = kShardHeaderBytes + num_tokens_ * static_cast<int64_t>(sizeof(uint16_t));
  ZT_CHECK(expected == file_bytes, "data", path_, ": the header says ", num_tokens_, " tokens (", expected,
           " bytes with the header) but the file has ", file_bytes, " bytes",
           file_bytes < expected ? ": truncated" : ": trailing bytes");
  tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(data) + kShardHeaderBytes);
}

ShardFile::Mapping::~Mapping() {
  if (data != nullptr) ::munmap(data, bytes);
}

void ShardFile::validate_tokens(int64_t vocab_size) const { validate_tokens(vocab_size, 0, num_tokens_); }

void ShardFile::validate_tokens(int64_t vocab_size, int64_t start, int64_t count) const {
  ZT_CHECK(start >= 0 && count >= 0 && start + count <= num_tokens_, "data", path_, ": token range [", start, ", ",
           start + count, ") is outside the shard's ", num_tokens_, " tokens");
  if (vocab_size <= 0 || vocab_size > kShardMaxTokenId) return;  // every uint16 is then in range
  for (int64_t i = start; i < start + count; ++i) {
    ZT_CHECK(tokens_[i] < vocab_size, "data", path_, ": token ", tokens_[i], " at position ", i,
             " is not below the vocabulary size ", vocab_size);
  }
}

std::vector<int32_t> read_shard(const std::string& path, int64_t vocab_size) {
  const ShardFile shard(path);
  shard.validate_tokens(vocab_size);
  const std::span<const uint16_t> tokens = shard.tokens();
  return std::vector<int32_t>(tokens.begin(), tokens.end());
}

}  // namespace zt::data

#include "launch/gemm_tuning_sync.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <filesystem>

#include "core/cuda_support.h"
#include "core/error.h"
#include "launch/checkpoint.h"
#include "models/safetensors.h"

namespace zt {
namespace {

constexpr int64_t kWords = GemmTuningEntry::kKeyFields + 8;  // one entry as 64-bit words

int64_t library_id(const std::string& library) { return crc32(library.data(), library.size()); }

}  // namespace

GemmTuning gather_gemm_tuning(comm::Communicator& world, const GemmTuning& mine) {
  const int n = world.size();
  const Device dev = world.device();
  Tensor header_all = empty({2 * static_cast<int64_t>(n)}, DType::i64, dev);
  world.all_gather(from_vector(std::vector<int64_t>{library_id(mine.library), static_cast<int64_t>(mine.entries.size())},
                               {2}, dev),
                   header_all)
      ->wait();
  const std::vector<int64_t> headers = header_all.to_vector<int64_t>();
  int64_t most = 0;
  for (int r = 0; r < n; ++r) most = std::max(most, headers[static_cast<size_t>(2 * r + 1)]);
  // Rank 0's library names the merged table; every rank knows it as its own or by its id.
  Tensor library_len = from_vector(std::vector<int64_t>{static_cast<int64_t>(mine.library.size())}, {1}, dev);
  world.broadcast(library_len, 0)->wait();
  Tensor library_bytes = empty({library_len.to_vector<int64_t>()[0]}, DType::u8, dev);
  if (world.rank() == 0)
    library_bytes = from_vector(std::vector<uint8_t>(mine.library.begin(), mine.library.end()),
                                {static_cast<int64_t>(mine.library.size())}, dev);
  world.broadcast(library_bytes, 0)->wait();
  const std::vector<uint8_t> lib = library_bytes.to_vector<uint8_t>();
  if (most == 0) return GemmTuning{std::string(lib.begin(), lib.end()), {}};

  std::vector<int64_t> words(static_cast<size_t>(most * kWords), 0);
  for (size_t i = 0; i < mine.entries.size(); ++i) {
    const GemmTuningEntry& e = mine.entries[i];
    int64_t* w = &words[i * kWords];
    std::copy(e.key.begin(), e.key.end(), w);
    for (size_t j = 0; j < 8; ++j) w[GemmTuningEntry::kKeyFields + j] = std::bit_cast<int64_t>(e.algorithm[j]);
  }
  Tensor all = empty({most * kWords * n}, DType::i64, dev);
  world.all_gather(from_vector(words, {most * kWords}, dev), all)->wait();
  const std::vector<int64_t> every = all.to_vector<int64_t>();
  std::vector<GemmTuning> tables(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    GemmTuning& t = tables[static_cast<size_t>(r)];
    // Another library's choices mean nothing here: such a table is left out by merge_gemm_tuning.
    t.library = headers[static_cast<size_t>(2 * r)] == headers[0] ? std::string(lib.begin(), lib.end())
                                                                   : fmt::format("(rank {}'s other library)", r);
    for (int64_t i = 0; i < headers[static_cast<size_t>(2 * r + 1)]; ++i) {
      const int64_t* w = &every[static_cast<size_t>((r * most + i) * kWords)];
      GemmTuningEntry e;
      std::copy(w, w + GemmTuningEntry::kKeyFields, e.key.begin());
      for (size_t j = 0; j < 8; ++j) e.algorithm[j] = std::bit_cast<uint64_t>(w[GemmTuningEntry::kKeyFields + j]);
      t.entries.push_back(e);
    }
  }
  return merge_gemm_tuning(tables);
}

std::optional<GemmTuning> read_gemm_tuning_file(const std::string& path) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  return parse_gemm_tuning(read_file_bytes(path, "gemm tuning"), path);
}

void write_gemm_tuning_file(const std::string& path, const GemmTuning& tuning) {
  write_file_atomically(path, format_gemm_tuning(tuning), /*verify=*/true);
}

std::string gemm_tuning_path(const TrainConfig& cfg) {
  if (!cfg.train().gemm_tuning_file().empty()) return cfg.train().gemm_tuning_file();
  if (cfg.checkpoint().dir().empty()) return "";
  return (std::filesystem::path(cfg.checkpoint().dir()) / "gemm_tuning.txt").string();
}

namespace {
class CudaGemmTuner final : public GemmTuner {
 public:
  explicit CudaGemmTuner(int device) : device_(device) {}
  void set_autotune(bool on) override { cuda::set_gemm_autotune(device_, on); }
  std::string library() const override { return cuda::gemm_library(device_); }
  GemmTuning tuning() const override { return cuda::gemm_tuning(device_); }
  bool use(const GemmTuning& tuning) override { return cuda::use_gemm_tuning(device_, tuning); }

 private:
  int device_;
};
}  // namespace

std::unique_ptr<GemmTuner> cuda_gemm_tuner(int device) { return std::make_unique<CudaGemmTuner>(device); }

GemmTuningSync::GemmTuningSync(const TrainConfig& cfg, comm::Communicator& world, std::unique_ptr<GemmTuner> tuner,
                               Say say)
    : world_(world), tuner_(std::move(tuner)), say_(std::move(say)) {
  if (cfg.train().gemm_algorithms() != zerotrain::TrainingConfig::tuned) return;
  if (!tuner_) {
    say_("train.gemm_algorithms: tuned has no effect on the CPU (its products have one algorithm)");
    return;
  }
  active_ = true;
  path_ = gemm_tuning_path(cfg);
  tuner_->set_autotune(true);
  const std::optional<GemmTuning> file = path_.empty() ? std::nullopt : read_gemm_tuning_file(path_);
  if (!file) {
    say_(fmt::format("GEMM algorithms: timing cuBLASLt's candidates at each product's first call{}",
                     path_.empty() ? " (no checkpoint.dir or train.gemm_tuning_file: the choices are not kept)"
                                   : ", kept in " + path_ + " after the first step"));
    return;
  }
  if (!tuner_->use(*file)) {
    say_(fmt::format("GEMM algorithms: {} was timed with {}, this is {}; timing again and replacing it", path_,
                     file->library, tuner_->library()));
    return;
  }
  written_ = *file;
  say_(fmt::format("GEMM algorithms: {} choices from {}", file->entries.size(), path_));
}

void GemmTuningSync::share() {
  if (!active_) return;
  const GemmTuning merged = gather_gemm_tuning(world_, tuner_->tuning());
  tuner_->use(merged);  // every rank rounds each problem alike from here on
  if (world_.rank() != 0 || path_.empty()) return;
  const bool grown = std::any_of(merged.entries.begin(), merged.entries.end(), [&](const GemmTuningEntry& e) {
    return std::find(written_.entries.begin(), written_.entries.end(), e) == written_.entries.end();
  });
  if (!grown && merged.library == written_.library) return;
  const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir);
  write_gemm_tuning_file(path_, merged);
  written_ = merged;
  say_(fmt::format("GEMM algorithms: {} choices written to {}", merged.entries.size(), path_));
}

void GemmTuningSync::pause_timing(bool paused) {
  if (active_) tuner_->set_autotune(!paused);
}

}  // namespace zt

// The trainer's side of Note [GEMM tuning file] (core/gemm_tuning.h): read the file at the start,
// share every rank's timed choices after the first step, keep the file current at checkpoints.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/gemm_tuning.h"
#include "launch/config.h"
#include "parallel/comm/communicator.h"

namespace zt {

// Collective over `world`: every rank's table merged in rank order (a rank whose library differs
// from rank 0's is left out), on every rank.
GemmTuning gather_gemm_tuning(comm::Communicator& world, const GemmTuning& mine);

// The file's table, or nullopt when there is no file. Throws (naming the file and line) when it is
// not a tuning file.
std::optional<GemmTuning> read_gemm_tuning_file(const std::string& path);
// Written whole to "<path>.tmp", synced, read back and compared, then renamed over path.
void write_gemm_tuning_file(const std::string& path, const GemmTuning& tuning);

// The path train.gemm_tuning_file names, or <checkpoint.dir>/gemm_tuning.txt; empty when neither is set.
std::string gemm_tuning_path(const TrainConfig& cfg);

// What GemmTuningSync needs of one device's matrix products: the CUDA backend's GEMM state
// (cuda_gemm_tuner), or a test's stand-in.
class GemmTuner {
 public:
  virtual ~GemmTuner() = default;
  virtual void set_autotune(bool on) = 0;
  virtual std::string library() const = 0;
  virtual GemmTuning tuning() const = 0;
  // Uses the table's choices from now on; false (and nothing used) for another library's table.
  virtual bool use(const GemmTuning& tuning) = 0;
};

// cuda:device's (core/cuda_support.h).
std::unique_ptr<GemmTuner> cuda_gemm_tuner(int device);

class GemmTuningSync {
 public:
  using Say = std::function<void(const std::string&)>;
  // With train.gemm_algorithms = tuned and a tuner (a GPU): autotuning on, and the file's choices in
  // use when the file is there and was timed with this library and GPU. Otherwise inactive (no
  // tuner: a CPU run, which is told the setting does nothing).
  GemmTuningSync(const TrainConfig& cfg, comm::Communicator& world, std::unique_ptr<GemmTuner> tuner, Say say);
  bool active() const { return active_; }
  // Collective: the merged choices of every rank in use on every rank, and written to the file by
  // rank 0 when it holds choices the file does not. Call after the first step and before checkpoints.
  void share();
  // Timing off (on again with false) for products whose shapes training does not repeat, such as
  // sampling's growing sequences: they take cuBLASLt's first choice and stay out of the file.
  void pause_timing(bool paused);

 private:
  comm::Communicator& world_;
  std::unique_ptr<GemmTuner> tuner_;
  Say say_;
  bool active_ = false;
  std::string path_;
  GemmTuning written_;  // what the file holds
};

}  // namespace zt

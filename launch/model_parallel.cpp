#include "launch/model_parallel.h"

#include <filesystem>
#include <fmt/format.h>

#include "launch/checkpoint.h"
#include "models/hf_gpt2.h"

namespace zt {

namespace {

MeshShape mesh_shape(const TrainConfig& cfg) {
  const auto& p = cfg.parallel();
  return MeshShape{p.dp(), p.tp(), p.pp()};
}

}  // namespace

TensorParallelTraining::TensorParallelTraining(const TrainConfig& cfg, comm::Communicator& world)
    : cfg_(cfg), world_(world), mesh_(world, mesh_shape(cfg)) {
  // Ordered by world rank, which is pipeline rank major (Note [mesh layout]): the checkpoint
  // writers' rank 0 is the first stage's first dp rank.
  if (mesh_.shape().pp > 1) same_tp_rank_ = world.split(mesh_.coord().tp, world.rank());
}

std::unique_ptr<Gpt> TensorParallelTraining::make_model(const GptConfig& config, Device device, uint64_t seed,
                                                        const std::string& init_from,
                                                        std::vector<bool> owned_units) const {
  auto model = std::make_unique<Gpt>(config, device, seed, std::move(owned_units), group());
  if (init_from.empty()) return model;
  // The file holds whole tensors: load them into a whole model, then keep this rank's shards.
  Gpt whole(config, Device::cpu(), seed);
  load_hf_gpt2(whole, init_from);
  NoGradGuard no_grad;
  for (Parameter& p : model->parameters()) {
    Tensor shard = tp::take_shard(whole.find(p.name).tensor, p.tp_split, mesh_.coord().tp, tp_size());
    copy_(p.tensor, shard);
  }
  return model;
}

void TensorParallelTraining::attach(zero::ZeroEngine& engine) const {
  engine.set_grad_norm_groups({&mesh_.tp()}, mesh_.coord().tp);
}

int64_t TensorParallelTraining::num_parameters(const GptConfig& c) const {
  return gpt2_parameter_count(GptDims{c.n_layer, c.n_head, c.d_model, c.vocab_size, c.padded_vocab, c.seq_len});
}

std::string TensorParallelTraining::describe() const {
  return fmt::format(" x tp {}{}", tp_size(), cfg_.parallel().sequence_parallel() ? " (sequence parallel)" : "");
}

std::string TensorParallelTraining::checkpoint_dir(const std::string& dir) const {
  return (std::filesystem::path(dir) / fmt::format("tp_{}_of_{}", mesh_.coord().tp, tp_size())).string();
}

std::optional<std::string> TensorParallelTraining::resume_from(const zerotrain::CheckpointConfig& cc) const {
  namespace fs = std::filesystem;
  std::optional<std::string> path;
  if (cc.resume() == "auto") {
    path = latest_checkpoint(checkpoint_dir(cc.dir()));
  } else if (cc.resume() != "none") {
    // <dir>/step_N or <dir>/tp_R_of_N/step_N (the path rank 0 prints): this rank's series' step_N.
    const fs::path given(cc.resume());
    fs::path dir = given.parent_path();
    if (dir.filename().string().starts_with("tp_")) dir = dir.parent_path();
    path = (fs::path(checkpoint_dir(dir.string())) / given.filename()).string();
  }
  // Every rank must resume from the same step (a save interrupted between tp groups' renames
  // could leave their series at different steps). Decided together, so no rank is left waiting.
  const bool missing = path && !fs::is_directory(*path);
  int64_t step = -1;  // none
  if (path) {
    const std::string name = fs::path(*path).filename().string();
    step = -2;  // not a step directory
    if (!missing && name.size() > 5 && name.starts_with("step_") &&
        name.find_first_not_of("0123456789", 5) == std::string::npos)
      step = std::stoll(name.substr(5));
  }
  Tensor hi = full({1}, static_cast<double>(step), DType::i64, world_.device());
  Tensor neg = full({1}, static_cast<double>(-step), DType::i64, world_.device());
  world_.all_reduce(hi, comm::ReduceOp::max)->wait();
  world_.all_reduce(neg, comm::ReduceOp::max)->wait();
  const int64_t max_step = static_cast<int64_t>(hi.item()), min_step = -static_cast<int64_t>(neg.item());
  ZT_CHECK(!missing, "train", "checkpoint.resume = ", cc.resume(), ": with parallel.tp = ", tp_size(),
           " this rank (tp ", mesh_.coord().tp, ") resumes from ", *path, ", which does not exist");
  ZT_CHECK(max_step == min_step, "train", "tensor-parallel ranks would resume from different checkpoints (steps ",
           min_step, " to ", max_step, "; -1: none, -2: not a step_N directory) under ", cc.dir(),
           "; set checkpoint.resume to a step_N every tp_R_of_N series has");
  return path;
}

}  // namespace zt

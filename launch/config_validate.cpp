// Validation of a resolved config: every range and every contradiction, reported together, each
// naming the field path and what is accepted.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"
#include "launch/config.h"

namespace zt {

namespace {

class Problems {
 public:
  template <typename... Args>
  void add(fmt::format_string<Args...> format, Args&&... args) {
    list.push_back(fmt::format(format, std::forward<Args>(args)...));
  }
  // Integer lower bound: "train.steps = 0: must be >= 1".
  void at_least(const char* path, int64_t value, int64_t min) {
    if (value < min) add("{} = {}: must be >= {}", path, value, min);
  }
  std::vector<std::string> list;
};

void check_model(const TrainConfig& cfg, Problems& p) {
  const auto& m = cfg.model();
  const bool custom = cfg.model().preset() == zerotrain::ModelConfig::custom;
  const char* hint = custom ? " (model.preset is custom, so set it, or choose a preset: tiny, gpt2_124M, gpt2_350M, "
                              "gpt2_774M, gpt2_1_5B)"
                            : "";
  const auto dim = [&](const char* path, int64_t value) {
    if (value < 1) p.add("{} = {}: must be >= 1{}", path, value, hint);
  };
  dim("model.n_layer", m.n_layer());
  dim("model.n_head", m.n_head());
  dim("model.d_model", m.d_model());
  dim("model.vocab_size", m.vocab_size());
  dim("model.seq_len", m.seq_len());
  if (m.n_head() >= 1 && m.d_model() >= 1 && m.d_model() % m.n_head() != 0)
    p.add("model.d_model ({}) must be divisible by model.n_head ({}): each head gets d_model / n_head features",
          m.d_model(), m.n_head());
  if (!(m.dropout() >= 0 && m.dropout() < 1)) p.add("model.dropout = {}: must be in [0, 1)", m.dropout());
}

void check_optimizer(const TrainConfig& cfg, Problems& p) {
  const auto& o = cfg.optimizer();
  if (!(o.lr() > 0 && std::isfinite(o.lr()))) p.add("optimizer.lr = {}: must be > 0 and finite", o.lr());
  if (!(o.beta1() >= 0 && o.beta1() < 1)) p.add("optimizer.beta1 = {}: must be in [0, 1)", o.beta1());
  if (!(o.beta2() >= 0 && o.beta2() < 1)) p.add("optimizer.beta2 = {}: must be in [0, 1)", o.beta2());
  if (!(o.eps() > 0 && std::isfinite(o.eps()))) p.add("optimizer.eps = {}: must be > 0 and finite", o.eps());
  if (!(o.weight_decay() >= 0 && std::isfinite(o.weight_decay())))
    p.add("optimizer.weight_decay = {}: must be >= 0 and finite", o.weight_decay());
  if (!(o.grad_clip() >= 0 && std::isfinite(o.grad_clip())))
    p.add("optimizer.grad_clip = {}: must be >= 0 and finite (0 disables clipping)", o.grad_clip());
}

void check_schedule_and_train(const TrainConfig& cfg, Problems& p) {
  const auto& s = cfg.schedule();
  const auto& t = cfg.train();
  p.at_least("train.steps", t.steps(), 1);
  p.at_least("train.micro_batch_size", t.micro_batch_size(), 1);
  p.at_least("train.grad_accumulation", t.grad_accumulation(), 1);
  if (!(t.device_memory_limit_gib() >= 0 && std::isfinite(t.device_memory_limit_gib())))
    p.add("train.device_memory_limit_gib = {}: must be >= 0 and finite (0: the whole card)",
          t.device_memory_limit_gib());
  if (t.device_memory_limit_gib() > 0 && t.device() == zerotrain::TrainingConfig::cpu)
    p.add("train.device_memory_limit_gib ({}) applies to GPUs, but train.device is cpu", t.device_memory_limit_gib());
  if (!t.gemm_tuning_file().empty() && t.gemm_algorithms() != zerotrain::TrainingConfig::tuned)
    p.add("train.gemm_tuning_file ('{}') is read only with train.gemm_algorithms: tuned (it is heuristic)",
          t.gemm_tuning_file());
  p.at_least("schedule.warmup_steps", s.warmup_steps(), 0);
  if (t.steps() >= 1 && s.warmup_steps() > t.steps())
    p.add("schedule.warmup_steps ({}) must be <= train.steps ({})", s.warmup_steps(), t.steps());
  if (!(s.min_lr_ratio() >= 0 && s.min_lr_ratio() <= 1))
    p.add("schedule.min_lr_ratio = {}: must be in [0, 1]", s.min_lr_ratio());
}

void check_precision(const TrainConfig& cfg, Problems& p) {
  // The loss-scaler settings are checked even when unused (f32, bf16): a bad value in a config file
  // is a mistake whether or not this run happens to read it.
  const auto& q = cfg.precision();
  if (!(q.initial_loss_scale() > 0 && std::isfinite(q.initial_loss_scale())))
    p.add("precision.initial_loss_scale = {}: must be > 0 and finite", q.initial_loss_scale());
  p.at_least("precision.loss_scale_growth_interval", q.loss_scale_growth_interval(), 1);
  if (!(q.loss_scale_growth_factor() > 1 && std::isfinite(q.loss_scale_growth_factor())))
    p.add("precision.loss_scale_growth_factor = {}: must be > 1 and finite", q.loss_scale_growth_factor());
  if (!(q.loss_scale_backoff() > 0 && q.loss_scale_backoff() < 1))
    p.add("precision.loss_scale_backoff = {}: must be in (0, 1)", q.loss_scale_backoff());
}

void check_data_checkpoint_logging(const TrainConfig& cfg, Problems& p) {
  const auto& d = cfg.data();
  if (d.train().empty()) p.add("data.train is empty: give a glob of token shards, or \"embedded:\" for the built-in corpus");
  p.at_least("data.val_every", d.val_every(), 0);
  p.at_least("data.val_steps", d.val_steps(), 1);
  if (d.val_every() > 0 && d.val().empty())
    p.add("data.val_every ({}) needs data.val, a glob of validation shards", d.val_every());
  if (d.tokenizer().empty())
    p.add("data.tokenizer is empty: use \"byte\", a folder with GPT-2's encoder.json and vocab.bpe, or "
          "\"gpt2:ENCODER_JSON,VOCAB_BPE\"");
  if (d.tokenizer() == "byte" && cfg.model().vocab_size() >= 1 && cfg.model().vocab_size() < 257)
    p.add("model.vocab_size ({}) is smaller than the byte tokenizer's 257 tokens (256 bytes and end-of-text) (data.tokenizer: byte)",
          cfg.model().vocab_size());

  const auto& c = cfg.checkpoint();
  if (c.dir().empty()) p.add("checkpoint.dir is empty: give a directory for checkpoints");
  p.at_least("checkpoint.every", c.every(), 0);
  p.at_least("checkpoint.keep_last", c.keep_last(), 0);
  if (c.resume().empty()) p.add("checkpoint.resume is empty: use \"auto\", \"none\" or a checkpoint path");

  const auto& l = cfg.logging();
  p.at_least("logging.every", l.every(), 1);
  p.at_least("logging.sample_every", l.sample_every(), 0);
  p.at_least("logging.sample_tokens", l.sample_tokens(), 1);
  if (l.run_name().empty() || l.run_name().find('/') != std::string::npos)
    p.add("logging.run_name = '{}': must be non-empty and contain no '/'", l.run_name());
}

// parallel.checkpoint_num_blocks counts from the first block of each run of blocks: the model, or
// with pp > 1 each model chunk (Note [Checkpointing modes] in models/checkpointing.h). A count above
// the blocks of every chunk would silently checkpoint them all, so it is refused like one above n_layer.
void check_checkpoint_num_blocks(const TrainConfig& cfg, Problems& p) {
  const auto& par = cfg.parallel();
  const int n = par.checkpoint_num_blocks(), n_layer = cfg.model().n_layer();
  if (n <= 0) return;  // negative: reported by at_least
  if (par.activation_checkpointing() != zerotrain::ParallelConfig::full) {
    p.add("parallel.checkpoint_num_blocks ({}) applies only to activation_checkpointing: full (it is {})", n,
          zerotrain::ParallelConfig::ActivationCheckpointing_Name(par.activation_checkpointing()));
    return;
  }
  if (n_layer >= 1 && n > n_layer) {
    p.add("parallel.checkpoint_num_blocks ({}) exceeds model.n_layer ({}); use 0 to checkpoint all blocks", n, n_layer);
    return;
  }
  const int chunks = par.pp() * par.virtual_stages();
  if (chunks <= 1) return;
  int largest = 0;  // blocks of the largest model chunk, where the split is valid (else reported above)
  if (par.stage_split_size() == chunks) {
    largest = *std::max_element(par.stage_split().begin(), par.stage_split().end());
  } else if (par.stage_split_size() == 0 && n_layer % chunks == 0) {
    largest = n_layer / chunks;
  }
  if (largest >= 1 && n > largest)
    p.add("parallel.checkpoint_num_blocks ({}) counts the blocks of each pipeline chunk, and no chunk of parallel.pp "
          "({}) x parallel.virtual_stages ({}) has more than {}; give at most {}, or 0 to checkpoint all blocks",
          n, par.pp(), par.virtual_stages(), largest, largest);
}

void check_parallel(const TrainConfig& cfg, Problems& p) {
  const auto& par = cfg.parallel();
  const auto& m = cfg.model();
  p.at_least("parallel.dp", par.dp(), 1);
  p.at_least("parallel.tp", par.tp(), 1);
  p.at_least("parallel.pp", par.pp(), 1);
  p.at_least("parallel.micro_batches", par.micro_batches(), 1);
  p.at_least("parallel.virtual_stages", par.virtual_stages(), 1);
  p.at_least("parallel.checkpoint_every_k_blocks", par.checkpoint_every_k_blocks(), 1);
  p.at_least("parallel.checkpoint_num_blocks", par.checkpoint_num_blocks(), 0);
  p.at_least("parallel.loss_chunk_rows", par.loss_chunk_rows(), -1);
  if (par.zero_stage() < 0 || par.zero_stage() > 3)
    p.add("parallel.zero_stage = {}: must be 0, 1, 2 or 3", par.zero_stage());
  if (!(par.bucket_mb() > 0 && std::isfinite(par.bucket_mb())))
    p.add("parallel.bucket_mb = {}: must be > 0 and finite", par.bucket_mb());
  if (par.micro_batches() != cfg.train().grad_accumulation())
    p.add("parallel.micro_batches ({}) and train.grad_accumulation ({}) name the same number and disagree; set one",
          par.micro_batches(), cfg.train().grad_accumulation());
  if (par.dp() < 1 || par.tp() < 1 || par.pp() < 1 || par.virtual_stages() < 1) return;

  // Tensor parallelism splits attention heads, the vocabulary rows and (with sequence parallelism)
  // the sequence across the tp ranks.
  const int tp = par.tp();
  if (m.n_head() >= 1 && m.n_head() % tp != 0)
    p.add("model.n_head ({}) is not divisible by parallel.tp ({}): tensor parallelism splits attention heads",
          m.n_head(), tp);
  if (m.vocab_size() >= 1 && pad_vocab(m.vocab_size()) % tp != 0)
    p.add("the padded vocabulary ({}) is not divisible by parallel.tp ({}): the embedding is split by rows",
          pad_vocab(m.vocab_size()), tp);
  if (par.sequence_parallel() && tp == 1)
    p.add("parallel.sequence_parallel needs parallel.tp > 1 (it splits the sequence across tensor-parallel ranks)");
  if (par.sequence_parallel() && m.seq_len() >= 1 && m.seq_len() % tp != 0)
    p.add("model.seq_len ({}) is not divisible by parallel.tp ({}), as sequence_parallel needs", m.seq_len(), tp);

  // Pipeline.
  const int pp = par.pp(), v = par.virtual_stages();
  const bool interleaved = par.pipeline_schedule() == zerotrain::ParallelConfig::interleaved;
  if (v > 1 && !interleaved)
    p.add("parallel.virtual_stages ({}) > 1 needs parallel.pipeline_schedule: interleaved", v);
  if (interleaved && (v < 2 || pp < 2))
    p.add("parallel.pipeline_schedule interleaved needs parallel.pp >= 2 and parallel.virtual_stages >= 2 (got pp {}, "
          "virtual_stages {})", pp, v);
  if (interleaved && par.micro_batches() >= 1 && par.micro_batches() % pp != 0)
    p.add("parallel.micro_batches ({}) must be a multiple of parallel.pp ({}) for the interleaved schedule",
          par.micro_batches(), pp);
  if (par.stage_split_size() > 0) {
    if (par.stage_split_size() != pp * v)
      p.add("parallel.stage_split has {} entries but pp x virtual_stages = {} x {} = {} model chunks",
            par.stage_split_size(), pp, v, pp * v);
    const int64_t sum = std::accumulate(par.stage_split().begin(), par.stage_split().end(), int64_t{0});
    for (int i = 0; i < par.stage_split_size(); ++i)
      if (par.stage_split(i) < 1) p.add("parallel.stage_split[{}] = {}: every chunk needs >= 1 block", i, par.stage_split(i));
    if (m.n_layer() >= 1 && sum != m.n_layer())
      p.add("parallel.stage_split sums to {} blocks but model.n_layer is {}", sum, m.n_layer());
  } else if (m.n_layer() >= 1 && m.n_layer() % (pp * v) != 0) {
    p.add("model.n_layer ({}) is not divisible by parallel.pp ({}) x parallel.virtual_stages ({}) = {}; give "
          "parallel.stage_split for an uneven split", m.n_layer(), pp, v, pp * v);
  }

  // ZeRO and offload.
  if (par.zero_stage() == 3 && pp > 1)
    p.add("parallel.zero_stage 3 with parallel.pp ({}) > 1 is not supported yet: use zero_stage <= 2 with pipeline "
          "parallelism, or pp 1 with ZeRO-3", pp);
  if (par.offload_params() && par.zero_stage() != 3)
    p.add("parallel.offload_params needs parallel.zero_stage 3 (only ZeRO-3 keeps a parameter shard to offload); "
          "zero_stage is {}", par.zero_stage());
  if (par.offload_optimizer() && par.zero_stage() < 1)
    p.add("parallel.offload_optimizer needs parallel.zero_stage >= 1 (the CPU optimizer updates this rank's shard); "
          "zero_stage is {}", par.zero_stage());
  if (!(par.offload_optimizer_fraction() > 0.0 && par.offload_optimizer_fraction() <= 1.0))
    p.add("parallel.offload_optimizer_fraction must be in (0, 1] (the share of units whose optimizer states go to "
          "the host; 1 offloads all), got {}", par.offload_optimizer_fraction());
  if (par.offload_optimizer_fraction() != 1.0 && !par.offload_optimizer())
    p.add("parallel.offload_optimizer_fraction ({}) applies only with parallel.offload_optimizer: true",
          par.offload_optimizer_fraction());
  if (par.checkpoint_every_k_blocks() != 1 &&
      par.activation_checkpointing() != zerotrain::ParallelConfig::full)
    p.add("parallel.checkpoint_every_k_blocks ({}) applies only to activation_checkpointing: full (it is {})",
          par.checkpoint_every_k_blocks(),
          zerotrain::ParallelConfig::ActivationCheckpointing_Name(par.activation_checkpointing()));
  check_checkpoint_num_blocks(cfg, p);
}

}  // namespace

std::vector<std::string> config_problems(const TrainConfig& cfg) {
  Problems p;
  check_model(cfg, p);
  check_optimizer(cfg, p);
  check_schedule_and_train(cfg, p);
  check_precision(cfg, p);
  check_data_checkpoint_logging(cfg, p);
  check_parallel(cfg, p);
  return p.list;
}

void validate_config(const TrainConfig& cfg) {
  const std::vector<std::string> problems = config_problems(cfg);
  if (problems.empty()) return;
  if (problems.size() == 1) ZT_FAIL("config", problems.front());
  ZT_FAIL("config", problems.size(), " problems:\n  ", fmt::format("{}", fmt::join(problems, "\n  ")));
}

void validate_parallel(const TrainConfig& cfg, int world_size) {
  const auto& p = cfg.parallel();
  const int64_t product = int64_t{p.dp()} * p.tp() * p.pp();
  if (product == world_size) return;
  std::string hint;
  if (world_size > 0 && world_size % (int64_t{p.tp()} * p.pp()) == 0)
    hint = fmt::format("; set parallel.dp to {} or start {} ranks", world_size / (p.tp() * p.pp()), product);
  ZT_FAIL("config", "parallel: dp (", p.dp(), ") x tp (", p.tp(), ") x pp (", p.pp(), ") = ", product,
          " but mpirun started ", world_size, " ranks", hint);
}

}  // namespace zt

// Registration of the subcommands and their flags, and the small ones (info, export, tokenize,
// schedule, estimate). `train` is in cli_train.cpp.
#include "launch/cli.h"

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iostream>

#include "core/cuda_support.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/data/tokenize.h"
#include "launch/estimate.h"
#include "models/gpt.h"
#include "models/hf_gpt2.h"
#include "models/safetensors.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/pipeline/timeline.h"
#include "parallel/zero/flat_layout.h"

namespace zt::cli {

void register_commands(CLI::App& app, Commands& c) {
  c.train_cmd = app.add_subcommand("train", "train a GPT from a config (run under mpirun for several ranks)");
  c.train_cmd->add_option("config", c.train.config, "protobuf text config, e.g. examples/tiny.pbtxt")->required();
  c.train_cmd->add_option("--set", c.train.overrides, "override a field: --set optimizer.lr=3e-4 (repeatable)");

  c.estimate_cmd = app.add_subcommand("estimate", "memory per GPU and per host before running");
  c.estimate_cmd->add_option("config", c.estimate.config, "a config to estimate (or use --preset / --params)");
  c.estimate_cmd->add_option("--set", c.estimate.overrides, "override a field, as for train (repeatable)");
  c.estimate_cmd->add_option("--preset", c.estimate.preset, "tiny, 124M, 350M, 774M or 1.5B (no config needed)");
  c.estimate_cmd->add_option("--params", c.estimate.params_billion, "a raw parameter count in billions (model states only)");
  c.estimate_cmd->add_option("--ranks-per-node", c.estimate.ranks_per_node, "for host memory per node (default min(8, world))");
  c.estimate_cmd->add_option("--gpu-memory", c.estimate.gpu_memory_gib,
                             "GiB per GPU: say whether the run fits, and the smallest "
                             "parallel.offload_optimizer_fraction that makes it fit");

  c.tokenize_cmd = app.add_subcommand("tokenize", "turn text files into llm.c token shards");
  c.tokenize_cmd->add_option("inputs", c.tokenize.inputs, "text files or globs")->required();
  c.tokenize_cmd->add_option("--out", c.tokenize.out, "output prefix: PREFIX_train_000000.bin ...")->required();
  c.tokenize_cmd->add_option("--tokenizer", c.tokenize.tokenizer, "byte or gpt2")->check(CLI::IsMember({"byte", "gpt2"}));
  c.tokenize_cmd->add_option("--encoder", c.tokenize.encoder, "GPT-2 encoder.json (with --tokenizer gpt2)");
  c.tokenize_cmd->add_option("--merges", c.tokenize.merges, "GPT-2 vocab.bpe (with --tokenizer gpt2)");
  c.tokenize_cmd->add_option("--shard-tokens", c.tokenize.shard_tokens, "tokens per shard (default 1e8)");
  c.tokenize_cmd->add_option("--val-fraction", c.tokenize.val_fraction, "fraction of documents for validation");
  c.tokenize_cmd->add_flag("--overwrite", c.tokenize.overwrite, "replace existing shards with this prefix");

  c.export_cmd = app.add_subcommand("export", "write a checkpoint's weights as Hugging Face GPT-2 safetensors");
  c.export_cmd->add_option("checkpoint", c.export_args.checkpoint, "a checkpoint directory (…/step_00001000)")->required();
  c.export_cmd->add_option("out", c.export_args.out, "output .safetensors path")->required();

  c.info_cmd = app.add_subcommand("info", "build, devices and library versions");

  c.schedule_cmd = app.add_subcommand("schedule", "print a pipeline schedule's timeline and bubble without a model");
  c.schedule_cmd->add_option("--pp", c.schedule.pp, "pipeline ranks");
  c.schedule_cmd->add_option("--micro-batches", c.schedule.micro_batches, "micro-batches per step");
  c.schedule_cmd->add_option("--virtual-stages", c.schedule.virtual_stages, "model chunks per rank (interleaved)");
  c.schedule_cmd->add_option("--schedule", c.schedule.schedule, "gpipe, 1f1b or interleaved")
      ->check(CLI::IsMember({"gpipe", "1f1b", "interleaved"}));
  c.schedule_cmd->add_option("--forward-cost", c.schedule.forward_cost, "time of one forward (default 1)");
  c.schedule_cmd->add_option("--backward-cost", c.schedule.backward_cost, "time of one backward (default 2)");
  c.schedule_cmd->add_option("--comm-cost", c.schedule.comm_cost, "time of one message (default 0)");
  c.schedule_cmd->add_option("--trace", c.schedule.trace, "also write a Chrome trace JSON (open in Perfetto)");
}

int run_selected(CLI::App& app, Commands& c, int argc, char** argv) {
  if (c.train_cmd->parsed()) return run_train(c.train, argc, argv);
  if (c.estimate_cmd->parsed()) return run_estimate(c.estimate);
  if (c.tokenize_cmd->parsed()) return run_tokenize(c.tokenize);
  if (c.export_cmd->parsed()) return run_export(c.export_args);
  if (c.info_cmd->parsed()) return run_info();
  if (c.schedule_cmd->parsed()) return run_schedule(c.schedule);
  std::cerr << app.help();
  return 2;
}

int run_info() {
  std::cout << "zerotrain " << ZT_VERSION << "\n";
  std::cout << "built with CUDA: " << (cuda::built_with_cuda() ? "yes" : "no") << "\n";
  std::cout << cuda::version_info() << "\n";
  const int n = cuda::device_count();
  std::cout << "GPUs visible: " << n << "\n";
  for (int i = 0; i < n; ++i) std::cout << "  cuda:" << i << " " << cuda::device_name(i) << "\n";
  return 0;
}

int run_tokenize(const TokenizeArgs& a) {
  data::TokenizeOptions o;
  o.inputs = a.inputs;
  o.output_prefix = a.out;
  o.tokenizer.kind = data::parse_tokenizer_kind(a.tokenizer);
  o.tokenizer.encoder_json = a.encoder;
  o.tokenizer.vocab_bpe = a.merges;
  o.shard_tokens = a.shard_tokens;
  o.val_fraction = a.val_fraction;
  o.overwrite = a.overwrite;
  o.progress = &std::cerr;
  data::TokenizeResult r = data::tokenize_files(o);
  std::cout << fmt::format("tokenized {} files, {} documents: {} train tokens in {} shards, {} val tokens in {} shards\n",
                           r.files, r.documents, r.train_tokens, r.train_shards.size(), r.val_tokens,
                           r.val_shards.size());
  return 0;
}

int run_schedule(const ScheduleArgs& a) {
  pipeline::ScheduleConfig sc;
  sc.kind = a.schedule == "gpipe"   ? pipeline::ScheduleKind::gpipe
            : a.schedule == "1f1b" ? pipeline::ScheduleKind::one_f_one_b
                                   : pipeline::ScheduleKind::interleaved;
  sc.pp = a.pp;
  sc.micro_batches = a.micro_batches;
  sc.virtual_chunks = a.virtual_stages;
  sc.placement_costs = {a.forward_cost, a.backward_cost, a.comm_cost, 0};
  pipeline::Schedule s = pipeline::make_schedule(sc);
  pipeline::SimulationOptions opt;
  opt.costs = sc.placement_costs;
  pipeline::SimulationResult r = pipeline::simulate(s, opt);
  std::cout << pipeline::render_text(r);
  std::cout << fmt::format("{} schedule, pp {}, {} micro-batches, {} chunk(s) per rank: makespan {:.1f}, bubble {:.1f}% "
                           "(analytic {:.1f}%), peak activations in flight {}\n",
                           a.schedule, a.pp, a.micro_batches, a.virtual_stages, r.makespan, 100 * r.bubble_fraction,
                           100 * pipeline::analytic_bubble_fraction(sc.kind, a.pp, a.micro_batches, a.virtual_stages,
                                                                    opt.costs),
                           r.max_peak_in_flight());
  if (!a.trace.empty()) {
    pipeline::write_chrome_trace(r, a.trace);
    std::cout << "trace written to " << a.trace << " (open in https://ui.perfetto.dev)\n";
  }
  return 0;
}

int run_estimate(const EstimateArgs& a) {
  TrainConfig cfg;
  if (!a.config.empty()) {
    cfg = load_config(a.config, a.overrides);
  } else {
    std::vector<std::string> overrides = a.overrides;
    if (!a.preset.empty()) overrides.insert(overrides.begin(), "model.preset=" + a.preset);
    ZT_CHECK(!a.preset.empty() || a.params_billion > 0, "estimate",
             "give a config file, --preset (tiny, 124M, 350M, 774M, 1.5B) or --params BILLIONS");
    if (a.preset.empty()) overrides.insert(overrides.begin(), "model.preset=124M");
    apply_overrides(cfg, overrides);
    resolve_config(cfg);
    validate_config(cfg);
  }
  MemoryEstimateInput in = estimate_input_from_config(cfg, a.ranks_per_node);
  if (a.params_billion > 0) {
    in.dims.reset();
    in.parameter_count = static_cast<int64_t>(a.params_billion * 1e9);
  }
  const MemoryEstimate estimate = estimate_memory(in);
  std::cout << format_memory_estimate(estimate, in);
  if (a.gpu_memory_gib > 0) {
    ZT_CHECK(std::isfinite(a.gpu_memory_gib), "estimate", "--gpu-memory must be a finite number of GiB, got ",
             a.gpu_memory_gib);
    const int64_t card = static_cast<int64_t>(a.gpu_memory_gib * 1024.0 * 1024.0 * 1024.0);
    // The estimate counts what zerotrain's tensors take. Beyond it the caching allocator holds split
    // blocks it cannot hand out yet, and libraries take workspaces: runs sized to the estimate alone
    // ran out of memory under a cap on an H200 (1.4 GiB cached but unusable at GPT-2 1.5B under 34
    // GiB, 0.55 GiB at 124M under 5 GiB; docs/performance.md). So what fits leaves a tenth of the
    // card, and at least 1 GiB, free.
    const int64_t limit = card - std::max<int64_t>(int64_t{1} << 30, card / 10);
    const int64_t need = estimate.worst().gpu_total();
    std::cout << fmt::format("fits in {:g} GiB per GPU ({} of estimate, the rest left for the allocator's cache and "
                             "workspaces): {} ({} needed{})\n",
                             a.gpu_memory_gib, format_bytes(std::max<int64_t>(limit, 0)), need <= limit ? "yes" : "no",
                             format_bytes(need),
                             need <= limit ? "" : fmt::format(", {} over", format_bytes(need - limit)));
    // The levers in order: recompute some blocks (no host memory needed), then offload.
    const bool all_checkpointed = in.checkpointing == ActivationCheckpointing::full && in.checkpoint_num_blocks == 0;
    if (need > limit && in.dims && !all_checkpointed) {
      if (const std::optional<int> n = fewest_checkpointed_blocks(in, limit)) {
        MemoryEstimateInput with = in;
        with.checkpointing = ActivationCheckpointing::full;
        with.checkpoint_num_blocks = *n;
        std::cout << fmt::format("fewest recomputed blocks that fit: --set parallel.activation_checkpointing=full "
                                 "--set parallel.checkpoint_num_blocks={} ({} per GPU{})\n",
                                 with.checkpoint_num_blocks, format_bytes(estimate_memory(with).worst().gpu_total()),
                                 with.checkpoint_num_blocks == 0 ? "; 0: all blocks" : "");
      } else {
        std::cout << "even with every block checkpointed it does not fit without more savers\n";
      }
    }
    if ((need > limit || in.offload_optimizer) && in.zero_stage < 1) {
      std::cout << "optimizer offload needs parallel.zero_stage >= 1 (the CPU optimizer steps this rank's shard)\n";
    } else if (need > limit || in.offload_optimizer) {
      const std::optional<double> f = smallest_offload_fraction(in, limit);
      if (f) {
        MemoryEstimateInput with = in;
        with.offload_optimizer = true;
        with.offload_optimizer_fraction = *f;
        const MemoryEstimate e = estimate_memory(with);
        std::cout << fmt::format("smallest optimizer offload that fits: --set parallel.offload_optimizer=true --set "
                                 "parallel.offload_optimizer_fraction={:g} ({} per GPU, {} host per rank)\n",
                                 *f, format_bytes(e.worst().gpu_total()), format_bytes(e.worst().host));
      } else {
        std::cout << "even with the whole optimizer offloaded it does not fit: raise parallel.zero_stage, use "
                     "activation checkpointing, a smaller micro-batch, or more GPUs\n";
      }
    }
  }
  return 0;
}

int run_export(const ExportArgs& a) {
  namespace fs = std::filesystem;
  zerotrain::CheckpointMeta meta;
  {
    std::ifstream in(fs::path(a.checkpoint) / "checkpoint.pb", std::ios::binary);
    ZT_CHECK(in.good() && meta.ParseFromIstream(&in), "export", a.checkpoint,
             " is not a complete zerotrain checkpoint (no readable checkpoint.pb)");
  }
  TrainConfig cfg = parse_config_text(meta.config_text(), a.checkpoint + "/checkpoint.pb");
  GptConfig mc = GptConfig::from_dims(model_dims(cfg), DType::f32);
  Gpt model(mc, Device::cpu(), 0);
  // Rebuild each unit's flat f32 masters from the files holding its shards, in shard-rank order
  // (one file per shard rank, or with pipeline stages each stage's own set: Note [Checkpoint
  // pipeline stages] in launch/checkpoint.h), then cut it into parameters.
  std::vector<SafetensorsFile> shards;
  std::vector<int> shard_rank_of;
  for (const auto& f : meta.files()) {
    const std::string file = (fs::path(a.checkpoint) / f.name()).string();
    ZT_CHECK(fs::exists(file), "export", file, " is missing");
    ZT_CHECK(fs::file_size(file) == f.bytes(), "export", file, " has ", fs::file_size(file), " bytes, expected ",
             f.bytes(), " (truncated or corrupted)");
    ZT_CHECK(file_crc32(file) == f.crc32(), "export", file, " fails its checksum: the checkpoint is corrupted");
    shards.push_back(read_safetensors(file));
    const auto rank = shards.back().metadata.find("shard_rank");
    shard_rank_of.push_back(rank == shards.back().metadata.end() ? static_cast<int>(shard_rank_of.size())
                                                                 : std::stoi(rank->second));
  }
  NoGradGuard no_grad;
  for (int u = 0; u < model.num_units(); ++u) {
    const std::string name = fmt::format("unit.{}.master", u);
    std::vector<std::pair<int, Tensor>> pieces;
    for (size_t k = 0; k < shards.size(); ++k)
      if (auto it = shards[k].tensors.find(name); it != shards[k].tensors.end())
        pieces.emplace_back(shard_rank_of[k], it->second);
    std::sort(pieces.begin(), pieces.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    bool complete = static_cast<int>(pieces.size()) == meta.shard_ranks();
    for (size_t k = 0; k < pieces.size() && complete; ++k) complete = pieces[k].first == static_cast<int>(k);
    ZT_CHECK(complete, "export", a.checkpoint, ": unit ", u, " has ", pieces.size(), " shard(s) in its files, expected ",
             meta.shard_ranks(), " (shard ranks 0..", meta.shard_ranks() - 1, ")");
    std::vector<Tensor> flat_pieces;
    for (auto& piece : pieces) flat_pieces.push_back(piece.second);
    Tensor flat = cat(flat_pieces, 0);
    int64_t offset = 0;
    for (int i : model.unit_parameter_indices(u)) {
      Tensor& p = model.parameters()[static_cast<size_t>(i)].tensor;
      ZT_CHECK(offset + p.numel() <= flat.numel(), "export", a.checkpoint, ": unit ", u, " holds ", flat.numel(),
               " values, fewer than the model's parameters need");
      copy_(p, reshape(narrow(flat, 0, offset, p.numel()), p.shape()));
      offset += p.numel();
    }
  }
  save_hf_gpt2(model.parameters(), mc, a.out);
  std::cout << fmt::format("exported step {} ({:.2f}M parameters) to {}\n", meta.step(), model.num_parameters() / 1e6,
                           a.out);
  return 0;
}

}  // namespace zt::cli

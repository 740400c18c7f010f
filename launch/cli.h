// The subcommands of the zerotrain executable: train, estimate, tokenize, export, info, schedule.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace zt::cli {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
};
struct EstimateArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string preset;
  double params_billion = 0;
  int ranks_per_node = 0;
  double gpu_memory_gib = 0;  // > 0: say whether the run fits, and the offload fraction that makes it fit
};
struct TokenizeArgs {
  std::vector<std::string> inputs;
  std::string out;
  std::string tokenizer = "byte";
  std::string encoder, merges;
  int64_t shard_tokens = 100'000'000;
  double val_fraction = 0.005;
  bool overwrite = false;
};
struct ExportArgs {
  std::string checkpoint;
  std::string out;
};
struct ScheduleArgs {
  int pp = 4;
  int micro_batches = 8;
  int virtual_stages = 1;
  std::string schedule = "1f1b";
  double forward_cost = 1.0, backward_cost = 2.0, comm_cost = 0.0;
  std::string trace;
};

struct Commands {
  TrainArgs train;
  EstimateArgs estimate;
  TokenizeArgs tokenize;
  ExportArgs export_args;
  ScheduleArgs schedule;
  CLI::App* train_cmd = nullptr;
  CLI::App* estimate_cmd = nullptr;
  CLI::App* tokenize_cmd = nullptr;
  CLI::App* export_cmd = nullptr;
  CLI::App* info_cmd = nullptr;
  CLI::App* schedule_cmd = nullptr;
};

void register_commands(CLI::App& app, Commands& c);
int run_selected(CLI::App& app, Commands& c, int argc, char** argv);

int run_train(const TrainArgs& args, int argc, char** argv);
int run_estimate(const EstimateArgs& args);
int run_tokenize(const TokenizeArgs& args);
int run_export(const ExportArgs& args);
int run_info();
int run_schedule(const ScheduleArgs& args);

}  // namespace zt::cli

// zerotrain: the command-line entry point. Each subcommand lives in launch/cli_*.cpp; main only
// parses, dispatches and turns exceptions into a message and an exit code.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "core/error.h"
#include "launch/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"zerotrain: train GPT models that do not fit on one GPU (data, tensor and pipeline parallel, ZeRO 1-3)"};
  app.require_subcommand(1);
  zt::cli::Commands commands;
  zt::cli::register_commands(app, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return zt::cli::run_selected(app, commands, argc, argv);
  } catch (const zt::OutOfMemoryError& e) {
    std::fprintf(stderr, "zerotrain: %s\n", e.what());
    std::fprintf(stderr, "zerotrain: try `zerotrain estimate` with this config and --gpu-memory <GiB per GPU>: it "
                         "prints the fewest blocks to recompute (parallel.checkpoint_num_blocks) and the smallest "
                         "optimizer offload that fit; or a higher parallel.zero_stage, or a smaller "
                         "train.micro_batch_size\n");
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zerotrain: %s\n", e.what());
    return 1;
  }
}

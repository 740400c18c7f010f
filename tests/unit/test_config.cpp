// launch/config: parsing with located errors, --set overrides, presets and defaults, validation.
#include <gtest/gtest.h>

#include <google/protobuf/util/message_differencer.h>

#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "launch/config.h"

namespace zt {
namespace {

// Runs fn, expects a zt::Error whose message contains every part; returns the message.
std::string expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in:\n" << msg;
    return msg;
  }
  ADD_FAILURE() << "no error thrown; expected one containing '" << (parts.empty() ? "" : parts.front()) << "'";
  return {};
}

TrainConfig resolved(const std::string& text, const std::vector<std::string>& overrides = {}) {
  TrainConfig cfg = parse_config_text(text, "test.pbtxt");
  apply_overrides(cfg, overrides);
  resolve_config(cfg);
  return cfg;
}

const std::string kTiny = "model { preset: tiny }\n";

TEST(Config, ParsesTheTinyExample) {
  const TrainConfig cfg = load_config(std::string(ZT_SOURCE_DIR) + "/examples/tiny.pbtxt");
  EXPECT_EQ(cfg.model().preset(), zerotrain::ModelConfig::tiny);
  EXPECT_EQ(model_dims(cfg), make_gpt_dims(4, 4, 128, 257, 128));  // seq_len 128 overrides the preset's 256
  EXPECT_EQ(model_dims(cfg).padded_vocab, 384);
  EXPECT_EQ(cfg.train().micro_batch_size(), 8);
  EXPECT_EQ(cfg.train().steps(), 300);
  EXPECT_DOUBLE_EQ(cfg.optimizer().lr(), 1e-3);
  EXPECT_EQ(cfg.schedule().warmup_steps(), 30);
  EXPECT_EQ(lr_schedule_kind(cfg), LrScheduleKind::warmup_cosine);
  EXPECT_EQ(cfg.data().train(), "embedded:");
  EXPECT_EQ(device_choice(cfg), DeviceChoice::cpu);
  EXPECT_EQ(precision(cfg), Precision::f32);
  validate_parallel(cfg, 1);
}

TEST(Config, EveryExampleLoadsAndValidates) {
  for (const char* name : {"tiny", "gpt2_124m", "gpt2_350m", "gpt2_1.5b_zero3"}) {
    SCOPED_TRACE(name);
    const TrainConfig cfg = load_config(std::string(ZT_SOURCE_DIR) + "/examples/" + name + ".pbtxt");
    EXPECT_TRUE(config_problems(cfg).empty());
  }
  const TrainConfig xl = load_config(std::string(ZT_SOURCE_DIR) + "/examples/gpt2_1.5b_zero3.pbtxt");
  EXPECT_EQ(xl.parallel().zero_stage(), 3);
  EXPECT_TRUE(xl.parallel().offload_optimizer());
  EXPECT_EQ(activation_checkpointing(xl), ActivationCheckpointing::full);
  validate_parallel(xl, 8);
}

TEST(Config, UnknownFieldNamesFileLineColumnAndSection) {
  const std::string text = "# a comment { with a brace\noptimizer {\n    lr_max: 3e-4\n}\n";
  const std::string msg = expect_error([&] { parse_config_text(text, "examples/x.pbtxt"); },
                                       {"[config] examples/x.pbtxt:3:5: unknown field 'lr_max' in section 'optimizer'",
                                        "fields: lr, beta1, beta2, eps, weight_decay, grad_clip"});
  EXPECT_EQ(msg.rfind("[config] examples/x.pbtxt:3:5: unknown field 'lr_max' in section 'optimizer'; fields:", 0), 0u);
  // A tab indents to column 2 in characters, whatever the tokenizer counts.
  expect_error([] { parse_config_text("parallel {\n\tdpp: 2\n}", "t.pbtxt"); },
               {"t.pbtxt:2:2: unknown field 'dpp' in section 'parallel'", "(did you mean 'dp'?)"});
  // Braces inside strings do not confuse the section.
  expect_error([] { parse_config_text("data { train: \"a{b\" }\nmodel { n_heads: 4 }", "t.pbtxt"); },
               {"t.pbtxt:2:9: unknown field 'n_heads' in section 'model'", "(did you mean 'n_head'?)"});
}

TEST(Config, UnknownSectionSuggestsTheRightOne) {
  expect_error([] { parse_config_text("optimiser { lr: 1 }", "t.pbtxt"); },
               {"t.pbtxt:1:1: unknown section 'optimiser'; sections: model, optimizer, schedule", "did you mean 'optimizer'?"});
  expect_error([] { parse_config_text("model { preset: tiny }\nlr: 1e-3\n", "t.pbtxt"); },
               {"t.pbtxt:2:1: unknown section 'lr'", "'lr' is a field of section 'optimizer': write optimizer { lr: ... }"});
}

TEST(Config, BadEnumValueListsAccepted) {
  expect_error([] { parse_config_text("precision {\n  dtype: f8\n}", "t.pbtxt"); },
               {"[config] t.pbtxt:2:10: 'f8' is not a valid value for precision.dtype; accepted: f32, bf16, fp16"});
  // Values that are not identifiers at all: the parser's words, then the accepted values.
  expect_error([] { parse_config_text("model { preset: 124M }", "t.pbtxt"); },
               {"t.pbtxt:1:", "; model.preset accepts: custom, tiny, gpt2_124M, gpt2_350M, gpt2_774M, gpt2_1_5B"});
  expect_error([] { parse_config_text("parallel {\n  pipeline_schedule: \"1f1b\"\n}", "t.pbtxt"); },
               {"t.pbtxt:2:22: ", "; parallel.pipeline_schedule accepts: gpipe, one_f_one_b, interleaved"});
  expect_error([] { parse_config_text("parallel { activation_checkpointing: most }", "t.pbtxt"); },
               {"'most' is not a valid value for parallel.activation_checkpointing; accepted: none, full, selective"});
}

TEST(Config, SyntaxErrorsKeepTheParsersWordsWithLocation) {
  expect_error([] { parse_config_text("parallel { dp: two }", "t.pbtxt"); }, {"[config] t.pbtxt:1:16: ", "Expected integer"});
  expect_error([] { parse_config_text("parallel { dp: 1 dp: 2 }", "t.pbtxt"); }, {"t.pbtxt:1:", "\"dp\" is specified multiple times"});
  expect_error([] { read_config_file("/nonexistent/dir/x.pbtxt"); }, {"[config] cannot open config file '/nonexistent/dir/x.pbtxt'"});
}

TEST(Config, PresetsFillOnlyWhatTheUserLeftUnset) {
  const std::vector<std::pair<std::string, GptDims>> presets = {
      {"tiny", make_gpt_dims(4, 4, 128, 257, 256)},         {"gpt2_124M", make_gpt_dims(12, 12, 768, 50257, 1024)},
      {"gpt2_350M", make_gpt_dims(24, 16, 1024, 50257, 1024)}, {"gpt2_774M", make_gpt_dims(36, 20, 1280, 50257, 1024)},
      {"gpt2_1_5B", make_gpt_dims(48, 25, 1600, 50257, 1024)}};
  for (const auto& [name, dims] : presets) {
    SCOPED_TRACE(name);
    const TrainConfig cfg = resolved("model { preset: " + name + " }");
    EXPECT_EQ(model_dims(cfg), dims);
    EXPECT_TRUE(config_problems(cfg).empty());
  }
  EXPECT_EQ(make_gpt_dims(1, 1, 1, 50257, 1).padded_vocab, 50304);
  // The user's own values win over the preset's.
  const TrainConfig six = resolved("model { preset: gpt2_124M n_layer: 6 seq_len: 512 }");
  EXPECT_EQ(model_dims(six), make_gpt_dims(6, 12, 768, 50257, 512));
  // ... also when the preset comes from --set after the file.
  const TrainConfig later = resolved("model { n_layer: 2 }", {"model.preset=350M"});
  EXPECT_EQ(model_dims(later), make_gpt_dims(2, 16, 1024, 50257, 1024));
  // A custom model must give its dimensions.
  expect_error([] { validate_config(resolved("model { n_layer: 2 n_head: 2 d_model: 64 }")); },
               {"[config] 2 problems:", "model.vocab_size = 0: must be >= 1 (model.preset is custom",
                "model.seq_len = 0: must be >= 1"});
}

TEST(Config, OverridesSetFieldsByPath) {
  TrainConfig cfg = parse_config_text(kTiny);
  apply_overrides(cfg, {"optimizer.lr=3e-4", "model.preset=124M", "parallel.dp=2", "precision.dtype=fp16",
                        "parallel.pipeline_schedule=1f1b", "parallel.stage_split=3,4,5", "data.train=shards/*.bin",
                        "parallel.offload_optimizer=true", "train.seed=18446744073709551615", "model.dropout=0.25",
                        "train.steps=5000000000", "train.device=auto"});
  EXPECT_DOUBLE_EQ(cfg.optimizer().lr(), 3e-4);
  EXPECT_EQ(cfg.model().preset(), zerotrain::ModelConfig::gpt2_124M);
  EXPECT_EQ(cfg.parallel().dp(), 2);
  EXPECT_EQ(cfg.precision().dtype(), zerotrain::PrecisionConfig::fp16);
  EXPECT_EQ(cfg.parallel().pipeline_schedule(), zerotrain::ParallelConfig::one_f_one_b);
  ASSERT_EQ(cfg.parallel().stage_split_size(), 3);
  EXPECT_EQ(cfg.parallel().stage_split(0), 3);
  EXPECT_EQ(cfg.parallel().stage_split(1), 4);
  EXPECT_EQ(cfg.parallel().stage_split(2), 5);
  EXPECT_EQ(cfg.data().train(), "shards/*.bin");
  EXPECT_TRUE(cfg.parallel().offload_optimizer());
  EXPECT_EQ(cfg.train().seed(), 18446744073709551615ull);
  EXPECT_FLOAT_EQ(cfg.model().dropout(), 0.25f);
  EXPECT_EQ(cfg.train().steps(), 5000000000ll);
  EXPECT_EQ(cfg.train().device(), zerotrain::TrainingConfig::auto_);
  apply_override(cfg, "model.preset=1.5B");
  EXPECT_EQ(cfg.model().preset(), zerotrain::ModelConfig::gpt2_1_5B);
  apply_override(cfg, "model.preset=gpt2_350M");
  EXPECT_EQ(cfg.model().preset(), zerotrain::ModelConfig::gpt2_350M);
  apply_override(cfg, "parallel.stage_split=12");  // replaces, not appends
  EXPECT_EQ(cfg.parallel().stage_split_size(), 1);
  apply_override(cfg, "parallel.stage_split=");  // empty: back to an even split
  EXPECT_EQ(cfg.parallel().stage_split_size(), 0);
}

TEST(Config, BadOverridesNameThePathAndTheChoices) {
  TrainConfig cfg = parse_config_text(kTiny);
  const auto set = [&](const std::string& a) { return [&cfg, a] { apply_override(cfg, a); }; };
  expect_error(set("optimizer.lr_max=1"),
               {"[config] --set 'optimizer.lr_max=1': no field 'lr_max' in section 'optimizer'; fields: lr, beta1, beta2, "
                "eps, weight_decay, grad_clip"});
  expect_error(set("optimiser.lr=1"), {"--set 'optimiser.lr=1': unknown section 'optimiser'; sections: model, optimizer",
                                       "(did you mean 'optimizer'?)"});
  expect_error(set("parallel.dp=two"), {"--set 'parallel.dp=two': parallel.dp takes an integer (int32), got 'two'"});
  expect_error(set("parallel.dp=99999999999"), {"parallel.dp takes an integer (int32), got '99999999999'"});
  expect_error(set("parallel.dp=2.5"), {"parallel.dp takes an integer (int32), got '2.5'"});
  expect_error(set("optimizer.lr=fast"), {"optimizer.lr takes a number, got 'fast'"});
  expect_error(set("train.seed=-1"), {"train.seed takes a non-negative integer (uint64), got '-1'"});
  expect_error(set("parallel.offload_params=maybe"), {"parallel.offload_params takes true or false, got 'maybe'"});
  expect_error(set("precision.dtype=f8"),
               {"--set 'precision.dtype=f8': 'f8' is not a valid value for precision.dtype; accepted: f32, bf16, fp16"});
  expect_error(set("model.preset=2B"), {"'2B' is not a valid value for model.preset; accepted: custom, tiny, gpt2_124M"});
  expect_error(set("optimizer=3"), {"--set 'optimizer=3': optimizer is a section; name one of its fields: lr, beta1"});
  expect_error(set("optimizer.lr.x=1"), {"optimizer.lr is a field, not a section"});
  expect_error(set("optimizer.lr"), {"--set 'optimizer.lr': expected section.field=value, for example optimizer.lr=3e-4"});
  expect_error(set("=3"), {"expected section.field=value"});
  expect_error(set("parallel.stage_split=1,x"), {"parallel.stage_split takes an integer (int32), got 'x'"});
  // A failed override leaves the earlier fields alone.
  EXPECT_EQ(cfg.parallel().dp(), 1);
}

// Each line: an override that makes a valid tiny config invalid, and the exact problem it must give.
TEST(Config, ValidationReportsEachRangeWithItsPath) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"optimizer.lr=-1"}, "optimizer.lr = -1: must be > 0 and finite"},
      {{"optimizer.lr=0"}, "optimizer.lr = 0: must be > 0 and finite"},
      {{"model.dropout=1"}, "model.dropout = 1: must be in [0, 1)"},
      {{"model.dropout=-0.5"}, "model.dropout = -0.5: must be in [0, 1)"},
      {{"optimizer.beta1=1"}, "optimizer.beta1 = 1: must be in [0, 1)"},
      {{"optimizer.beta2=-0.1"}, "optimizer.beta2 = -0.1: must be in [0, 1)"},
      {{"optimizer.eps=0"}, "optimizer.eps = 0: must be > 0 and finite"},
      {{"optimizer.weight_decay=-1"}, "optimizer.weight_decay = -1: must be >= 0 and finite"},
      {{"optimizer.grad_clip=-1"}, "optimizer.grad_clip = -1: must be >= 0 and finite (0 disables clipping)"},
      {{"train.steps=0"}, "train.steps = 0: must be >= 1"},
      {{"train.micro_batch_size=0"}, "train.micro_batch_size = 0: must be >= 1"},
      {{"train.device_memory_limit_gib=-1"},
       "train.device_memory_limit_gib = -1: must be >= 0 and finite (0: the whole card)"},
      {{"train.device=cpu", "train.device_memory_limit_gib=80"},
       "train.device_memory_limit_gib (80) applies to GPUs, but train.device is cpu"},
      {{"train.gemm_tuning_file=/tmp/t.txt"},
       "train.gemm_tuning_file ('/tmp/t.txt') is read only with train.gemm_algorithms: tuned (it is heuristic)"},
      {{"train.steps=10", "schedule.warmup_steps=20"}, "schedule.warmup_steps (20) must be <= train.steps (10)"},
      {{"schedule.min_lr_ratio=1.5"}, "schedule.min_lr_ratio = 1.5: must be in [0, 1]"},
      {{"precision.loss_scale_backoff=1"}, "precision.loss_scale_backoff = 1: must be in (0, 1)"},
      {{"precision.loss_scale_growth_factor=1"}, "precision.loss_scale_growth_factor = 1: must be > 1 and finite"},
      {{"precision.initial_loss_scale=0"}, "precision.initial_loss_scale = 0: must be > 0 and finite"},
      {{"precision.loss_scale_growth_interval=0"}, "precision.loss_scale_growth_interval = 0: must be >= 1"},
      {{"data.train="}, "data.train is empty"},
      {{"data.tokenizer="}, "data.tokenizer is empty: use \"byte\", a folder with GPT-2's encoder.json and vocab.bpe"},
      {{"data.val_every=100"}, "data.val_every (100) needs data.val, a glob of validation shards"},
      {{"model.vocab_size=100"}, "model.vocab_size (100) is smaller than the byte tokenizer's 257 tokens"},
      {{"checkpoint.keep_last=-1"}, "checkpoint.keep_last = -1: must be >= 0"},
      {{"checkpoint.resume="}, "checkpoint.resume is empty: use \"auto\", \"none\" or a checkpoint path"},
      {{"logging.every=0"}, "logging.every = 0: must be >= 1"},
      {{"logging.run_name=a/b"}, "logging.run_name = 'a/b': must be non-empty and contain no '/'"},
      {{"parallel.zero_stage=4"}, "parallel.zero_stage = 4: must be 0, 1, 2 or 3"},
      {{"parallel.bucket_mb=0"}, "parallel.bucket_mb = 0: must be > 0 and finite"},
      {{"model.n_head=3"}, "model.d_model (128) must be divisible by model.n_head (3)"},
      {{"parallel.tp=8"}, "model.n_head (4) is not divisible by parallel.tp (8): tensor parallelism splits attention heads"},
      {{"parallel.pp=3"},
       "model.n_layer (4) is not divisible by parallel.pp (3) x parallel.virtual_stages (1) = 3; give parallel.stage_split"},
      {{"parallel.pp=2", "parallel.stage_split=1,2"}, "parallel.stage_split sums to 3 blocks but model.n_layer is 4"},
      {{"parallel.pp=2", "parallel.stage_split=4"}, "parallel.stage_split has 1 entries but pp x virtual_stages = 2 x 1 = 2"},
      {{"parallel.pp=2", "parallel.stage_split=4,0"}, "parallel.stage_split[1] = 0: every chunk needs >= 1 block"},
      {{"parallel.pp=2", "parallel.zero_stage=3"},
       "parallel.zero_stage 3 with parallel.pp (2) > 1 is not supported yet: use zero_stage <= 2 with pipeline parallelism"},
      {{"parallel.offload_params=true", "parallel.zero_stage=2"},
       "parallel.offload_params needs parallel.zero_stage 3 (only ZeRO-3 keeps a parameter shard to offload); zero_stage is 2"},
      {{"parallel.offload_optimizer=true"}, "parallel.offload_optimizer needs parallel.zero_stage >= 1"},
      {{"parallel.offload_optimizer_fraction=0.5"},
       "parallel.offload_optimizer_fraction (0.5) applies only with parallel.offload_optimizer: true"},
      {{"parallel.zero_stage=2", "parallel.offload_optimizer=true", "parallel.offload_optimizer_fraction=0"},
       "parallel.offload_optimizer_fraction must be in (0, 1] (the share of units whose optimizer states go to the "
       "host; 1 offloads all), got 0"},
      {{"parallel.checkpoint_every_k_blocks=2"},
       "parallel.checkpoint_every_k_blocks (2) applies only to activation_checkpointing: full (it is none)"},
      {{"parallel.activation_checkpointing=full", "parallel.checkpoint_num_blocks=-1"},
       "parallel.checkpoint_num_blocks = -1: must be >= 0"},
      {{"parallel.checkpoint_num_blocks=2"},
       "parallel.checkpoint_num_blocks (2) applies only to activation_checkpointing: full (it is none)"},
      {{"parallel.activation_checkpointing=selective", "parallel.checkpoint_num_blocks=2"},
       "parallel.checkpoint_num_blocks (2) applies only to activation_checkpointing: full (it is selective)"},
      {{"parallel.activation_checkpointing=full", "parallel.checkpoint_num_blocks=5"},
       "parallel.checkpoint_num_blocks (5) exceeds model.n_layer (4); use 0 to checkpoint all blocks"},
      {{"parallel.activation_checkpointing=full", "parallel.checkpoint_num_blocks=3", "parallel.pp=2"},
       "parallel.checkpoint_num_blocks (3) counts the blocks of each pipeline chunk, and no chunk of parallel.pp (2) x "
       "parallel.virtual_stages (1) has more than 2; give at most 2, or 0 to checkpoint all blocks"},
      {{"parallel.loss_chunk_rows=-2"}, "parallel.loss_chunk_rows = -2: must be >= -1"},
      {{"parallel.sequence_parallel=true"}, "parallel.sequence_parallel needs parallel.tp > 1"},
      {{"parallel.tp=2", "parallel.sequence_parallel=true", "model.seq_len=255"},
       "model.seq_len (255) is not divisible by parallel.tp (2), as sequence_parallel needs"},
      {{"parallel.pp=2", "parallel.virtual_stages=2"}, "parallel.virtual_stages (2) > 1 needs parallel.pipeline_schedule: interleaved"},
      {{"parallel.pp=2", "parallel.pipeline_schedule=interleaved", "train.grad_accumulation=2"},
       "parallel.pipeline_schedule interleaved needs parallel.pp >= 2 and parallel.virtual_stages >= 2 (got pp 2, virtual_stages 1)"},
      {{"parallel.pp=2", "parallel.virtual_stages=2", "parallel.pipeline_schedule=interleaved", "train.grad_accumulation=3"},
       "parallel.micro_batches (3) must be a multiple of parallel.pp (2) for the interleaved schedule"},
      {{"train.grad_accumulation=4", "parallel.micro_batches=8"},
       "parallel.micro_batches (8) and train.grad_accumulation (4) name the same number and disagree; set one"},
  };
  for (const auto& [overrides, expected] : cases) {
    SCOPED_TRACE(expected);
    const TrainConfig cfg = resolved(kTiny, overrides);
    const std::vector<std::string> problems = config_problems(cfg);
    ASSERT_EQ(problems.size(), 1u) << (problems.empty() ? "" : problems.front() + (problems.size() > 1 ? " | " + problems[1] : ""));
    EXPECT_EQ(problems.front().rfind(expected, 0), 0u) << problems.front();
    expect_error([&] { validate_config(cfg); }, {"[config] " + expected});
  }
}

TEST(Config, ValidationReportsAllProblemsTogether) {
  const TrainConfig cfg = resolved(kTiny, {"optimizer.lr=-1", "train.steps=0"});
  expect_error([&] { validate_config(cfg); },
               {"[config] 2 problems:\n  optimizer.lr = -1: must be > 0 and finite\n  train.steps = 0: must be >= 1"});
}

TEST(Config, IndivisibleHeadsForTensorParallel) {
  // 124M: 12 heads; tp 8 divides the padded vocabulary (50304) but not the heads.
  const TrainConfig cfg = resolved("model { preset: gpt2_124M }", {"parallel.tp=8"});
  expect_error([&] { validate_config(cfg); },
               {"[config] model.n_head (12) is not divisible by parallel.tp (8): tensor parallelism splits attention heads"});
  EXPECT_TRUE(config_problems(resolved("model { preset: gpt2_124M }", {"parallel.tp=4"})).empty());
}

TEST(Config, WorldSizeMustMatchTheLayout) {
  const TrainConfig cfg = resolved(kTiny, {"parallel.dp=2", "parallel.tp=2"});
  validate_parallel(cfg, 4);
  const std::string msg =
      expect_error([&] { validate_parallel(cfg, 8); }, {"[config] parallel: dp (2) x tp (2) x pp (1) = 4 but mpirun started 8 ranks"});
  EXPECT_NE(msg.find("set parallel.dp to 4 or start 4 ranks"), std::string::npos);
  expect_error([&] { validate_parallel(cfg, 3); }, {"= 4 but mpirun started 3 ranks"});
}

TEST(Config, ResolvedConfigPrintsEveryFieldAndReadsBack) {
  const TrainConfig cfg = resolved(kTiny, {"parallel.pp=2", "parallel.stage_split=1,3"});
  const std::string text = config_to_text(cfg);
  for (const char* expected : {"preset: tiny", "n_layer: 4", "lr: 0.0006", "zero_stage: 0", "device: auto",
                               "kind: warmup_cosine", "stage_split: [1, 3]", "train: \"embedded:\"", "micro_batches: 1"})
    EXPECT_NE(text.find(expected), std::string::npos) << expected << " not in\n" << text;
  const TrainConfig back = parse_config_text(text);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(cfg, back));
  TrainConfig again = back;
  resolve_config(again);  // idempotent
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(cfg, again));
}

TEST(Config, MicroBatchesIsASynonymOfGradAccumulation) {
  EXPECT_EQ(resolved(kTiny, {"parallel.micro_batches=6"}).train().grad_accumulation(), 6);
  EXPECT_EQ(resolved(kTiny, {"train.grad_accumulation=5"}).parallel().micro_batches(), 5);
  EXPECT_TRUE(config_problems(resolved(kTiny, {"train.grad_accumulation=4", "parallel.micro_batches=4"})).empty());
}

TEST(Config, CheckpointNumBlocksUpToTheBlocksOfAChunk) {
  for (const std::vector<std::string>& overrides :
       {std::vector<std::string>{"parallel.checkpoint_num_blocks=4"}, {"parallel.checkpoint_num_blocks=1"},
        {"parallel.checkpoint_num_blocks=2", "parallel.pp=2"},
        {"parallel.checkpoint_num_blocks=3", "parallel.pp=2", "parallel.stage_split=1,3"},
        {"parallel.checkpoint_num_blocks=3", "parallel.checkpoint_every_k_blocks=2"}}) {
    std::vector<std::string> all = overrides;
    all.push_back("parallel.activation_checkpointing=full");
    const std::vector<std::string> problems = config_problems(resolved(kTiny, all));
    EXPECT_TRUE(problems.empty()) << overrides.front() << ": " << problems.front();
  }
}

TEST(Config, TypedAccessors) {
  const TrainConfig cfg = resolved(kTiny, {"parallel.pp=2", "parallel.virtual_stages=2", "parallel.pipeline_schedule=interleaved",
                                           "train.grad_accumulation=4", "precision.dtype=fp16",
                                           "parallel.activation_checkpointing=selective", "schedule.kind=linear"});
  EXPECT_TRUE(config_problems(cfg).empty());
  EXPECT_EQ(pipeline_schedule(cfg), PipelineScheduleKind::interleaved);
  EXPECT_EQ(precision(cfg), Precision::fp16);
  EXPECT_EQ(activation_checkpointing(cfg), ActivationCheckpointing::selective);
  EXPECT_EQ(checkpoint_policy(cfg).mode, Recompute::selective);
  EXPECT_EQ(checkpoint_policy(resolved(kTiny)).mode, Recompute::none);
  const CheckpointPolicy full = checkpoint_policy(resolved(kTiny, {"parallel.activation_checkpointing=full",
                                                                   "parallel.checkpoint_every_k_blocks=2",
                                                                   "parallel.checkpoint_num_blocks=3"}));
  EXPECT_EQ(full.mode, Recompute::full);
  EXPECT_EQ(full.every_k_blocks, 2);
  EXPECT_EQ(full.num_blocks, 3);
  EXPECT_EQ(lr_schedule_kind(cfg), LrScheduleKind::linear);
  EXPECT_EQ(device_choice(cfg), DeviceChoice::auto_detect);
  EXPECT_EQ(model_preset(cfg), GptPreset::tiny);
  EXPECT_EQ(blocks_per_chunk(cfg), (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(blocks_per_chunk(resolved(kTiny, {"parallel.pp=2", "parallel.stage_split=1,3"})), (std::vector<int>{1, 3}));
  EXPECT_EQ(model_preset(resolved("model { n_layer: 1 }")), std::nullopt);
}

// Parameter counts against numbers computed by hand here, not by the implementation's formula.
TEST(Presets, ParameterCountOf124MByHand) {
  // V = 50304 (50257 padded to a multiple of 128), T = 1024, C = 768, 12 blocks, tied head.
  // wte 50304*768 = 38,633,472; wpe 1024*768 = 786,432;
  // block: ln 2*2*768 = 3,072; qkv 768*2304 + 2304 = 1,771,776; proj 768*768 + 768 = 590,592;
  //        fc 768*3072 + 3072 = 2,362,368; fc_proj 3072*768 + 768 = 2,360,064; sum 7,087,872; x12 = 85,054,464;
  // ln_f 1,536. Total 38,633,472 + 786,432 + 85,054,464 + 1,536 = 124,475,904.
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_124m)), 124'475'904);
  EXPECT_EQ(preset_dims(GptPreset::gpt2_124m).padded_vocab, 50'304);
  // Cross-check with Hugging Face's published 124,439,808 for the unpadded 50257 vocabulary: the 47
  // padding rows add 47 * 768 = 36,096.
  EXPECT_EQ(124'439'808 + 47 * 768, 124'475'904);
}

TEST(Presets, ParameterCountsOfTheLargerPresets) {
  // Per block 12 C^2 + 13 C (weights 3C^2 + C^2 + 4C^2 + 4C^2, biases 3C + C + 4C + C, ln 4C), plus
  // V C + T C + 2 C. Also equal to Hugging Face's counts (vocab 50257) plus 47 padding rows of C.
  const auto reference = [](int64_t L, int64_t C) {
    int64_t total = 50304 * C + 1024 * C + 2 * C;
    for (int64_t l = 0; l < L; ++l) total += 12 * C * C + 13 * C;
    return total;
  };
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_350m)), reference(24, 1024));
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_350m)), 354'823'168 + 47 * 1024);
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_774m)), reference(36, 1280));
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_774m)), 774'030'080 + 47 * 1280);
  // 1.5B: 80,486,400 + 1,638,400 + 48 * 30,740,800 + 3,200 = 1,557,686,400.
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_1_5b)), 1'557'686'400);
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::gpt2_1_5b)), 1'557'611'200 + 47 * 1600);
  // tiny: V 257 padded to 384, T 256, C 128, 4 blocks: 49,152 + 32,768 + 4 * (12 * 16,384 + 1,664) + 256
  // = 875,264.
  EXPECT_EQ(gpt2_parameter_count(preset_dims(GptPreset::tiny)), 875'264);
}

TEST(Presets, NamesAndPadding) {
  for (GptPreset p : all_presets()) EXPECT_EQ(preset_from_name(preset_name(p)), p);
  EXPECT_EQ(preset_from_name("2B"), std::nullopt);
  EXPECT_EQ(pad_vocab(1), 128);
  EXPECT_EQ(pad_vocab(128), 128);
  EXPECT_EQ(pad_vocab(129), 256);
  expect_error([] { pad_vocab(0); }, {"[model] vocab_size must be > 0, got 0"});
  expect_error([] { gpt2_unit_numel(preset_dims(GptPreset::gpt2_124m), 5); }, {"[model] n_head (12) is not divisible by tp (5)"});
}

}  // namespace
}  // namespace zt

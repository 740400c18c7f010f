#include "launch/checkpoint.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "models/safetensors.h"

namespace fs = std::filesystem;

namespace zt {

namespace {

constexpr int kFormatVersion = 1;
constexpr const char* kMetaFile = "checkpoint.pb";

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

// Note [Checkpoint pipeline stages].
std::string shard_file_name(int shard_rank, int pipeline_rank, int pipeline_size) {
  if (pipeline_size == 1) return fmt::format("shard_{:05d}.safetensors", shard_rank);
  return fmt::format("stage_{:02d}_shard_{:05d}.safetensors", pipeline_rank, shard_rank);
}

// What a shard file holds, from its header alone: the units it has state for and its shard rank.
struct ShardContents {
  std::vector<int> units;
  int shard_rank = 0;
};

ShardContents read_shard_contents(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), sizeof(n));
  ZT_CHECK(in.good() && n > 0 && n < (uint64_t{1} << 30), "checkpoint", file, " has no valid safetensors header");
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  ZT_CHECK(in.good(), "checkpoint", file, " is truncated inside its header");
  const nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  ZT_CHECK(j.is_object(), "checkpoint", file, " has a header that is not a JSON object");
  ShardContents c;
  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") {
      if (value.contains("shard_rank")) c.shard_rank = std::stoi(value.at("shard_rank").get<std::string>());
      continue;
    }
    int unit = -1;
    if (name.starts_with("unit.") && name.ends_with(".master")) unit = std::stoi(name.substr(5));
    if (unit >= 0) c.units.push_back(unit);
  }
  return c;
}

void check_dim(const char* field, int64_t in_checkpoint, int64_t in_model, const std::string& path) {
  ZT_CHECK(in_checkpoint == in_model, "checkpoint", path, " was written for model.", field, " = ", in_checkpoint,
           " but this run has ", in_model, "; use checkpoint.resume=none or a matching config");
}

std::optional<int64_t> parse_step_dir(const std::string& name) {
  if (!name.starts_with("step_") || name.ends_with(".tmp")) return std::nullopt;
  const std::string digits = name.substr(5);
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), is_digit)) return std::nullopt;
  return std::stoll(digits);
}

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

uint32_t file_crc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in.good(), "checkpoint", "cannot open '", path, "'");
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crc = crc32(buf.data(), static_cast<size_t>(in.gcount()), crc);
  }
  return crc;
}

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string save_checkpoint(const std::string& dir, const TrainingState& state, zero::ZeroEngine& engine,
                            const GptConfig& model, const std::string& config_text, comm::Communicator& world,
                            int keep_last, const CheckpointPlacement& placement) {
  const fs::path final_dir = fs::path(dir) / checkpoint_dir_name(state.step);
  const fs::path tmp_dir = fs::path(final_dir.string() + ".tmp");
  if (fs::exists(final_dir)) return final_dir.string();  // Note [Checkpoint safety]: never overwritten
  const int rank = world.rank();
  if (rank == 0) {
    // A crash's leftovers, of this step or any other: never a complete checkpoint, and no other
    // save can be running (saves are collective), so every step_*.tmp under dir is garbage.
    if (fs::is_directory(dir))
      for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (name.starts_with("step_") && name.ends_with(".tmp") && e.is_directory()) fs::remove_all(e.path());
      }
    fs::create_directories(tmp_dir);
  }
  world.barrier()->wait();

  // Each data-parallel rank of the first model replica writes its shard (stage 0: only rank 0); with
  // pp > 1, those of every pipeline rank (Note [Checkpoint pipeline stages]).
  const int pp = placement.pipeline_size;
  const bool writes = pp == 1 ? (engine.config().stage == 0 ? rank == 0 : rank < engine.dp_size())
                              : (engine.config().stage == 0 ? engine.dp_rank() == 0 : true);
  const int shard_ranks = engine.config().stage == 0 ? 1 : engine.dp_size();
  std::vector<int64_t> report = {0, 0, placement.pipeline_rank, engine.shard_rank()};
  if (writes) {
    std::vector<std::pair<std::string, Tensor>> tensors;
    auto states = engine.shard_states();
    for (size_t u = 0; u < states.size(); ++u) {
      if (!states[u].master.defined()) continue;  // a unit this rank does not hold
      tensors.emplace_back(fmt::format("unit.{}.master", u), states[u].master);
      tensors.emplace_back(fmt::format("unit.{}.exp_avg", u), states[u].exp_avg);
      tensors.emplace_back(fmt::format("unit.{}.exp_avg_sq", u), states[u].exp_avg_sq);
    }
    const std::string bytes = serialize_safetensors(tensors, {{"shard_rank", std::to_string(engine.shard_rank())}});
    write_file_atomically(
        (tmp_dir / shard_file_name(engine.shard_rank(), placement.pipeline_rank, pp)).string(), bytes);
    report[0] = static_cast<int64_t>(crc32(bytes.data(), bytes.size()));
    report[1] = static_cast<int64_t>(bytes.size());
  }
  Tensor mine = from_vector(report, {4}, world.device());
  Tensor all = empty({4 * static_cast<int64_t>(world.size())}, DType::i64, world.device());
  world.all_gather(mine, all)->wait();
  std::vector<int64_t> reports = all.to_vector<int64_t>();
  // Every unit's size, also of those this rank's pipeline stage does not hold.
  std::vector<int64_t> unit_numel;
  for (const auto& L : engine.layouts()) unit_numel.push_back(L.numel);
  if (pp > 1) {
    Tensor t = from_vector(unit_numel, {static_cast<int64_t>(unit_numel.size())}, world.device());
    world.all_reduce(t, comm::ReduceOp::max)->wait();
    unit_numel = t.to_vector<int64_t>();
  }

  if (rank == 0) {
    zerotrain::CheckpointMeta meta;
    meta.set_format_version(kFormatVersion);
    meta.set_step(state.step);
    meta.set_optimizer_steps(engine.step_count());
    meta.set_tokens_seen(state.tokens_seen);
    meta.set_shard_ranks(shard_ranks);
    meta.set_zero_stage(engine.config().stage);
    meta.set_seed(state.seed);
    meta.set_config_text(config_text);
    meta.set_n_layer(model.n_layer);
    meta.set_n_head(model.n_head);
    meta.set_d_model(model.d_model);
    meta.set_padded_vocab(model.padded_vocab);
    meta.set_seq_len(model.seq_len);
    meta.set_loss_scale(state.loss_scale);
    meta.set_loss_scale_clean_steps(state.loss_scale_clean_steps);
    meta.set_loss_scale_skipped_steps(state.loss_scale_skipped_steps);
    auto* pos = meta.mutable_data_position();
    pos->set_epoch(state.data_epoch);
    pos->set_part_index(state.data_part_index);
    pos->set_window_index(state.data_window_index);
    pos->set_window_tokens(state.data_window_tokens);
    for (size_t k = 0; k < unit_numel.size(); ++k) {
      auto* u = meta.add_units();
      u->set_unit(static_cast<int>(k));
      u->set_numel(unit_numel[k]);
    }
    // Verify what landed on disk against what each writer meant to write.
    for (int r = 0; r < world.size(); ++r) {
      const int64_t* rep = &reports[static_cast<size_t>(4 * r)];
      const int64_t bytes = rep[1];
      if (bytes == 0) continue;
      const std::string name = shard_file_name(static_cast<int>(rep[3]), static_cast<int>(rep[2]), pp);
      const fs::path file = tmp_dir / name;
      const uint32_t want = static_cast<uint32_t>(rep[0]);
      ZT_CHECK(fs::exists(file) && static_cast<int64_t>(fs::file_size(file)) == bytes, "checkpoint", file.string(),
               " is missing or has the wrong size after writing (", bytes, " bytes expected)");
      const uint32_t got = file_crc32(file.string());
      ZT_CHECK(got == want, "checkpoint", file.string(), " reads back with CRC ", got, ", written with ", want);
      auto* f = meta.add_files();
      f->set_name(name);
      f->set_bytes(static_cast<uint64_t>(bytes));
      f->set_crc32(want);
    }
    std::string meta_bytes;
    ZT_CHECK(meta.SerializeToString(&meta_bytes), "checkpoint", "could not serialise the metadata");
    write_file_atomically((tmp_dir / kMetaFile).string(), meta_bytes);
    sync_to_disk(tmp_dir.string());  // every shard's name is durable before the folder gets its final one
    fs::rename(tmp_dir, final_dir);
    sync_to_disk(final_dir.has_parent_path() ? final_dir.parent_path().string() : ".");

    if (keep_last > 0) {  // prune the oldest complete checkpoints
      std::vector<std::pair<int64_t, fs::path>> complete;
      for (const auto& e : fs::directory_iterator(dir))
        if (auto s = parse_step_dir(e.path().filename().string()); s && e.is_directory()) complete.emplace_back(*s, e.path());
      std::sort(complete.begin(), complete.end());
      for (size_t i = 0; i + static_cast<size_t>(keep_last) < complete.size(); ++i) fs::remove_all(complete[i].second);
    }
  }
  world.barrier()->wait();
  return final_dir.string();
}

std::optional<int64_t> checkpoint_step(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "…/step_00000100/"
  return parse_step_dir(p.filename().string());
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  if (!fs::is_directory(dir)) return std::nullopt;
  std::optional<std::pair<int64_t, std::string>> best;
  for (const auto& e : fs::directory_iterator(dir)) {
    auto s = parse_step_dir(e.path().filename().string());
    if (!s || !e.is_directory()) continue;
    if (!best || *s > best->first) best = {{*s, e.path().string()}};
  }
  if (!best) return std::nullopt;
  return best->second;
}

TrainingState load_checkpoint(const std::string& path, zero::ZeroEngine& engine, const GptConfig& model) {
  const fs::path meta_path = fs::path(path) / kMetaFile;
  ZT_CHECK(fs::exists(meta_path), "checkpoint", path, " has no ", kMetaFile,
           ": not a complete zerotrain checkpoint (an interrupted save leaves a .tmp directory)");
  zerotrain::CheckpointMeta meta;
  {
    std::ifstream in(meta_path, std::ios::binary);
    ZT_CHECK(meta.ParseFromIstream(&in), "checkpoint", meta_path.string(), " is corrupted (cannot be parsed)");
  }
  ZT_CHECK(meta.format_version() == kFormatVersion, "checkpoint", path, " has format version ",
           meta.format_version(), "; this build reads version ", kFormatVersion);
  check_dim("n_layer", meta.n_layer(), model.n_layer, path);
  check_dim("n_head", meta.n_head(), model.n_head, path);
  check_dim("d_model", meta.d_model(), model.d_model, path);
  check_dim("vocab_size (padded)", meta.padded_vocab(), model.padded_vocab, path);
  check_dim("seq_len", meta.seq_len(), model.seq_len, path);
  const auto& layouts = engine.layouts();
  ZT_CHECK(meta.units_size() == static_cast<int>(layouts.size()), "checkpoint", path, " has ", meta.units_size(),
           " parameter units, the model has ", layouts.size());
  auto states = engine.shard_states();
  for (size_t u = 0; u < layouts.size(); ++u) {
    if (!states[u].master.defined()) continue;  // another pipeline stage's unit
    ZT_CHECK(meta.units(static_cast<int>(u)).numel() == layouts[u].numel, "checkpoint", path, ": unit ", u, " has ",
             meta.units(static_cast<int>(u)).numel(), " elements, the model's has ", layouts[u].numel);
  }
  const int old_ranks = meta.shard_ranks();
  ZT_CHECK(old_ranks >= 1 && meta.files_size() >= old_ranks && meta.files_size() % old_ranks == 0, "checkpoint", path,
           " lists ", meta.files_size(), " shard files for ", old_ranks,
           " shard ranks (one set of shard ranks per pipeline rank)");

  // Verify every shard file (Note [Checkpoint safety]) and find each unit's shards by their headers
  // (Note [Checkpoint pipeline stages]); read only the files this rank needs.
  std::vector<std::string> files;
  std::map<std::pair<int, int>, size_t> file_of;  // (unit, old shard rank) -> index into files
  for (const auto& f : meta.files()) {
    const std::string file = (fs::path(path) / f.name()).string();
    ZT_CHECK(fs::exists(file), "checkpoint", file, " is missing");
    ZT_CHECK(fs::file_size(file) == f.bytes(), "checkpoint", file, " has ", fs::file_size(file), " bytes, expected ",
             f.bytes(), " (truncated or corrupted)");
    const uint32_t crc = file_crc32(file);
    ZT_CHECK(crc == f.crc32(), "checkpoint", file, " fails its checksum (CRC ", crc, ", expected ", f.crc32(),
             "): the checkpoint is corrupted; resume from an older one with checkpoint.resume=<path>");
    const ShardContents contents = read_shard_contents(file);
    for (int u : contents.units) file_of[{u, contents.shard_rank}] = files.size();
    files.push_back(file);
  }
  std::map<size_t, SafetensorsFile> shards;
  auto shard_file = [&](int unit, int k) -> const SafetensorsFile& {
    auto it = file_of.find({unit, k});
    ZT_CHECK(it != file_of.end(), "checkpoint", path, " has no shard ", k, " of unit ", unit,
             " in any of its files: incomplete checkpoint");
    auto cached = shards.find(it->second);
    if (cached == shards.end()) cached = shards.emplace(it->second, read_safetensors(files[it->second])).first;
    return cached->second;
  };
  NoGradGuard no_grad;
  const int rank = engine.shard_rank();
  for (size_t u = 0; u < layouts.size(); ++u) {
    if (!states[u].master.defined()) continue;  // a unit this rank does not hold
    const int64_t numel = layouts[u].numel, shard = layouts[u].shard;
    const int64_t old_shard = zero::shard_elements(numel, old_ranks);
    const int64_t begin = rank * shard, end = std::min(numel, begin + shard);
    Tensor* targets[3] = {&states[u].master, &states[u].exp_avg, &states[u].exp_avg_sq};
    const char* kinds[3] = {"master", "exp_avg", "exp_avg_sq"};
    for (int k = 0; k < 3; ++k) fill_(*targets[k], 0.0);
    for (int k = 0; k < old_ranks && begin < end; ++k) {
      const int64_t a = std::max(begin, k * old_shard), b = std::min(end, (k + 1) * old_shard);
      if (a >= b) continue;
      for (int t = 0; t < 3; ++t) {
        const Tensor& src = shard_file(static_cast<int>(u), k).at(fmt::format("unit.{}.{}", u, kinds[t]));
        Tensor dst = narrow(*targets[t], 0, a - begin, b - a);
        copy_(dst, narrow(src, 0, a - k * old_shard, b - a));
      }
    }
  }
  // AdamW's bias correction counts applied updates, which trail meta.step() by the fp16 steps skipped
  // on overflow; checkpoints from before optimizer_steps was recorded fall back to the step.
  engine.set_step_count(meta.has_optimizer_steps() ? meta.optimizer_steps() : meta.step());
  engine.sync_parameters_from_masters();

  TrainingState s;
  s.step = meta.step();
  s.tokens_seen = meta.tokens_seen();
  s.seed = meta.seed();
  s.data_epoch = meta.data_position().epoch();
  s.data_part_index = meta.data_position().part_index();
  s.data_window_index = meta.data_position().window_index();
  s.data_window_tokens = meta.data_position().window_tokens();
  s.loss_scale = meta.loss_scale();
  s.loss_scale_clean_steps = meta.loss_scale_clean_steps();
  s.loss_scale_skipped_steps = meta.loss_scale_skipped_steps();
  return s;
}

}  // namespace zt

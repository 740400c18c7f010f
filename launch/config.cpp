// Loading (text format with located errors), --set overrides by reflection, printing, and the typed
// accessors. Defaults live in config_defaults.cpp, validation in config_validate.cpp.
#include "launch/config.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "core/error.h"
#include "launch/config_detail.h"

namespace zt {

namespace pb = google::protobuf;
using namespace config_detail;

namespace config_detail {

std::vector<std::string> field_name_list(const pb::Descriptor* message) {
  std::vector<std::string> names;
  for (int i = 0; i < message->field_count(); ++i) names.push_back(message->field(i)->name());
  return names;
}

std::string field_names(const pb::Descriptor* message) { return fmt::format("{}", fmt::join(field_name_list(message), ", ")); }

std::string enum_value_names(const pb::EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
  return fmt::format("{}", fmt::join(names, ", "));
}

static size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates) {
  // Allow about one typo per three characters: catches "optimiser" and "n_heads", not "lr" for "eps".
  const size_t limit = std::max<size_t>(1, name.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(name, c);
    if (d < best_distance) best = c, best_distance = d;
  }
  return best.empty() ? "" : fmt::format(" (did you mean '{}'?)", best);
}

const pb::Descriptor* descriptor_at(const std::vector<std::string>& path) {
  const pb::Descriptor* d = TrainConfig::descriptor();
  for (const std::string& name : path) {
    const pb::FieldDescriptor* f = d ? d->FindFieldByName(name) : nullptr;
    if (!f || f->type() != pb::FieldDescriptor::TYPE_MESSAGE) return nullptr;
    d = f->message_type();
  }
  return d;
}

std::string join_path(const std::vector<std::string>& path, std::string_view last) {
  std::string out = fmt::format("{}", fmt::join(path, "."));
  if (!last.empty()) {
    if (!out.empty()) out += '.';
    out.append(last.data(), last.size());
  }
  return out;
}

const pb::EnumValueDescriptor* find_enum_value(const pb::EnumDescriptor* e, std::string_view text) {
  if (const auto* v = e->FindValueByName(std::string(text))) return v;
  // Names users say that are not identifiers, so cannot be enum value names themselves.
  if (e == zerotrain::ModelConfig::Preset_descriptor()) {
    if (auto preset = preset_from_name(text)) {
      switch (*preset) {
        case GptPreset::tiny: return e->FindValueByNumber(zerotrain::ModelConfig::tiny);
        case GptPreset::gpt2_124m: return e->FindValueByNumber(zerotrain::ModelConfig::gpt2_124M);
        case GptPreset::gpt2_350m: return e->FindValueByNumber(zerotrain::ModelConfig::gpt2_350M);
        case GptPreset::gpt2_774m: return e->FindValueByNumber(zerotrain::ModelConfig::gpt2_774M);
        case GptPreset::gpt2_1_5b: return e->FindValueByNumber(zerotrain::ModelConfig::gpt2_1_5B);
      }
    }
  }
  if (e == zerotrain::ParallelConfig::PipelineSchedule_descriptor() && text == "1f1b")
    return e->FindValueByNumber(zerotrain::ParallelConfig::one_f_one_b);
  return nullptr;
}

}  // namespace config_detail

namespace {

// Keeps the first error; the text format parser stops there anyway.
class FirstErrorCollector final : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (!has_error) has_error = true, line_ = line, column_ = column, message_ = message;
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}

  bool has_error = false;
  int line_ = 0, column_ = 0;  // 0-based; columns count a tab up to the next multiple of 8
  std::string message_;
};

// The character offset of the protobuf tokenizer's (line, column); its columns advance a tab to the
// next multiple of 8.
size_t offset_of(std::string_view text, int line, int column) {
  size_t i = 0;
  for (int l = 0; l < line && i < text.size(); ++i)
    if (text[i] == '\n') ++l;
  for (int col = 0; i < text.size() && text[i] != '\n' && col < column; ++i)
    col = text[i] == '\t' ? col + 8 - col % 8 : col + 1;
  return i;
}

// 0-based line and character column of an offset.
std::pair<int, int> line_column(std::string_view text, size_t offset) {
  int line = 0;
  size_t line_start = 0;
  for (size_t i = 0; i < offset && i < text.size(); ++i)
    if (text[i] == '\n') ++line, line_start = i + 1;
  return {line, static_cast<int>(offset - line_start)};
}

bool is_identifier_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// The offset of the nearest whole-identifier occurrence of name before `before`, or `before` if
// none. The parser reports an unknown name at the token after it, and users want the name itself.
size_t find_name_before(std::string_view text, std::string_view name, size_t before) {
  for (size_t i = std::min(before, text.size()); i-- > 0;) {
    if (i + name.size() > text.size() || text.substr(i, name.size()) != name) continue;
    if (i > 0 && is_identifier_char(text[i - 1])) continue;
    if (i + name.size() < text.size() && is_identifier_char(text[i + name.size()])) continue;
    return i;
  }
  return before;
}

// The field names whose braces enclose `offset` in text-format source: the section an error is in.
// Strings and # comments are skipped so that braces inside them do not count.
std::vector<std::string> enclosing_fields(std::string_view text, size_t offset) {
  std::vector<std::string> stack;
  std::string last_identifier;
  size_t i = 0;
  while (i < offset && i < text.size()) {
    const char ch = text[i];
    if (ch == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (ch == '"' || ch == '\'') {
      for (++i; i < text.size() && text[i] != ch && text[i] != '\n'; ++i)
        if (text[i] == '\\') ++i;
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '_') {
      last_identifier.clear();
      while (i < text.size() && is_identifier_char(text[i])) last_identifier += text[i++];
    } else {
      if (ch == '{' || ch == '<') stack.push_back(last_identifier);
      if ((ch == '}' || ch == '>') && !stack.empty()) stack.pop_back();
      ++i;
    }
  }
  return stack;
}

// The enum field whose value the error at offset is in ("preset" in "model { preset: 124M }"): the
// identifier before the nearest ':' on the same line, as "model.preset: custom, tiny, ..."; empty
// when that is not an enum field.
std::string enum_field_before(std::string_view text, size_t offset) {
  size_t colon = std::min(offset, text.size());
  while (colon > 0 && text[colon - 1] != ':' && text[colon - 1] != '\n') --colon;
  if (colon == 0 || text[colon - 1] != ':') return {};
  size_t end = colon - 1;
  while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
  size_t begin = end;
  while (begin > 0 && is_identifier_char(text[begin - 1])) --begin;
  const std::vector<std::string> path = enclosing_fields(text, begin);
  const pb::Descriptor* section = descriptor_at(path);
  const pb::FieldDescriptor* f =
      section && begin < end ? section->FindFieldByName(std::string(text.substr(begin, end - begin))) : nullptr;
  if (!f || !f->enum_type()) return {};
  return fmt::format("{} accepts: {}", join_path(path, f->name()), enum_value_names(f->enum_type()));
}

// Rewrites the parser's wording for the two mistakes users make most (an unknown field, an unknown
// enum value) into one that names the section and lists what is accepted.
std::string describe_parse_error(std::string_view text, std::string_view source, const FirstErrorCollector& e) {
  static const std::regex unknown_field(R"re(Message type "([\w.]+)" has no field named "(\w+)")re");
  static const std::regex unknown_enum(R"re(Unknown enumeration value of "([^"]*)" for field "(\w+)")re");
  size_t offset = offset_of(text, e.line_, e.column_);
  std::smatch m;
  std::string what = e.message_;
  if (std::regex_search(e.message_, m, unknown_field) || std::regex_search(e.message_, m, unknown_enum)) {
    const bool is_field = m[0].str().rfind("Message type", 0) == 0;
    const std::string name = is_field ? m[2].str() : m[1].str();
    offset = find_name_before(text, name, offset);
    const std::vector<std::string> path = enclosing_fields(text, offset);
    const pb::Descriptor* section = descriptor_at(path);
    if (is_field && section) {
      const std::vector<std::string> fields = field_name_list(section);
      if (path.empty()) {
        what = fmt::format("unknown section '{}'; sections: {}{}", name, field_names(section), did_you_mean(name, fields));
        for (const std::string& s : fields)
          if (const pb::Descriptor* d = descriptor_at({s}); d && d->FindFieldByName(name))
            what += fmt::format("; '{}' is a field of section '{}': write {} {{ {}: ... }}", name, s, s, name);
      } else {
        what = fmt::format("unknown field '{}' in section '{}'; fields: {}{}", name, join_path(path),
                           field_names(section), did_you_mean(name, fields));
      }
    } else if (!is_field && section) {
      const pb::FieldDescriptor* f = section->FindFieldByName(m[2].str());
      if (f && f->enum_type())
        what = fmt::format("'{}' is not a valid value for {}; accepted: {}", name, join_path(path, f->name()),
                           enum_value_names(f->enum_type()));
    }
  }
  // A value that is not even a token ("124M", "1f1b", a quoted string) for an enum field: list the
  // values the file may use.
  if (what == e.message_) {
    if (const std::string accepted = enum_field_before(text, offset); !accepted.empty()) {
      if (what.ends_with('.')) what.pop_back();
      what += "; " + accepted;
    }
  }
  const auto [line, column] = line_column(text, offset);
  return fmt::format("{}:{}:{}: {}", source, line + 1, column + 1, what);
}

// ---- --set ------------------------------------------------------------------------------------

template <typename Int>
bool parse_integer(std::string_view s, Int& out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end && !s.empty();
}

bool parse_floating(std::string_view s, double& out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end && !s.empty();
}

// Sets (or, for a repeated field, appends) one value parsed from text; throws naming path on bad text.
void set_value(pb::Message& msg, const pb::FieldDescriptor* f, std::string_view value, const std::string& context,
               const std::string& path) {
  const pb::Reflection* r = msg.GetReflection();
  const bool repeated = f->is_repeated();
  const auto bad = [&](std::string_view kind) {
    ZT_FAIL("config", context, ": ", path, " takes ", kind, ", got '", value, "'");
  };
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!parse_integer(value, v)) bad("an integer (int32)");
      repeated ? r->AddInt32(&msg, f, v) : r->SetInt32(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!parse_integer(value, v)) bad("an integer (int64)");
      repeated ? r->AddInt64(&msg, f, v) : r->SetInt64(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!parse_integer(value, v)) bad("a non-negative integer (uint32)");
      repeated ? r->AddUInt32(&msg, f, v) : r->SetUInt32(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!parse_integer(value, v)) bad("a non-negative integer (uint64)");
      repeated ? r->AddUInt64(&msg, f, v) : r->SetUInt64(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!parse_floating(value, v)) bad("a number");
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
        repeated ? r->AddDouble(&msg, f, v) : r->SetDouble(&msg, f, v);
      } else {
        const auto fv = static_cast<float>(v);
        repeated ? r->AddFloat(&msg, f, fv) : r->SetFloat(&msg, f, fv);
      }
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (value == "true" || value == "1") v = true;
      else if (value == "false" || value == "0") v = false;
      else bad("true or false");
      repeated ? r->AddBool(&msg, f, v) : r->SetBool(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* v = find_enum_value(f->enum_type(), value);
      if (!v) ZT_FAIL("config", context, ": '", value, "' is not a valid value for ", path, "; accepted: ",
                      enum_value_names(f->enum_type()));
      repeated ? r->AddEnum(&msg, f, v) : r->SetEnum(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      repeated ? r->AddString(&msg, f, std::string(value)) : r->SetString(&msg, f, std::string(value));
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      ZT_FAIL("config", context, ": ", path, " is a section; name one of its fields: ", field_names(f->message_type()));
  }
}

}  // namespace

TrainConfig parse_config_text(std::string_view text, std::string_view source_name) {
  TrainConfig cfg;
  FirstErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  const bool ok = parser.ParseFromString(std::string(text), &cfg);
  if (!ok || errors.has_error) {
    ZT_CHECK(errors.has_error, "config", source_name, ": cannot parse as a TrainConfig in text format");
    ZT_FAIL("config", describe_parse_error(text, source_name, errors));
  }
  return cfg;
}

TrainConfig read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in, "config", "cannot open config file '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  ZT_CHECK(!in.bad(), "config", "error reading config file '", path, "'");
  return parse_config_text(text.str(), path);
}

void apply_override(TrainConfig& cfg, std::string_view assignment) {
  const std::string context = fmt::format("--set '{}'", assignment);
  const size_t eq = assignment.find('=');
  ZT_CHECK(eq != std::string_view::npos && eq > 0, "config", context,
           ": expected section.field=value, for example optimizer.lr=3e-4");
  const std::string_view path_text = assignment.substr(0, eq);
  const std::string_view value = assignment.substr(eq + 1);

  std::vector<std::string> path;
  for (size_t begin = 0;;) {
    const size_t dot = path_text.find('.', begin);
    path.emplace_back(path_text.substr(begin, dot == std::string_view::npos ? std::string_view::npos : dot - begin));
    if (dot == std::string_view::npos) break;
    begin = dot + 1;
  }

  pb::Message* msg = &cfg;
  for (size_t i = 0; i < path.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const std::vector<std::string> here(path.begin(), path.begin() + static_cast<std::ptrdiff_t>(i));
    const pb::FieldDescriptor* f = d->FindFieldByName(path[i]);
    if (!f) {
      const std::vector<std::string> names = field_name_list(d);
      if (i == 0)
        ZT_FAIL("config", context, ": unknown section '", path[i], "'; sections: ", field_names(d),
                did_you_mean(path[i], names));
      ZT_FAIL("config", context, ": no field '", path[i], "' in section '", join_path(here), "'; fields: ",
              field_names(d), did_you_mean(path[i], names));
    }
    const std::string field_path = join_path(here, f->name());
    if (i + 1 < path.size()) {
      ZT_CHECK(f->type() == pb::FieldDescriptor::TYPE_MESSAGE && !f->is_repeated(), "config", context, ": ",
               field_path, " is a field, not a section");
      msg = msg->GetReflection()->MutableMessage(msg, f);
      continue;
    }
    if (f->is_repeated()) {
      // The list replaces the old one; an empty value clears it.
      msg->GetReflection()->ClearField(msg, f);
      for (size_t begin = 0; !value.empty() && begin <= value.size();) {
        const size_t comma = std::min(value.find(',', begin), value.size());
        set_value(*msg, f, value.substr(begin, comma - begin), context, field_path);
        begin = comma + 1;
      }
    } else {
      set_value(*msg, f, value, context, field_path);
    }
  }
}

void apply_overrides(TrainConfig& cfg, const std::vector<std::string>& assignments) {
  for (const std::string& a : assignments) apply_override(cfg, a);
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  TrainConfig cfg = read_config_file(path);
  apply_overrides(cfg, overrides);
  resolve_config(cfg);
  validate_config(cfg);
  return cfg;
}

std::string config_to_text(const TrainConfig& cfg) {
  pb::TextFormat::Printer printer;
  printer.SetUseShortRepeatedPrimitives(true);
  std::string out;
  ZT_CHECK(printer.PrintToString(cfg, &out), "config", "cannot print the config as text format");
  return out;
}

// ---- typed accessors --------------------------------------------------------------------------

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::f32: return "f32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

const char* pipeline_schedule_name(PipelineScheduleKind s) {
  switch (s) {
    case PipelineScheduleKind::gpipe: return "gpipe";
    case PipelineScheduleKind::one_f_one_b: return "1f1b";
    case PipelineScheduleKind::interleaved: return "interleaved";
  }
  return "?";
}

const char* activation_checkpointing_name(ActivationCheckpointing a) {
  switch (a) {
    case ActivationCheckpointing::none: return "none";
    case ActivationCheckpointing::full: return "full";
    case ActivationCheckpointing::selective: return "selective";
  }
  return "?";
}

std::optional<GptPreset> model_preset(const TrainConfig& cfg) {
  switch (cfg.model().preset()) {
    case zerotrain::ModelConfig::custom: return std::nullopt;
    case zerotrain::ModelConfig::tiny: return GptPreset::tiny;
    case zerotrain::ModelConfig::gpt2_124M: return GptPreset::gpt2_124m;
    case zerotrain::ModelConfig::gpt2_350M: return GptPreset::gpt2_350m;
    case zerotrain::ModelConfig::gpt2_774M: return GptPreset::gpt2_774m;
    case zerotrain::ModelConfig::gpt2_1_5B: return GptPreset::gpt2_1_5b;
  }
  ZT_FAIL("config", "model.preset has unknown value ", static_cast<int>(cfg.model().preset()));
}

GptDims model_dims(const TrainConfig& cfg) {
  const auto& m = cfg.model();
  return make_gpt_dims(m.n_layer(), m.n_head(), m.d_model(), m.vocab_size(), m.seq_len());
}

Precision precision(const TrainConfig& cfg) {
  switch (cfg.precision().dtype()) {
    case zerotrain::PrecisionConfig::f32: return Precision::f32;
    case zerotrain::PrecisionConfig::bf16: return Precision::bf16;
    case zerotrain::PrecisionConfig::fp16: return Precision::fp16;
  }
  ZT_FAIL("config", "precision.dtype has unknown value ", static_cast<int>(cfg.precision().dtype()));
}

LrScheduleKind lr_schedule_kind(const TrainConfig& cfg) {
  switch (cfg.schedule().kind()) {
    case zerotrain::ScheduleConfig::warmup_cosine: return LrScheduleKind::warmup_cosine;
    case zerotrain::ScheduleConfig::linear: return LrScheduleKind::linear;
    case zerotrain::ScheduleConfig::constant: return LrScheduleKind::constant;
  }
  ZT_FAIL("config", "schedule.kind has unknown value ", static_cast<int>(cfg.schedule().kind()));
}

DeviceChoice device_choice(const TrainConfig& cfg) {
  switch (cfg.train().device()) {
    case zerotrain::TrainingConfig::auto_: return DeviceChoice::auto_detect;
    case zerotrain::TrainingConfig::cpu: return DeviceChoice::cpu;
    case zerotrain::TrainingConfig::cuda: return DeviceChoice::cuda;
  }
  ZT_FAIL("config", "train.device has unknown value ", static_cast<int>(cfg.train().device()));
}

PipelineScheduleKind pipeline_schedule(const TrainConfig& cfg) {
  switch (cfg.parallel().pipeline_schedule()) {
    case zerotrain::ParallelConfig::gpipe: return PipelineScheduleKind::gpipe;
    case zerotrain::ParallelConfig::one_f_one_b: return PipelineScheduleKind::one_f_one_b;
    case zerotrain::ParallelConfig::interleaved: return PipelineScheduleKind::interleaved;
  }
  ZT_FAIL("config", "parallel.pipeline_schedule has unknown value ", static_cast<int>(cfg.parallel().pipeline_schedule()));
}

ActivationCheckpointing activation_checkpointing(const TrainConfig& cfg) {
  switch (cfg.parallel().activation_checkpointing()) {
    case zerotrain::ParallelConfig::none: return ActivationCheckpointing::none;
    case zerotrain::ParallelConfig::full: return ActivationCheckpointing::full;
    case zerotrain::ParallelConfig::selective: return ActivationCheckpointing::selective;
  }
  ZT_FAIL("config", "parallel.activation_checkpointing has unknown value ",
          static_cast<int>(cfg.parallel().activation_checkpointing()));
}

CheckpointPolicy checkpoint_policy(const TrainConfig& cfg) {
  CheckpointPolicy policy;
  switch (activation_checkpointing(cfg)) {
    case ActivationCheckpointing::none: return policy;
    case ActivationCheckpointing::selective: policy.mode = Recompute::selective; return policy;
    case ActivationCheckpointing::full: break;
  }
  policy.mode = Recompute::full;
  policy.every_k_blocks = cfg.parallel().checkpoint_every_k_blocks();
  policy.num_blocks = cfg.parallel().checkpoint_num_blocks();
  return policy;
}

std::vector<int> blocks_per_chunk(const TrainConfig& cfg) {
  const auto& p = cfg.parallel();
  if (p.stage_split_size() > 0) return {p.stage_split().begin(), p.stage_split().end()};
  const int chunks = p.pp() * p.virtual_stages();
  ZT_CHECK(chunks >= 1 && cfg.model().n_layer() % chunks == 0, "config", "model.n_layer (", cfg.model().n_layer(),
           ") is not divisible into pp x virtual_stages = ", chunks, " chunks");
  return std::vector<int>(static_cast<size_t>(chunks), cfg.model().n_layer() / chunks);
}

}  // namespace zt

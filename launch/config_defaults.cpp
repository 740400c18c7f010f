// resolve_config: presets, the grad_accumulation/micro_batches synonym, and explicit defaults.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "core/error.h"
#include "launch/config.h"

namespace zt {

namespace pb = google::protobuf;

namespace {

// Sets every unset singular field of msg (recursively) to its schema default, so that has_x() is
// true everywhere and the printed config shows the values the run actually uses. Fields without a
// schema default (model dimensions of a custom model) become 0 and validation reports them.
void write_defaults(pb::Message& msg) {
  const pb::Descriptor* d = msg.GetDescriptor();
  const pb::Reflection* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      write_defaults(*r->MutableMessage(&msg, f));
      continue;
    }
    if (r->HasField(msg, f)) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: r->SetInt32(&msg, f, r->GetInt32(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: r->SetInt64(&msg, f, r->GetInt64(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(&msg, f, r->GetUInt32(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(&msg, f, r->GetUInt64(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(&msg, f, r->GetDouble(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(&msg, f, r->GetFloat(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(&msg, f, r->GetBool(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: r->SetEnum(&msg, f, r->GetEnum(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r->SetString(&msg, f, r->GetString(msg, f)); break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: break;
    }
  }
}

void fill_from_preset(TrainConfig& cfg) {
  const std::optional<GptPreset> preset = model_preset(cfg);
  if (!preset) return;
  zerotrain::ModelConfig& m = *cfg.mutable_model();
  const GptDims dims = preset_dims(*preset);
  // The user's explicit values win: "124M with 6 layers" is a legitimate experiment.
  if (!m.has_n_layer()) m.set_n_layer(static_cast<int32_t>(dims.n_layer));
  if (!m.has_n_head()) m.set_n_head(static_cast<int32_t>(dims.n_head));
  if (!m.has_d_model()) m.set_d_model(static_cast<int32_t>(dims.d_model));
  if (!m.has_vocab_size()) m.set_vocab_size(static_cast<int32_t>(dims.vocab_size));
  if (!m.has_seq_len()) m.set_seq_len(static_cast<int32_t>(dims.seq_len));
}

}  // namespace

void resolve_config(TrainConfig& cfg) {
  fill_from_preset(cfg);
  // train.grad_accumulation and parallel.micro_batches name the same number; whichever the user set
  // fills the other. If both are set and differ, validation says so.
  auto& train = *cfg.mutable_train();
  auto& parallel = *cfg.mutable_parallel();
  if (parallel.has_micro_batches() && !train.has_grad_accumulation())
    train.set_grad_accumulation(parallel.micro_batches());
  if (!parallel.has_micro_batches()) parallel.set_micro_batches(train.grad_accumulation());
  write_defaults(cfg);
}

}  // namespace zt

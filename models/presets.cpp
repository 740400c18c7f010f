#include "models/presets.h"

#include "core/error.h"

namespace zt {

int64_t pad_vocab(int64_t vocab_size) {
  ZT_CHECK(vocab_size > 0, "model", "vocab_size must be > 0, got ", vocab_size);
  return (vocab_size + kVocabPadMultiple - 1) / kVocabPadMultiple * kVocabPadMultiple;
}

GptDims make_gpt_dims(int64_t n_layer, int64_t n_head, int64_t d_model, int64_t vocab_size, int64_t seq_len) {
  return GptDims{n_layer, n_head, d_model, vocab_size, pad_vocab(vocab_size), seq_len};
}

GptDims preset_dims(GptPreset preset) {
  switch (preset) {
    case GptPreset::tiny: return make_gpt_dims(4, 4, 128, 257, 256);
    case GptPreset::gpt2_124m: return make_gpt_dims(12, 12, 768, 50257, 1024);
    case GptPreset::gpt2_350m: return make_gpt_dims(24, 16, 1024, 50257, 1024);
    case GptPreset::gpt2_774m: return make_gpt_dims(36, 20, 1280, 50257, 1024);
    case GptPreset::gpt2_1_5b: return make_gpt_dims(48, 25, 1600, 50257, 1024);
  }
  ZT_FAIL("model", "unknown preset ", static_cast<int>(preset));
}

const char* preset_name(GptPreset preset) {
  switch (preset) {
    case GptPreset::tiny: return "tiny";
    case GptPreset::gpt2_124m: return "124M";
    case GptPreset::gpt2_350m: return "350M";
    case GptPreset::gpt2_774m: return "774M";
    case GptPreset::gpt2_1_5b: return "1.5B";
  }
  return "?";
}

const std::vector<GptPreset>& all_presets() {
  static const std::vector<GptPreset> presets = {GptPreset::tiny, GptPreset::gpt2_124m, GptPreset::gpt2_350m,
                                                 GptPreset::gpt2_774m, GptPreset::gpt2_1_5b};
  return presets;
}

std::optional<GptPreset> preset_from_name(std::string_view name) {
  for (GptPreset p : all_presets())
    if (name == preset_name(p)) return p;
  return std::nullopt;
}

GptUnitNumel gpt2_unit_numel(const GptDims& d, int64_t tp) {
  ZT_CHECK(tp >= 1, "model", "tensor-parallel degree must be >= 1, got ", tp);
  ZT_CHECK(d.n_head % tp == 0, "model", "n_head (", d.n_head, ") is not divisible by tp (", tp, ")");
  ZT_CHECK(d.padded_vocab % tp == 0, "model", "padded vocab (", d.padded_vocab, ") is not divisible by tp (", tp, ")");
  const int64_t C = d.d_model;
  // Column-parallel layers split their output features; with heads divisible by tp, so are 3C and 4C.
  ZT_CHECK(C % tp == 0, "model", "d_model (", C, ") is not divisible by tp (", tp, ")");
  GptUnitNumel u;
  u.wte = d.padded_vocab * C / tp;
  u.embeddings = u.wte + d.seq_len * C;
  const int64_t layernorms = 2 * (2 * C);
  const int64_t qkv = (3 * C * C + 3 * C) / tp;
  const int64_t proj = C * C / tp + C;
  const int64_t fc = (4 * C * C + 4 * C) / tp;
  const int64_t fc_proj = 4 * C * C / tp + C;
  u.block = layernorms + qkv + proj + fc + fc_proj;
  u.final_norm = 2 * C;
  return u;
}

int64_t gpt2_parameter_count(const GptDims& dims) {
  const GptUnitNumel u = gpt2_unit_numel(dims, 1);
  return u.embeddings + dims.n_layer * u.block + u.final_norm;
}

}  // namespace zt

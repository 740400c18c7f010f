// GPT-2 family dimensions, the named presets, and exact parameter counts.
//
// Counting convention (GPT-2 / llm.c): tied embeddings (the LM head reuses wte), biases everywhere,
// layernorms with weight and bias, and the token embedding padded to padded_vocab rows (a multiple of
// 128) so that the embedding and head matrix products get friendly shapes. Padded rows are real
// parameters in memory and in the count; the loss only looks at the first vocab_size logits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zt {

inline constexpr int64_t kVocabPadMultiple = 128;

// Rounds a vocabulary up to the next multiple of kVocabPadMultiple (50257 -> 50304, 256 -> 256).
int64_t pad_vocab(int64_t vocab_size);

struct GptDims {
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t d_model = 0;
  int64_t vocab_size = 0;    // the tokenizer's vocabulary; the loss covers these logits
  int64_t padded_vocab = 0;  // rows of wte: pad_vocab(vocab_size)
  int64_t seq_len = 0;       // rows of wpe, and the training sequence length

  int64_t head_dim() const { return d_model / n_head; }
  bool operator==(const GptDims&) const = default;
};

// Builds dims from the four shape numbers, filling padded_vocab.
GptDims make_gpt_dims(int64_t n_layer, int64_t n_head, int64_t d_model, int64_t vocab_size, int64_t seq_len);

enum class GptPreset { tiny, gpt2_124m, gpt2_350m, gpt2_774m, gpt2_1_5b };

GptDims preset_dims(GptPreset preset);
// Short names as users say them: "tiny", "124M", "350M", "774M", "1.5B".
const char* preset_name(GptPreset preset);
std::optional<GptPreset> preset_from_name(std::string_view name);
const std::vector<GptPreset>& all_presets();

// Parameter tensors grouped the way ZeRO shards them (Note [ZeRO units] in launch/estimate.h).
// With tensor parallelism of degree tp, counts are for one tensor-parallel rank (Megatron layout):
// wte is split by vocabulary rows, qkv and fc are column-parallel (weight and bias split), proj and
// fc_proj are row-parallel (weight split, bias replicated), layernorms and wpe are replicated.
struct GptUnitNumel {
  int64_t embeddings = 0;  // wte + wpe
  int64_t wte = 0;         // padded_vocab * d_model / tp (the tied head's weight, too)
  int64_t block = 0;       // one transformer block
  int64_t final_norm = 0;  // ln_f weight + bias
};
GptUnitNumel gpt2_unit_numel(const GptDims& dims, int64_t tp = 1);

// All parameters of the model (tp = 1), counting wte once since the head is tied:
//   V*C + T*C + L * (4C + (3C*C + 3C) + (C*C + C) + (4C*C + 4C) + (4C*C + C)) + 2C,  V = padded_vocab.
int64_t gpt2_parameter_count(const GptDims& dims);

}  // namespace zt

// Weights in and out with Hugging Face GPT-2 tensor names (the layout of the openai-community/gpt2
// model.safetensors): wte.weight [vocab, C], wpe.weight [T, C], h.N.ln_1.weight, h.N.attn.c_attn.weight
// [C, 3C] ... ln_f.bias. Hugging Face stores linear weights as Conv1D, [in, out]; zerotrain keeps
// [out, in], so they are transposed on the way in and out. A "transformer." prefix is accepted,
// and lm_head.weight (if present it must equal wte: the head is tied) and the attention-mask
// buffers are ignored; any other tensor the model has no place for (more layers) is refused.
#pragma once

#include <string>

#include "models/gpt.h"

namespace zt {

// Copies the file's weights into the model's f32 parameters (before any engine takes them over).
// wte rows past the file's vocabulary (padding) are zeroed; wpe may have more rows than seq_len
// (the first seq_len are used). Throws naming each missing or mis-shaped tensor.
void load_hf_gpt2(Gpt& model, const std::string& path);

// Writes parameters (f32, any device; names as Gpt's) with Hugging Face names and layout, the
// vocabulary cut back to config.vocab_size.
void save_hf_gpt2(const std::vector<Parameter>& params, const GptConfig& config, const std::string& path);

}  // namespace zt

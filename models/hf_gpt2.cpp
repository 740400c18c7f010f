#include "models/hf_gpt2.h"

#include <set>

#include "models/safetensors.h"

namespace zt {

namespace {

bool is_conv1d(const std::string& name) {
  return name.ends_with("c_attn.weight") || name.ends_with("c_proj.weight") || name.ends_with("c_fc.weight");
}

// Hugging Face's attention-mask buffers (older exports save them); not parameters.
bool is_ignored_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
}

// Every tensor name of a whole GPT-2 with these dimensions. A pipeline stage's model holds only
// some of them; the others are legitimately in the file but not for this rank.
std::set<std::string> gpt2_tensor_names(const GptConfig& c) {
  std::set<std::string> names = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (const char* suffix : {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                               "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                               "mlp.c_proj.weight", "mlp.c_proj.bias"})
      names.insert("h." + std::to_string(l) + "." + suffix);
  return names;
}

const Tensor* find_tensor(const SafetensorsFile& file, const std::string& name) {
  for (const std::string& candidate : {name, "transformer." + name}) {
    auto it = file.tensors.find(candidate);
    if (it != file.tensors.end()) return &it->second;
  }
  return nullptr;
}

}  // namespace

void load_hf_gpt2(Gpt& model, const std::string& path) {
  SafetensorsFile file = read_safetensors(path);
  const GptConfig& c = model.config();
  NoGradGuard no_grad;
  std::string missing;
  for (Parameter& p : model.parameters()) {
    const Tensor* src = find_tensor(file, p.name);
    if (src == nullptr) {
      missing += (missing.empty() ? "" : ", ") + p.name;
      continue;
    }
    Tensor& dst = p.tensor;
    if (is_conv1d(p.name)) {
      ZT_CHECK(src->dim() == 2, "import", path, ": ", p.name, " is ", shape_str(src->shape()), " but the model needs ",
               shape_str(Shape{dst.size(1), dst.size(0)}), " (Hugging Face Conv1D layout [in, out])");
    }
    Tensor t = to(*src, DType::f32);
    if (is_conv1d(p.name)) t = contiguous(transpose(t, 0, 1));
    if (p.name == "wte.weight") {
      ZT_CHECK(t.dim() == 2 && t.size(1) == c.d_model && t.size(0) <= c.padded_vocab && t.size(0) >= c.vocab_size,
               "import", path, ": wte.weight is ", t.describe(), "; the model needs [", c.vocab_size, "..",
               c.padded_vocab, ", ", c.d_model, "] (model.vocab_size / d_model)");
      fill_(dst, 0.0);
      Tensor rows = narrow(dst, 0, 0, t.size(0));
      copy_(rows, t);
      continue;
    }
    if (p.name == "wpe.weight") {
      ZT_CHECK(t.dim() == 2 && t.size(1) == c.d_model && t.size(0) >= c.seq_len, "import", path, ": wpe.weight is ",
               t.describe(), "; the model needs at least [", c.seq_len, ", ", c.d_model, "] (model.seq_len)");
      copy_(dst, narrow(t, 0, 0, c.seq_len));
      continue;
    }
    ZT_CHECK(t.shape() == dst.shape(), "import", path, ": ", p.name, " is ", shape_str(src->shape()),
             " but the model needs ", shape_str(is_conv1d(p.name) ? Shape{dst.size(1), dst.size(0)} : dst.shape()),
             " (check model.n_layer, n_head, d_model)");
    copy_(dst, t);
  }
  ZT_CHECK(missing.empty(), "import", path, " lacks tensors: ", missing);
  // Nothing is dropped silently: a tensor the model has no place for means another architecture
  // (more layers: model.n_layer is too small; an untied head: not GPT-2).
  std::string extra;
  const std::set<std::string> known = gpt2_tensor_names(c);
  for (const std::string& name : file.order) {
    const std::string bare = name.starts_with("transformer.") ? name.substr(12) : name;
    if (known.count(bare) || is_ignored_buffer(name)) continue;
    if (name == "lm_head.weight" || name == "transformer.lm_head.weight") {
      const Tensor* wte = find_tensor(file, "wte.weight");
      const Tensor& head = file.tensors.at(name);
      ZT_CHECK(wte != nullptr && head.shape() == wte->shape() &&
                   max_abs_diff(to(head, DType::f32), to(*wte, DType::f32)) == 0.0,
               "import", path, ": ", name, " differs from wte.weight; zerotrain's GPT-2 ties the output head to the "
               "token embedding, so an untied head cannot be imported");
      continue;
    }
    extra += (extra.empty() ? "" : ", ") + name;
  }
  ZT_CHECK(extra.empty(), "import", path, " has tensors this model has no place for: ", extra, " (the model has ",
           c.n_layer, " layers: check model.n_layer)");
}

void save_hf_gpt2(const std::vector<Parameter>& params, const GptConfig& config, const std::string& path) {
  NoGradGuard no_grad;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Parameter& p : params) {
    Tensor t = to(p.tensor.detach(), DType::f32);
    if (p.name == "wte.weight") t = narrow(t, 0, 0, config.vocab_size);
    if (is_conv1d(p.name)) t = transpose(t, 0, 1);
    out.emplace_back(p.name, contiguous(t));
  }
  write_safetensors(path, out, {{"format", "pt"}});
}

}  // namespace zt

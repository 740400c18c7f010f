#include "models/hf_gpt2.h"

#include "models/safetensors.h"

namespace zt {

namespace {

bool is_conv1d(const std::string& name) {
  return name.ends_with("c_attn.weight") || name.ends_with("c_proj.weight") || name.ends_with("c_fc.weight");
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
    Tensor t = to(*src, DType::f32);
    if (is_conv1d(p.name)) t = contiguous(transpose(t, 0, 1));
    Tensor& dst = p.tensor;
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

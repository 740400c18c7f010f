// Weights in and out with Hugging Face GPT-2 names (models/hf_gpt2.h, models/safetensors.h):
// the export has exactly HF's tensor names, shapes and Conv1D transposes (checked element by
// element against the model's own [out, in] weights), import(export(x)) == x bit for bit, HF's
// variants are accepted (transformer. prefix, tied lm_head, mask buffers, longer wpe, bf16), and
// bad files are refused naming the tensor and what the model needs. When python3 with torch is
// available (the test skips otherwise), tests/golden/hf_roundtrip.py runs the exported file through an independent PyTorch
// GPT-2 forward in HF's layout and compares logits with zerotrain's.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "process_test_util.h"
#include "core/error.h"
#include "models/hf_gpt2.h"
#include "models/safetensors.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::bits;

constexpr int64_t kLayers = 2, kHeads = 2, kC = 16, kVocab = 50, kT = 8;

GptConfig config(int64_t n_layer = kLayers) {
  GptConfig c;
  c.n_layer = n_layer;
  c.n_head = kHeads;
  c.d_model = kC;
  c.vocab_size = kVocab;
  c.padded_vocab = pad_vocab(kVocab);
  c.seq_len = kT;
  return c;
}

// A model whose every parameter holds distinct random values (norm weights around 1, biases
// around 0), so that a swapped, transposed or dropped tensor changes something.
Gpt random_model(uint64_t seed, int64_t n_layer = kLayers) {
  Gpt m(config(n_layer), Device::cpu(), seed);
  NoGradGuard no_grad;
  uint64_t offset = 0;
  for (Parameter& p : m.parameters()) {
    Tensor r = randn(p.tensor.shape(), seed, offset++);
    mul_(r, 0.2);
    if (p.name.find("ln_") != std::string::npos && p.name.ends_with(".weight")) add_(r, full(r.shape(), 1.0));
    copy_(p.tensor, r);
  }
  return m;
}



class HfGpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() / fmt::format("zt_test_hf_gpt2_{}_{}", getpid(), info->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }

  // The exported tensors of a model, as a name -> tensor list to edit and write back.
  std::vector<std::pair<std::string, Tensor>> exported(const Gpt& m) {
    save_hf_gpt2(m.parameters(), m.config(), path("tmp.safetensors"));
    SafetensorsFile f = read_safetensors(path("tmp.safetensors"));
    std::vector<std::pair<std::string, Tensor>> out;
    for (const std::string& name : f.order) out.emplace_back(name, f.at(name));
    return out;
  }
  // Import of a file made of these tensors into a fresh model of `n_layer` layers: the error message.
  std::string import_error(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t n_layer = kLayers) {
    write_safetensors(path("bad.safetensors"), tensors);
    Gpt m(config(n_layer), Device::cpu(), 3);
    return error_of([&] { load_hf_gpt2(m, path("bad.safetensors")); });
  }
  fs::path dir;
};

TEST_F(HfGpt2, ExportHasTheHuggingFaceLayout) {
  Gpt m = random_model(1);
  save_hf_gpt2(m.parameters(), m.config(), path("model.safetensors"));
  const SafetensorsFile f = read_safetensors(path("model.safetensors"));
  EXPECT_EQ(f.metadata.at("format"), "pt");

  // openai-community/gpt2's names and shapes, written out independently of the model code.
  std::map<std::string, Shape> want = {{"wte.weight", {kVocab, kC}}, {"wpe.weight", {kT, kC}},
                                       {"ln_f.weight", {kC}},        {"ln_f.bias", {kC}}};
  for (int l = 0; l < kLayers; ++l) {
    const std::string h = fmt::format("h.{}.", l);
    want[h + "ln_1.weight"] = {kC};
    want[h + "ln_1.bias"] = {kC};
    want[h + "attn.c_attn.weight"] = {kC, 3 * kC};
    want[h + "attn.c_attn.bias"] = {3 * kC};
    want[h + "attn.c_proj.weight"] = {kC, kC};
    want[h + "attn.c_proj.bias"] = {kC};
    want[h + "ln_2.weight"] = {kC};
    want[h + "ln_2.bias"] = {kC};
    want[h + "mlp.c_fc.weight"] = {kC, 4 * kC};
    want[h + "mlp.c_fc.bias"] = {4 * kC};
    want[h + "mlp.c_proj.weight"] = {4 * kC, kC};
    want[h + "mlp.c_proj.bias"] = {kC};
  }
  ASSERT_EQ(f.tensors.size(), want.size());
  for (const auto& [name, shape] : want) {
    ASSERT_TRUE(f.tensors.count(name)) << name;
    const Tensor& t = f.at(name);
    EXPECT_EQ(t.shape(), shape) << name;
    EXPECT_EQ(t.dtype(), DType::f32) << name;
    // Element by element against the model: Conv1D weights are the transpose of [out, in], wte
    // is the model's first vocab_size rows, everything else is copied as it is.
    const Parameter& p = m.find(name);
    const std::vector<float> file = t.to_vector<float>(), model = p.tensor.to_vector<float>();
    const bool conv1d = name.ends_with("c_attn.weight") || name.ends_with("c_proj.weight") || name.ends_with("c_fc.weight");
    int64_t differ = 0;
    if (conv1d) {
      const int64_t in = shape[0], out = shape[1];
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o)
          differ += file[static_cast<size_t>(i * out + o)] != model[static_cast<size_t>(o * in + i)];
    } else {
      for (size_t i = 0; i < file.size(); ++i) differ += file[i] != model[i];
    }
    EXPECT_EQ(differ, 0) << name;
  }
}

TEST_F(HfGpt2, ImportOfExportIsTheIdentity) {
  const Gpt a = random_model(1);
  save_hf_gpt2(a.parameters(), a.config(), path("model.safetensors"));
  Gpt b(config(), Device::cpu(), 2);
  load_hf_gpt2(b, path("model.safetensors"));
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const Parameter& pa = a.parameters()[i];
    const Parameter& pb = b.parameters()[i];
    ASSERT_EQ(pa.name, pb.name);
    if (pa.name == "wte.weight") {
      // The real rows come back; the padding rows (never a target) are zero.
      const std::vector<uint32_t> wa = bits(pa.tensor), wb = bits(pb.tensor);
      const size_t real = static_cast<size_t>(kVocab * kC);
      EXPECT_TRUE(std::equal(wa.begin(), wa.begin() + static_cast<std::ptrdiff_t>(real), wb.begin()));
      EXPECT_TRUE(std::all_of(wb.begin() + static_cast<std::ptrdiff_t>(real), wb.end(), [](uint32_t x) { return x == 0; }));
      EXPECT_EQ(wb.size(), static_cast<size_t>(pad_vocab(kVocab) * kC));
    } else {
      EXPECT_EQ(bits(pa.tensor), bits(pb.tensor)) << pa.name;
    }
  }
}

TEST_F(HfGpt2, AcceptsTheVariantsHuggingFaceWrites) {
  Gpt a = random_model(1);
  auto tensors = exported(a);
  // transformer.-prefixed names, the tied head, the attention-mask buffers, a longer wpe, bf16.
  std::vector<std::pair<std::string, Tensor>> hf;
  Tensor wte;
  for (auto& [name, t] : tensors) {
    Tensor v = t;
    if (name == "wte.weight") wte = t;
    if (name == "wpe.weight") v = cat({t, randn({5, kC}, 9)}, 0);
    if (name.starts_with("h.")) v = to(t, DType::bf16);
    hf.emplace_back("transformer." + name, v);
  }
  hf.emplace_back("lm_head.weight", wte);
  hf.emplace_back("transformer.h.0.attn.bias", ones({1, 1, kT, kT}));
  hf.emplace_back("transformer.h.1.attn.masked_bias", full({1}, -1e4));
  write_safetensors(path("hf.safetensors"), hf);
  Gpt b(config(), Device::cpu(), 2);
  load_hf_gpt2(b, path("hf.safetensors"));
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const Parameter& pa = a.parameters()[i];
    Tensor want = pa.tensor;
    if (pa.name.starts_with("h.")) want = to(to(pa.tensor, DType::bf16), DType::f32);  // what the bf16 file holds
    if (pa.name == "wte.weight") continue;  // checked above
    EXPECT_EQ(bits(want), bits(b.parameters()[i].tensor)) << pa.name;
  }
  EXPECT_EQ(bits(narrow(b.find("wpe.weight").tensor, 0, 0, kT)), bits(a.find("wpe.weight").tensor));
}

TEST_F(HfGpt2, RefusesAMissingTensor) {
  auto tensors = exported(random_model(1));
  std::erase_if(tensors, [](const auto& t) { return t.first == "h.1.mlp.c_fc.bias" || t.first == "ln_f.weight"; });
  const std::string msg = import_error(tensors);
  EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lacks tensors: h.1.mlp.c_fc.bias, ln_f.weight"), std::string::npos) << msg;
}

TEST_F(HfGpt2, RefusesWrongShapesNamingWhatTheModelNeeds) {
  const auto good = exported(random_model(1));
  auto with = [&](const std::string& name, Tensor t) {
    auto v = good;
    for (auto& [n, x] : v)
      if (n == name) x = t;
    return v;
  };
  // Not transposed: [3C, C] where HF's Conv1D layout is [C, 3C].
  std::string msg = import_error(with("h.0.attn.c_attn.weight", randn({3 * kC, kC}, 1)));
  EXPECT_NE(msg.find("h.0.attn.c_attn.weight is [48, 16] but the model needs [16, 48]"), std::string::npos) << msg;
  msg = import_error(with("h.0.attn.c_attn.weight", randn({3 * kC * kC}, 1)));
  EXPECT_NE(msg.find("h.0.attn.c_attn.weight is [768]"), std::string::npos) << msg;
  msg = import_error(with("h.1.ln_2.bias", randn({kC + 1}, 1)));
  EXPECT_NE(msg.find("h.1.ln_2.bias is [17] but the model needs [16]"), std::string::npos) << msg;
  msg = import_error(with("wte.weight", randn({kVocab - 1, kC}, 1)));
  EXPECT_NE(msg.find("wte.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.vocab_size"), std::string::npos) << msg;
  msg = import_error(with("wpe.weight", randn({kT - 1, kC}, 1)));
  EXPECT_NE(msg.find("wpe.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.seq_len"), std::string::npos) << msg;
}

TEST_F(HfGpt2, RefusesTensorsTheModelHasNoPlaceFor) {
  // A 3-layer file into a 2-layer model would otherwise load and silently drop layer 2.
  std::string msg = import_error(exported(random_model(1, 3)), 2);
  EXPECT_NE(msg.find("h.2.attn.c_attn.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.n_layer"), std::string::npos) << msg;
  // An untied head is not GPT-2.
  auto tensors = exported(random_model(1));
  tensors.emplace_back("lm_head.weight", randn({kVocab, kC}, 4));
  msg = import_error(tensors);
  EXPECT_NE(msg.find("lm_head.weight differs from wte.weight"), std::string::npos) << msg;
}

// Raw bytes of a file with this header and data.
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

TEST_F(HfGpt2, RefusesFilesThatAreNotSafetensors) {
  auto message = [&](const std::string& p) { return error_of([&] { read_safetensors(p); }); };
  EXPECT_NE(message(path("absent.safetensors")).find("cannot open"), std::string::npos);
  std::ofstream(path("short")) << "abc";
  EXPECT_NE(message(path("short")).find("too short"), std::string::npos);
  std::ofstream(path("text")) << "this is a text file, not a safetensors file at all";
  EXPECT_NE(message(path("text")).find("header length"), std::string::npos) << message(path("text"));
  write_raw(path("json"), "{not json", "");
  EXPECT_NE(message(path("json")).find("not valid JSON"), std::string::npos);
  write_raw(path("dtype"), R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "x");
  EXPECT_NE(message(path("dtype")).find("dtype F8"), std::string::npos);
  write_raw(path("size"), R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(message(path("size")).find("needs 12 bytes, the file gives 8"), std::string::npos) << message(path("size"));
  write_raw(path("beyond"), R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0'));
  EXPECT_NE(message(path("beyond")).find("outside the file's 8 data bytes"), std::string::npos);
  write_raw(path("negative"), R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(message(path("negative")).find("dimension -2"), std::string::npos) << message(path("negative"));
  write_raw(path("huge"), R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776,16],"data_offsets":[0,8]}})",
            std::string(8, '\0'));
  EXPECT_NE(message(path("huge")).find("the file gives 8"), std::string::npos) << message(path("huge"));
  write_raw(path("malformed"), R"({"a":{"dtype":"F32","shape":"big","data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(message(path("malformed")).find("'a' is malformed"), std::string::npos) << message(path("malformed"));
  write_raw(path("meta"), R"({"__metadata__":"x"})", "");
  EXPECT_NE(message(path("meta")).find("__metadata__"), std::string::npos);

  // A truncated export.
  const Gpt m = random_model(1);
  save_hf_gpt2(m.parameters(), m.config(), path("cut.safetensors"));
  fs::resize_file(path("cut.safetensors"), fs::file_size(path("cut.safetensors")) - 4);
  const std::string msg = message(path("cut.safetensors"));
  EXPECT_NE(msg.find("cut.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outside the file"), std::string::npos) << msg;
}

TEST_F(HfGpt2, SafetensorsRoundTripKeepsDtypesShapesAndMetadata) {
  std::vector<std::pair<std::string, Tensor>> t = {{"f", randn({2, 3}, 1)},
                                                   {"b", to(randn({5}, 2), DType::bf16)},
                                                   {"i", from_vector(std::vector<int64_t>{1, -2, 3}, {3})},
                                                   {"e", empty({0, 4}, DType::f32, Device::cpu())}};
  write_safetensors(path("x.safetensors"), t, {{"k", "v"}});
  EXPECT_FALSE(fs::exists(path("x.safetensors.tmp")));
  const SafetensorsFile f = read_safetensors(path("x.safetensors"));
  EXPECT_EQ(f.order, (std::vector<std::string>{"f", "b", "i", "e"}));  // file order = written order
  EXPECT_EQ(f.metadata.at("k"), "v");
  for (const auto& [name, want] : t) {
    EXPECT_EQ(f.at(name).shape(), want.shape()) << name;
    EXPECT_EQ(f.at(name).dtype(), want.dtype()) << name;
    EXPECT_EQ(max_abs_diff(to(f.at(name), DType::f64), to(want, DType::f64)), 0.0) << name;
  }
  // The header is 8-byte aligned, as the format asks.
  std::ifstream in(path("x.safetensors"), std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string msg = error_of([&] { f.at("nope"); });
  EXPECT_NE(msg.find("'nope'"), std::string::npos) << msg;
}

// tests/golden/hf_roundtrip.py: the exported file through an independent PyTorch GPT-2.
TEST_F(HfGpt2, PyTorchForwardOfTheExportMatchesZerotrain) {
  if (std::system("python3 -c '' > /dev/null 2>&1") != 0) GTEST_SKIP() << "python3 is not available";
  Gpt m = random_model(11);
  save_hf_gpt2(m.parameters(), m.config(), path("model.safetensors"));
  Tensor tokens = randint({3, kT}, kVocab, 21, 0, DType::i64);
  Tensor logits;
  {
    NoGradGuard no_grad;
    auto src = m.local_source();
    logits = contiguous(narrow(m.forward_logits(*src, tokens), 2, 0, kVocab));  // [B, T, vocab]
  }
  write_safetensors(path("expected.safetensors"), {{"tokens", tokens}, {"logits", logits}},
                    {{"n_head", std::to_string(kHeads)}});
  const std::string cmd = fmt::format("python3 '{}/tests/golden/hf_roundtrip.py' '{}' '{}' 2>&1", ZT_SOURCE_DIR,
                                      path("model.safetensors"), path("expected.safetensors"));
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << out;  // no torch
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("match"), std::string::npos) << out;
}

}  // namespace
}  // namespace zt

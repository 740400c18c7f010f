#include "launch/data/tokenizer.h"

#include "core/error.h"

namespace zt::data {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id == kEotToken) {
      text += "<|endoftext|>";
      continue;
    }
    ZT_CHECK(id >= 0 && id < 256, "tokenizer", "byte tokenizer: id ", id, " at position ", i,
             " is outside its vocabulary 0..256 (256 is end-of-text)");
    text.push_back(static_cast<char>(id));
  }
  return text;
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec) {
  switch (spec.kind) {
    case TokenizerKind::kByte:
      return std::make_unique<ByteTokenizer>();
    case TokenizerKind::kGpt2Bpe:
      ZT_CHECK(!spec.encoder_json.empty() && !spec.vocab_bpe.empty(), "tokenizer",
               "the gpt2 tokenizer needs both encoder.json and vocab.bpe paths (got '", spec.encoder_json, "' and '",
               spec.vocab_bpe, "')");
      return Gpt2BpeTokenizer::load(spec.encoder_json, spec.vocab_bpe);
  }
  ZT_FAIL("tokenizer", "unknown tokenizer kind ", static_cast<int>(spec.kind));
}

TokenizerKind parse_tokenizer_kind(std::string_view name) {
  if (name == "byte") return TokenizerKind::kByte;
  if (name == "gpt2") return TokenizerKind::kGpt2Bpe;
  ZT_FAIL("tokenizer", "unknown tokenizer '", name, "'; accepted: byte, gpt2");
}

}  // namespace zt::data

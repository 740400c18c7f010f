// Tokenizers turn text into token ids and back. Two are provided:
//  - ByteTokenizer: one token per byte (ids 0..255) plus an end-of-text token 256, so vocab_size() is
//    257. A separate id keeps document boundaries unambiguous whatever bytes the text holds (a byte
//    such as 0x1e or "\n\n" could occur inside a document). encode() never produces 256; decode()
//    writes it as "<|endoftext|>", like GPT-2.
//  - Gpt2BpeTokenizer: GPT-2's byte-level BPE, loaded from the standard "encoder.json" (token -> id)
//    and "vocab.bpe" (merges in rank order) files; produces the same ids as OpenAI's encoder.py.
// encode() treats its whole input as ordinary text: the string "<|endoftext|>" inside it is encoded
// as text, not as the end-of-text token. Callers that join documents insert eot_token() themselves
// (tokenize_files() puts it before every document, as llm.c's preprocessing scripts do).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zt::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws for an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t eot_token() const = 0;
  virtual std::string name() const = 0;
};

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEotToken = 256;
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return 257; }
  int32_t eot_token() const override { return kEotToken; }
  std::string name() const override { return "byte"; }
};

// GPT-2's reversible map from bytes to printable code points, in which encoder.json and vocab.bpe
// spell tokens: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards in
// byte order (so a space is 'Ġ', U+0120). Returned as the UTF-8 text of each byte's code point.
const std::array<std::string, 256>& gpt2_byte_to_unicode();

class Gpt2BpeTokenizer final : public Tokenizer {
 public:
  // Validates both files: every entry of encoder.json must be spelled in the byte alphabet above,
  // ids must be 0..n-1 without gaps or repeats, all 256 single bytes and "<|endoftext|>" must be
  // present, and each merge "a b" must name two tokens whose concatenation is a token.
  static std::unique_ptr<Gpt2BpeTokenizer> load(const std::string& encoder_json_path,
                                                const std::string& vocab_bpe_path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t eot_token() const override { return eot_token_; }
  std::string name() const override { return "gpt2"; }

  // The raw bytes that a token stands for (the encoder.json key mapped back through the byte map).
  const std::string& token_bytes(int32_t id) const;

 private:
  struct Merge {
    int32_t rank;    // line order in vocab.bpe: lower merges first
    int32_t merged;  // id of the concatenation
  };
  Gpt2BpeTokenizer() = default;
  // Byte-pair merges of one pre-tokenised piece, starting from its single bytes.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::vector<std::string> token_bytes_;  // id -> raw bytes
  std::array<int32_t, 256> byte_token_{};  // byte -> id of its single-byte token
  std::unordered_map<uint64_t, Merge> merges_;  // pair_key(left, right) -> merge
  int32_t eot_token_ = -1;

  // Words repeat a lot in text; caching their encodings makes BPE cheap. Bounded so that a long run
  // over unusual text does not grow it without limit; guarded so that encode() stays const and safe
  // to call from several threads.
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

enum class TokenizerKind { kByte, kGpt2Bpe };

struct TokenizerSpec {
  TokenizerKind kind = TokenizerKind::kByte;
  std::string encoder_json;  // kGpt2Bpe only
  std::string vocab_bpe;     // kGpt2Bpe only
};

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec);

// "byte" or "gpt2" -> kind; throws naming the accepted values otherwise.
TokenizerKind parse_tokenizer_kind(std::string_view name);

}  // namespace zt::data

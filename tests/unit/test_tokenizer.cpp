// Tokenizers: the byte tokenizer round trip on random bytes; GPT-2's pre-tokenisation on cases whose
// splits were checked against the `regex` module with GPT-2's pattern; GPT-2 BPE on a small
// hand-made encoder.json / vocab.bpe with encodings worked out by hand, and against a naive
// reference BPE on random text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "launch/data/pretokenize.h"
#include "launch/data/tokenizer.h"
#include "error_text.h"

namespace zt::data {
namespace {

namespace fs = std::filesystem;

using test::error_of;

TEST(ByteTokenizer, RoundTripsRandomBytes) {
  const ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot_token(), 256);
  std::mt19937 gen(1);
  for (const size_t n : {0, 1, 255, 4096}) {
    std::string text(n, '\0');
    for (auto& c : text) c = static_cast<char>(gen() & 0xFF);
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_EQ(ids.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(ids[i], static_cast<unsigned char>(text[i])) << i;
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_EQ(tok.decode(std::vector<int32_t>{104, 105, 256, 0}), std::string("hi<|endoftext|>\0", 16));
  EXPECT_EQ(error_of([&] { tok.decode(std::vector<int32_t>{1, 257}); }),
            "[tokenizer] byte tokenizer: id 257 at position 1 is outside its vocabulary 0..256 (256 is end-of-text)");
  EXPECT_EQ(error_of([&] { tok.decode(std::vector<int32_t>{-1}); }),
            "[tokenizer] byte tokenizer: id -1 at position 0 is outside its vocabulary 0..256 (256 is end-of-text)");
}

TEST(Tokenizer, KindsByName) {
  EXPECT_EQ(parse_tokenizer_kind("byte"), TokenizerKind::kByte);
  EXPECT_EQ(parse_tokenizer_kind("gpt2"), TokenizerKind::kGpt2Bpe);
  EXPECT_EQ(error_of([] { parse_tokenizer_kind("bpe"); }), "[tokenizer] unknown tokenizer 'bpe'; accepted: byte, gpt2");
  EXPECT_EQ(make_tokenizer({})->name(), "byte");
  EXPECT_EQ(error_of([] { make_tokenizer({TokenizerKind::kGpt2Bpe, "enc.json", ""}); }),
            "[tokenizer] the gpt2 tokenizer needs both encoder.json and vocab.bpe paths (got 'enc.json' and '')");
}

using Pieces = std::vector<std::string_view>;

TEST(Gpt2Pretokenize, SplitsAsGpt2sPattern) {
  EXPECT_EQ(gpt2_pretokenize(""), Pieces{});
  EXPECT_EQ(gpt2_pretokenize("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(gpt2_pretokenize("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(gpt2_pretokenize("a\tb"), (Pieces{"a", "\t", "b"}));
  EXPECT_EQ(gpt2_pretokenize("don't I'll we're they've I'm he'd it's"),
            (Pieces{"don", "'t", " I", "'ll", " we", "'re", " they", "'ve", " I", "'m", " he", "'d", " it", "'s"}));
  EXPECT_EQ(gpt2_pretokenize("DON'T"), (Pieces{"DON", "'", "T"}));  // contractions are lower case only
  EXPECT_EQ(gpt2_pretokenize("'s'"), (Pieces{"'s", "'"}));
  EXPECT_EQ(gpt2_pretokenize("x  \n\n  y"), (Pieces{"x", "  \n\n ", " y"}));
  EXPECT_EQ(gpt2_pretokenize(" \n x"), (Pieces{" \n", " x"}));
  EXPECT_EQ(gpt2_pretokenize("trailing   "), (Pieces{"trailing", "   "}));
  EXPECT_EQ(gpt2_pretokenize("abc123 456def"), (Pieces{"abc", "123", " 456", "def"}));
  EXPECT_EQ(gpt2_pretokenize("a!!?b ...c"), (Pieces{"a", "!!?", "b", " ...", "c"}));
  // Non-ASCII letters and numbers (Arabic-Indic digits, Roman numeral, superscript, fraction).
  EXPECT_EQ(gpt2_pretokenize("héllo wörld 中文 ٣٤"), (Pieces{"héllo", " wörld", " 中文", " ٣٤"}));
  EXPECT_EQ(gpt2_pretokenize("Ⅻ² ½"), (Pieces{"Ⅻ²", " ½"}));
  EXPECT_EQ(gpt2_pretokenize("\u00a0x"), (Pieces{"\u00a0", "x"}));  // no-break space is \s, not ' '
  EXPECT_EQ(gpt2_pretokenize("😀😀 ok"), (Pieces{"😀😀", " ok"}));
  // Invalid UTF-8 bytes are "other" code points, one byte each.
  EXPECT_EQ(gpt2_pretokenize("\xff\xfe" "ab \xc3"), (Pieces{"\xff\xfe", "ab", " \xc3"}));
}

TEST(Gpt2Pretokenize, ClassifiesCodePoints) {
  EXPECT_EQ(classify_code_point(U'a'), CodePointClass::kLetter);
  EXPECT_EQ(classify_code_point(U'Ω'), CodePointClass::kLetter);
  EXPECT_EQ(classify_code_point(U'中'), CodePointClass::kLetter);
  EXPECT_EQ(classify_code_point(U'7'), CodePointClass::kNumber);
  EXPECT_EQ(classify_code_point(U'٣'), CodePointClass::kNumber);
  EXPECT_EQ(classify_code_point(U' '), CodePointClass::kSpace);
  EXPECT_EQ(classify_code_point(U'\u3000'), CodePointClass::kSpace);
  EXPECT_EQ(classify_code_point(U'\x1c'), CodePointClass::kOther);  // not \s for the regex module
  EXPECT_EQ(classify_code_point(U'!'), CodePointClass::kOther);
  EXPECT_EQ(classify_code_point(U'😀'), CodePointClass::kOther);
  EXPECT_EQ(classify_code_point(0x10FFFF), CodePointClass::kOther);
}

std::string utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's byte alphabet, built here independently of the library: printable bytes keep their code
// point, the rest get U+0100 onwards; byte_ids are the ids GPT-2's encoder.json gives single bytes
// (the order of that construction: '!' = 0, ..., ' ' = 220, '\n' = 198).
struct ByteAlphabet {
  std::array<std::string, 256> spelled;
  std::array<int32_t, 256> id;
  ByteAlphabet() {
    std::vector<int> order;
    for (int b = '!'; b <= '~'; ++b) order.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
    for (int b : order) spelled[b] = utf8(static_cast<char32_t>(b));
    const size_t printable = order.size();
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      if (std::find(order.begin(), order.end(), b) == order.end()) {
        order.push_back(b);
        spelled[b] = utf8(next++);
      }
    }
    EXPECT_EQ(printable, 188u);
    for (int i = 0; i < 256; ++i) id[order[i]] = i;
  }
};

TEST(Gpt2Bpe, ByteAlphabetMatchesGpt2) {
  const ByteAlphabet alphabet;
  EXPECT_EQ(gpt2_byte_to_unicode(), alphabet.spelled);
  EXPECT_EQ(gpt2_byte_to_unicode()[' '], "\u0120");  // 'Ġ'
  EXPECT_EQ(gpt2_byte_to_unicode()['\n'], "\u010A");  // 'Ċ'
  EXPECT_EQ(gpt2_byte_to_unicode()[0xAD], "\u0143");  // the soft hyphen is the last one remapped
  EXPECT_EQ(alphabet.id[' '], 220);
  EXPECT_EQ(alphabet.id['\n'], 198);
  EXPECT_EQ(alphabet.id['h'], 71);
}

class Gpt2BpeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_bpe_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    for (int b = 0; b < 256; ++b) encoder_[alphabet_.spelled[b]] = alphabet_.id[b];
    // Merges in rank order; ids 256.. in the same order, then <|endoftext|>, as GPT-2's files are laid out.
    merges_ = {"h e", "l l", "he ll", "Ġ w", "o r", "Ġw or", "hell o", "e l"};
    int32_t id = 256;
    for (const std::string& m : merges_) {
      std::string merged = m;
      merged.erase(merged.find(' '), 1);
      encoder_[merged] = id++;
    }
    encoder_["<|endoftext|>"] = id;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Gpt2BpeTokenizer> load() {
    std::ofstream(enc_path()) << encoder_.dump();
    std::ofstream bpe(bpe_path());
    bpe << "#version: 0.2\n";
    for (const std::string& m : merges_) bpe << m << "\n";
    bpe.close();
    return Gpt2BpeTokenizer::load(enc_path(), bpe_path());
  }
  std::string enc_path() const { return (dir_ / "encoder.json").string(); }
  std::string bpe_path() const { return (dir_ / "vocab.bpe").string(); }

  fs::path dir_;
  ByteAlphabet alphabet_;
  nlohmann::json encoder_ = nlohmann::json::object();
  std::vector<std::string> merges_;
};

using Ids = std::vector<int32_t>;

TEST_F(Gpt2BpeTest, EncodesAsWorkedOutByHand) {
  const auto tok = load();
  EXPECT_EQ(tok->vocab_size(), 265);
  EXPECT_EQ(tok->eot_token(), 264);
  EXPECT_EQ(tok->name(), "gpt2");
  // "hello": h e l l o -> he l l o (rank 0) -> he ll o (1) -> hell o (2) -> hello (6).
  // " world": Ġ w o r l d -> Ġw o r l d (3) -> Ġw or l d (4) -> Ġwor l d (5); l = 75, d = 67.
  EXPECT_EQ(tok->encode("hello world"), (Ids{262, 261, 75, 67}));
  // Rank decides, not position: in "ell", "l l" (rank 1) beats the earlier "e l" (rank 7).
  EXPECT_EQ(tok->encode("ell"), (Ids{68, 257}));
  EXPECT_EQ(tok->encode("el"), (Ids{263}));
  // A pair is merged left to right without overlaps.
  EXPECT_EQ(tok->encode("lll"), (Ids{257, 75}));
  EXPECT_EQ(tok->encode("llll"), (Ids{257, 257}));
  // "\n\n" before a word splits as "\n", "\n" (Ċ = 198); "world" without a space has no "Ġw".
  EXPECT_EQ(tok->encode("hello\n\nworld"), (Ids{262, 198, 198, 86, 260, 75, 67}));
  // "don" "'t": d o n = 67 78 77, ' t = 6 83.
  EXPECT_EQ(tok->encode("don't"), (Ids{67, 78, 77, 6, 83}));
  // é is bytes C3 A9 -> ids 127 and 102; " 42" is Ġ 4 2 = 220 19 17.
  EXPECT_EQ(tok->encode("héllo 42"), (Ids{71, 127, 102, 257, 78, 220, 19, 17}));
  EXPECT_EQ(tok->encode("<|endoftext|>"), tok->encode("<|endoftext|>"));  // text, not the eot id
  EXPECT_EQ(tok->encode("<|endoftext|>").size(), 13u);
  EXPECT_TRUE(tok->encode("").empty());
  // Decoding gives the bytes back; eot decodes as its name.
  EXPECT_EQ(tok->decode(Ids{262, 261, 75, 67, 264}), "hello world<|endoftext|>");
  EXPECT_EQ(tok->token_bytes(259), " w");
  EXPECT_EQ(error_of([&] { tok->decode(Ids{265}); }),
            "[tokenizer] gpt2: id 265 at position 0 is outside the vocabulary 0..264");
}

// A naive BPE over strings, written from the algorithm's description, for random text.
std::vector<std::string> reference_bpe(const std::string& piece, const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> word;
  for (char c : piece) word.emplace_back(1, c);
  while (word.size() > 1) {
    int best = INT32_MAX;
    std::pair<std::string, std::string> best_pair;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && it->second < best) best = it->second, best_pair = it->first;
    }
    if (best == INT32_MAX) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == best_pair.first && word[i + 1] == best_pair.second) {
        merged.push_back(word[i] + word[i + 1]);
        ++i;
      } else {
        merged.push_back(word[i]);
      }
    }
    word = merged;
  }
  return word;
}

TEST_F(Gpt2BpeTest, MatchesANaiveReferenceOnRandomText) {
  const auto tok = load();
  std::map<std::pair<std::string, std::string>, int> ranks;
  auto to_raw = [](const std::string& s) {  // the test's merges use 'Ġ' (two bytes) only for a space
    const size_t g = s.find("Ġ");
    return g == std::string::npos ? s : s.substr(0, g) + " " + s.substr(g + 2);
  };
  for (size_t r = 0; r < merges_.size(); ++r) {
    const size_t space = merges_[r].find(' ');
    ranks[{to_raw(merges_[r].substr(0, space)), to_raw(merges_[r].substr(space + 1))}] = static_cast<int>(r);
  }
  std::mt19937 gen(7);
  const std::vector<std::string> alphabet = {"h", "e", "l", "o", "w", "r", "d", " ", "  ", "\n", "'", "s", "é", "1"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const size_t n = gen() % 40;
    for (size_t i = 0; i < n; ++i) text += alphabet[gen() % alphabet.size()];
    Ids want;
    for (std::string_view piece : gpt2_pretokenize(text)) {
      for (const std::string& symbol : reference_bpe(std::string(piece), ranks)) {
        std::string spelled;
        for (unsigned char c : symbol) spelled += alphabet_.spelled[c];
        want.push_back(encoder_.at(spelled).get<int32_t>());
      }
    }
    ASSERT_EQ(tok->encode(text), want) << "'" << text << "'";
    ASSERT_EQ(tok->encode(text), want) << "cached, '" << text << "'";
    ASSERT_EQ(tok->decode(want), text);
  }
  // Arbitrary bytes always encode (every byte has a token) and decode back.
  std::string bytes(1000, '\0');
  for (auto& c : bytes) c = static_cast<char>(gen() & 0xFF);
  EXPECT_EQ(tok->decode(tok->encode(bytes)), bytes);
}

TEST_F(Gpt2BpeTest, RefusesInconsistentFiles) {
  const std::string enc = enc_path(), bpe = bpe_path();
  {
    merges_.push_back("x yz");
    EXPECT_EQ(error_of([&] { load(); }),
              "[tokenizer] " + bpe + " line 10: merge 'x yz' needs tokens 'x', 'yz' and their concatenation in " + enc);
    merges_.pop_back();
  }
  {
    merges_.push_back("abc");
    EXPECT_EQ(error_of([&] { load(); }), "[tokenizer] " + bpe + " line 10: 'abc' is not a merge 'LEFT RIGHT'");
    merges_.pop_back();
  }
  {
    merges_.push_back("h e");
    EXPECT_EQ(error_of([&] { load(); }), "[tokenizer] " + bpe + " line 10: merge 'h e' appears twice");
    merges_.pop_back();
  }
  {
    auto saved = encoder_;
    encoder_.erase(alphabet_.spelled[0]);
    encoder_["zz"] = 188;  // byte 0's id, so ids stay dense
    EXPECT_EQ(error_of([&] { load(); }),
              "[tokenizer] " + enc + ": has no token for byte 0 ('\u0100'); byte-level BPE needs all 256");
    encoder_ = saved;
  }
  {
    auto saved = encoder_;
    encoder_["<|endoftext|>"] = 5;
    EXPECT_EQ(error_of([&] { load(); }).find("[tokenizer] " + enc + ": id 5 is given to more than one token"), 0u);
    encoder_ = saved;
    encoder_["<|endoftext|>"] = 300;
    EXPECT_EQ(error_of([&] { load(); }),
              "[tokenizer] " + enc + ": token '<|endoftext|>' has id 300; ids must be 0..264 (one per entry)");
    encoder_.erase("<|endoftext|>");
    EXPECT_EQ(error_of([&] { load(); }), "[tokenizer] " + enc + ": has no '<|endoftext|>' token");
    encoder_ = saved;
  }
  {
    auto saved = encoder_;
    encoder_["\u4e2d"] = 265;  // a code point outside the byte alphabet
    encoder_["<|endoftext|>"] = 264;
    EXPECT_EQ(error_of([&] { load(); }),
              "[tokenizer] " + enc + ": token '\u4e2d' (id 265) is not spelled in GPT-2's byte alphabet");
    encoder_ = saved;
  }
  std::ofstream(enc) << "{\"a\": 0,";
  EXPECT_EQ(error_of([&] { Gpt2BpeTokenizer::load(enc, bpe); }).rfind("[tokenizer] " + enc + ": not valid JSON: ", 0), 0u);
  EXPECT_EQ(error_of([&] { Gpt2BpeTokenizer::load(enc + ".missing", bpe); }),
            "[tokenizer] cannot open encoder.json '" + enc + ".missing'");
}

}  // namespace
}  // namespace zt::data

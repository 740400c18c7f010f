// GPT-2's byte-level BPE (OpenAI's encoder.py), without Python: the byte map, the pre-tokeniser
// (pretokenize.cpp) and merges by rank. Tokens are kept as raw bytes internally; the byte-to-unicode
// spelling only matters when reading encoder.json and vocab.bpe.
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "launch/data/pretokenize.h"
#include "launch/data/tokenizer.h"

namespace zt::data {
namespace {

constexpr const char* kEndOfText = "<|endoftext|>";

std::string utf8_encode(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    // The byte map never goes past U+0143, so three-byte forms are not needed here.
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Code point -> byte for the byte map's code points, -1 for any other.
std::array<int, 0x144> unicode_to_byte_table() {
  std::array<int, 0x144> table;
  table.fill(-1);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[printable ? static_cast<char32_t>(b) : next++] = b;
  }
  return table;
}

// Maps a token spelled in the byte alphabet back to the bytes it stands for.
bool spelled_to_bytes(const std::string& spelled, const std::array<int, 0x144>& to_byte, std::string* bytes) {
  bytes->clear();
  size_t i = 0;
  while (i < spelled.size()) {
    const auto b0 = static_cast<unsigned char>(spelled[i]);
    char32_t cp;
    if (b0 < 0x80) {
      cp = b0, i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < spelled.size()) {
      cp = ((b0 & 0x1F) << 6) | (static_cast<unsigned char>(spelled[i + 1]) & 0x3F), i += 2;
    } else {
      return false;  // three- and four-byte forms are outside the alphabet
    }
    if (cp >= to_byte.size() || to_byte[cp] < 0) return false;
    bytes->push_back(static_cast<char>(to_byte[cp]));
  }
  return true;
}

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in, "tokenizer", "cannot open ", what, " '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

const std::array<std::string, 256>& gpt2_byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    const std::array<int, 0x144> to_byte = unicode_to_byte_table();
    for (char32_t cp = 0; cp < to_byte.size(); ++cp) {
      if (to_byte[cp] >= 0) t[to_byte[cp]] = utf8_encode(cp);
    }
    return t;
  }();
  return table;
}

std::unique_ptr<Gpt2BpeTokenizer> Gpt2BpeTokenizer::load(const std::string& encoder_json_path,
                                                         const std::string& vocab_bpe_path) {
  std::unique_ptr<Gpt2BpeTokenizer> tok(new Gpt2BpeTokenizer());
  const std::array<int, 0x144> to_byte = unicode_to_byte_table();

  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(read_text_file(encoder_json_path, "encoder.json"));
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL("tokenizer", encoder_json_path, ": not valid JSON: ", e.what());
  }
  ZT_CHECK(encoder.is_object() && !encoder.empty(), "tokenizer", encoder_json_path,
           ": expected a JSON object mapping token strings to ids");
  const size_t n = encoder.size();
  ZT_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), "tokenizer", encoder_json_path,
           ": too many tokens (", n, ")");
  tok->token_bytes_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  std::unordered_map<std::string, int32_t> bytes_to_id;
  bytes_to_id.reserve(n);
  for (const auto& [spelled, value] : encoder.items()) {
    ZT_CHECK(value.is_number_integer(), "tokenizer", encoder_json_path, ": the id of token '", spelled,
             "' is not an integer");
    const int64_t id = value.get<int64_t>();
    ZT_CHECK(id >= 0 && id < static_cast<int64_t>(n), "tokenizer", encoder_json_path, ": token '", spelled,
             "' has id ", id, "; ids must be 0..", n - 1, " (one per entry)");
    ZT_CHECK(!seen[id], "tokenizer", encoder_json_path, ": id ", id, " is given to more than one token");
    seen[id] = true;
    const auto id32 = static_cast<int32_t>(id);
    if (spelled == kEndOfText) {
      tok->eot_token_ = id32;
      tok->token_bytes_[id] = kEndOfText;  // how decode() writes it
      continue;
    }
    std::string bytes;
    ZT_CHECK(spelled_to_bytes(spelled, to_byte, &bytes) && !bytes.empty(), "tokenizer", encoder_json_path,
             ": token '", spelled, "' (id ", id, ") is not spelled in GPT-2's byte alphabet");
    if (bytes.size() == 1) tok->byte_token_[static_cast<unsigned char>(bytes[0])] = id32;
    ZT_CHECK(bytes_to_id.emplace(bytes, id32).second, "tokenizer", encoder_json_path, ": token '", spelled,
             "' appears twice");
    tok->token_bytes_[id] = std::move(bytes);
  }
  ZT_CHECK(tok->eot_token_ >= 0, "tokenizer", encoder_json_path, ": has no '", kEndOfText, "' token");
  for (int b = 0; b < 256; ++b) {
    ZT_CHECK(bytes_to_id.count(std::string(1, static_cast<char>(b))), "tokenizer", encoder_json_path,
             ": has no token for byte ", b, " ('", gpt2_byte_to_unicode()[b],
             "'); byte-level BPE needs all 256");
  }

  std::istringstream merges(read_text_file(vocab_bpe_path, "vocab.bpe"));
  std::string line;
  int line_no = 0;
  int32_t rank = 0;
  std::string left, right;
  while (std::getline(merges, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    ZT_CHECK(space != std::string::npos && space > 0 && line.find(' ', space + 1) == std::string::npos &&
                 space + 1 < line.size(),
             "tokenizer", vocab_bpe_path, " line ", line_no, ": '", line, "' is not a merge 'LEFT RIGHT'");
    ZT_CHECK(spelled_to_bytes(line.substr(0, space), to_byte, &left) &&
                 spelled_to_bytes(line.substr(space + 1), to_byte, &right),
             "tokenizer", vocab_bpe_path, " line ", line_no, ": '", line, "' is not spelled in GPT-2's byte alphabet");
    const auto l = bytes_to_id.find(left), r = bytes_to_id.find(right), m = bytes_to_id.find(left + right);
    ZT_CHECK(l != bytes_to_id.end() && r != bytes_to_id.end() && m != bytes_to_id.end(), "tokenizer",
             vocab_bpe_path, " line ", line_no, ": merge '", line, "' needs tokens '", line.substr(0, space),
             "', '", line.substr(space + 1), "' and their concatenation in ", encoder_json_path);
    ZT_CHECK(tok->merges_.emplace(pair_key(l->second, r->second), Merge{rank, m->second}).second, "tokenizer",
             vocab_bpe_path, " line ", line_no, ": merge '", line, "' appears twice");
    ++rank;
  }
  return tok;
}

const std::string& Gpt2BpeTokenizer::token_bytes(int32_t id) const {
  ZT_CHECK(id >= 0 && id < vocab_size(), "tokenizer", "gpt2: id ", id, " is outside the vocabulary 0..",
           vocab_size() - 1);
  return token_bytes_[id];
}

void Gpt2BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> symbols(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) symbols[i] = byte_token_[static_cast<unsigned char>(piece[i])];
  // Each round applies the lowest-ranked merge present, at every place it occurs, left to right
  // without overlaps ("lll" -> "ll", "l"), exactly as encoder.py's bpe() does.
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = pair_key(symbols[i], symbols[i + 1]);
      const auto it = merges_.find(key);
      if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        best_key = key;
      }
    }
    if (best == nullptr) break;
    size_t kept = 0;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && pair_key(symbols[i], symbols[i + 1]) == best_key) {
        symbols[kept++] = best->merged;
        ++i;
      } else {
        symbols[kept++] = symbols[i];
      }
    }
    symbols.resize(kept);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

std::vector<int32_t> Gpt2BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  // Long pieces (runs of one character class) would fill the cache with one-off entries.
  constexpr size_t kMaxCachedPiece = 64;
  std::vector<int32_t> piece_ids;
  for (std::string_view piece : gpt2_pretokenize(text)) {
    if (piece.size() > kMaxCachedPiece) {
      encode_piece(piece, ids);
      continue;
    }
    std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto it = cache_.find(key);
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    piece_ids.clear();
    encode_piece(piece, piece_ids);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::move(key), piece_ids);
  }
  return ids;
}

std::string Gpt2BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    ZT_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "tokenizer", "gpt2: id ", ids[i], " at position ", i,
             " is outside the vocabulary 0..", vocab_size() - 1);
    text += token_bytes_[ids[i]];
  }
  return text;
}

}  // namespace zt::data

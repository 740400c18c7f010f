#include "launch/data/pretokenize.h"

#include <algorithm>
#include <array>

namespace zt::data {
namespace {

struct ClassRange {
  char32_t first;
  char32_t last;
  CodePointClass cls;
};

constexpr ClassRange kClassRanges[] = {
#include "launch/data/unicode_tables.inc"
};

// Most text is ASCII: a table lookup avoids the binary search there.
constexpr std::array<CodePointClass, 128> make_ascii_table() {
  std::array<CodePointClass, 128> table{};
  for (const ClassRange& r : kClassRanges) {
    for (char32_t c = r.first; c <= r.last && c < 128; ++c) table[c] = r.cls;
  }
  return table;
}
constexpr std::array<CodePointClass, 128> kAsciiClass = make_ascii_table();

// One decoded code point: its value, class and byte length in the input.
struct CodePoint {
  char32_t value;
  CodePointClass cls;
  uint32_t bytes;
};

// Decodes the code point at text[i]. Invalid or truncated sequences, overlong forms and surrogates
// decode as a single byte of class kOther (see the header).
CodePoint decode_at(std::string_view text, size_t i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) return {b0, kAsciiClass[b0], 1};
  const CodePoint invalid{0xFFFD, CodePointClass::kOther, 1};
  uint32_t len;
  char32_t cp;
  char32_t min_value;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min_value = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min_value = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min_value = 0x10000;
  } else {
    return invalid;
  }
  if (i + len > text.size()) return invalid;
  for (uint32_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return invalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min_value || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return invalid;
  return {cp, classify_code_point(cp), len};
}

bool is_contraction_suffix(std::string_view rest, size_t* length) {
  // rest starts just after the apostrophe. GPT-2's pattern is case-sensitive: "'S" is no contraction.
  for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
    if (rest.substr(0, suffix.size()) == suffix) {
      *length = suffix.size() + 1;
      return true;
    }
  }
  return false;
}

}  // namespace

CodePointClass classify_code_point(char32_t cp) {
  if (cp < 128) return kAsciiClass[cp];
  const ClassRange* end = std::end(kClassRanges);
  const ClassRange* it =
      std::upper_bound(std::begin(kClassRanges), end, cp, [](char32_t c, const ClassRange& r) { return c < r.first; });
  if (it == std::begin(kClassRanges)) return CodePointClass::kOther;
  --it;
  return cp <= it->last ? it->cls : CodePointClass::kOther;
}

// Note [GPT-2 whitespace]
// `\s+(?!\S)` takes a run of whitespace but, when the run is followed by a non-space, gives back its
// last character, so that a following word keeps its leading space (" ?\p{L}+" then matches it):
// "a   b" splits as "a", "  ", " b". A run of one whitespace character followed by a non-space cannot
// match that alternative (it would be empty) and falls through to `\s+`, which takes the single
// character: "a\tb" splits as "a", "\t", "b". A run reaching the end of the text is taken whole.
// Only U+0020 can be the optional leading space of the word alternatives.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  const size_t n = text.size();
  // End of the run of code points of class cls that starts at byte i.
  auto run_end = [&](size_t i, CodePointClass cls) {
    while (i < n) {
      const CodePoint cp = decode_at(text, i);
      if (cp.cls != cls) break;
      i += cp.bytes;
    }
    return i;
  };
  size_t i = 0;
  while (i < n) {
    const CodePoint here = decode_at(text, i);
    size_t end = i;
    size_t contraction = 0;
    if (text[i] == '\'' && is_contraction_suffix(text.substr(i + 1), &contraction)) {
      end = i + contraction;
    } else if (here.cls != CodePointClass::kSpace) {
      end = run_end(i, here.cls);  // \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+ without the leading space
    } else {
      // A space directly before a non-space code point joins that code point's run.
      if (text[i] == ' ' && i + 1 < n) {
        const CodePoint next = decode_at(text, i + 1);
        if (next.cls != CodePointClass::kSpace) end = run_end(i + 1, next.cls);
      }
      if (end == i) {
        // Whitespace alternatives, Note [GPT-2 whitespace].
        size_t last_start = i;  // start of the run's last code point
        size_t j = i;
        while (j < n) {
          const CodePoint cp = decode_at(text, j);
          if (cp.cls != CodePointClass::kSpace) break;
          last_start = j;
          j += cp.bytes;
        }
        if (j == n || last_start == i) {
          end = j;  // the run reaches the end, or it is one character long
        } else {
          end = last_start;
        }
      }
    }
    pieces.push_back(text.substr(i, end - i));
    i = end;
  }
  return pieces;
}

}  // namespace zt::data

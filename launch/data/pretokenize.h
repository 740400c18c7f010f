// GPT-2's pre-tokenisation: the split of text into "words" before byte-pair merges, written by hand
// so that no regex engine with Unicode property support is needed. It reproduces the pattern of
// GPT-2's encoder.py,
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with the alternatives tried in that order at each position, as a backtracking regex engine does
// (Note [GPT-2 whitespace] in pretokenize.cpp explains the last two).
//
// Input is UTF-8; a byte that does not start a valid UTF-8 sequence counts as one code point that is
// neither letter, number nor space (so any byte string splits, and the pieces always concatenate
// back to the input exactly).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace zt::data {

// The classes of code points that the pattern tells apart (\p{L}, \p{N}, \s, everything else),
// as the `regex` module defines them; see gen_unicode_tables.py.
enum class CodePointClass : uint8_t { kOther, kLetter, kNumber, kSpace };

CodePointClass classify_code_point(char32_t cp);

// Splits text into the pieces GPT-2's pattern matches; the views point into `text`.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace zt::data

// The GEMM tuning file's format (Note [GEMM tuning file] in core/gemm_tuning.h):
//   # comment lines
//   library <text to the end of the line>
//   <17 decimal key fields> : <8 hexadecimal words>
#include "core/gemm_tuning.h"

#include <charconv>
#include <fmt/format.h>
#include <map>

#include "core/error.h"

namespace zt {
namespace {

constexpr const char* kApi = "gemm tuning";
constexpr std::string_view kLibraryTag = "library ";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Splits at runs of spaces.
std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const size_t start = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

template <typename T>
bool parse_number(std::string_view word, int base, T& value) {
  const char* end = word.data() + word.size();
  const auto [ptr, ec] = std::from_chars(word.data(), end, value, base);
  return ec == std::errc() && ptr == end;
}

}  // namespace

std::string format_gemm_tuning(const GemmTuning& tuning) {
  ZT_CHECK(tuning.library.find('\n') == std::string::npos, kApi, "the library line holds a newline: '",
           tuning.library, "'");
  std::string out =
      "# zerotrain GEMM tuning: cuBLASLt's fastest algorithm per matrix product, timed on the GPU named below\n"
      "# (Note [GEMM tuning file]). Key: dtype epilogue transpose_a transpose_b accumulate batched m n k batch\n"
      "# stride_a stride_b stride_c align_a align_b align_c align_bias : the algorithm's 8 words.\n";
  out += fmt::format("{}{}\n", kLibraryTag, tuning.library);
  for (const GemmTuningEntry& e : tuning.entries) {
    out += fmt::format("{} :", fmt::join(e.key, " "));
    for (uint64_t w : e.algorithm) out += fmt::format(" {:016x}", w);
    out += '\n';
  }
  return out;
}

GemmTuning parse_gemm_tuning(std::string_view text, const std::string& source) {
  GemmTuning tuning;
  bool have_library = false;
  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    if (line.substr(0, kLibraryTag.size()) == kLibraryTag) {
      ZT_CHECK(!have_library, kApi, source, " line ", line_no, ": a second 'library' line");
      tuning.library = std::string(trim(line.substr(kLibraryTag.size())));
      have_library = true;
      continue;
    }
    ZT_CHECK(have_library, kApi, source, " line ", line_no,
             ": expected the 'library <cuBLASLt version | GPU>' line before the first problem");
    const size_t colon = line.find(':');
    ZT_CHECK(colon != std::string_view::npos, kApi, source, " line ", line_no,
             ": expected '<", GemmTuningEntry::kKeyFields, " key fields> : <8 hexadecimal words>', got '", line, "'");
    const auto key_words = words(line.substr(0, colon));
    const auto algo_words = words(line.substr(colon + 1));
    ZT_CHECK(key_words.size() == GemmTuningEntry::kKeyFields && algo_words.size() == 8, kApi, source, " line ",
             line_no, ": expected ", GemmTuningEntry::kKeyFields, " key fields and 8 algorithm words, got ",
             key_words.size(), " and ", algo_words.size());
    GemmTuningEntry e;
    for (size_t i = 0; i < key_words.size(); ++i)
      ZT_CHECK(parse_number(key_words[i], 10, e.key[i]), kApi, source, " line ", line_no, ": key field ", i + 1,
               " '", key_words[i], "' is not an integer");
    for (size_t i = 0; i < algo_words.size(); ++i)
      ZT_CHECK(parse_number(algo_words[i], 16, e.algorithm[i]), kApi, source, " line ", line_no,
               ": algorithm word ", i + 1, " '", algo_words[i], "' is not a hexadecimal 64-bit number");
    tuning.entries.push_back(e);
  }
  ZT_CHECK(have_library, kApi, source, " has no 'library' line (not a zerotrain GEMM tuning file?)");
  return tuning;
}

GemmTuning merge_gemm_tuning(const std::vector<GemmTuning>& tables) {
  GemmTuning merged;
  if (tables.empty()) return merged;
  merged.library = tables.front().library;
  std::map<std::array<int64_t, GemmTuningEntry::kKeyFields>, bool> seen;
  for (const GemmTuning& t : tables) {
    if (t.library != merged.library) continue;
    for (const GemmTuningEntry& e : t.entries)
      if (seen.emplace(e.key, true).second) merged.entries.push_back(e);
  }
  return merged;
}

}  // namespace zt

// Note [GEMM tuning file]: the file's format, merging, the atomic write, where the file goes, and
// The GPU side is tests/cuda/test_cuda_gemm_tuning.cpp; the gather across ranks, and that the
// setting does nothing on the CPU, tests/dist/test_comm.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/gemm_tuning.h"
#include "launch/config.h"
#include "launch/gemm_tuning_sync.h"
#include "error_text.h"

namespace zt {
namespace {

GemmTuningEntry entry(int64_t m, uint64_t word) {
  GemmTuningEntry e;
  for (int i = 0; i < GemmTuningEntry::kKeyFields; ++i) e.key[static_cast<size_t>(i)] = i * 3 - 7;  // negatives too
  e.key[6] = m;
  for (size_t j = 0; j < 8; ++j) e.algorithm[j] = word * (j + 1) ^ (uint64_t{1} << 63);  // high bits set
  return e;
}

GemmTuning table(const std::string& library, std::vector<GemmTuningEntry> entries) {
  return GemmTuning{library, std::move(entries)};
}

using test::error_of;

TEST(GemmTuningFormat, RoundTripsEveryField) {
  const GemmTuning t = table("cuBLASLt 130000 | NVIDIA H200 | sm_90 | 132 SMs", {entry(1, 5), entry(16384, 0xdeadbeef)});
  const std::string text = format_gemm_tuning(t);
  EXPECT_EQ(parse_gemm_tuning(text, "t"), t);
  EXPECT_NE(text.find("library cuBLASLt 130000 | NVIDIA H200"), std::string::npos);
  EXPECT_EQ(parse_gemm_tuning(format_gemm_tuning(table("x", {})), "t"), table("x", {}));
  // Comments, blank lines and Windows line ends are accepted.
  EXPECT_EQ(parse_gemm_tuning("# c\r\n\r\n" + text + "\n# end\n", "t"), t);
}

TEST(GemmTuningFormat, BadFilesNameTheLineAndWhatWasExpected) {
  const std::string line = format_gemm_tuning(table("x", {entry(2, 3)})).substr(
      format_gemm_tuning(table("x", {})).size());
  EXPECT_NE(error_of([] { parse_gemm_tuning("# only\n", "f.txt"); }).find("f.txt has no 'library' line"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_gemm_tuning(line, "f.txt"); }).find("f.txt line 1: expected the 'library"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_gemm_tuning("library a\nlibrary b\n", "f.txt"); }).find("line 2: a second 'library'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_gemm_tuning("library a\n1 2 3\n", "f.txt"); })
                .find("line 2: expected '<17 key fields> : <8 hexadecimal words>'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_gemm_tuning("library a\n1 2 3 : 4\n", "f.txt"); })
                .find("expected 17 key fields and 8 algorithm words, got 3 and 1"),
            std::string::npos);
  std::string bad_key = line;
  bad_key.replace(0, bad_key.find(' '), "x1");
  EXPECT_NE(error_of([&] { parse_gemm_tuning("library a\n" + bad_key, "f.txt"); }).find("key field 1 'x1' is not an integer"),
            std::string::npos);
  std::string bad_word = line;
  bad_word.replace(bad_word.rfind(' ') + 1, std::string::npos, "12345678901234567\n");  // 17 hex digits
  EXPECT_NE(error_of([&] { parse_gemm_tuning("library a\n" + bad_word, "f.txt"); })
                .find("algorithm word 8 '12345678901234567' is not a hexadecimal 64-bit number"),
            std::string::npos);
}

TEST(GemmTuningFormat, MergeKeepsTheFirstChoiceAndSkipsOtherLibraries) {
  const GemmTuning rank0 = table("L", {entry(1, 1), entry(2, 2)});
  const GemmTuning rank1 = table("L", {entry(2, 20), entry(3, 30)});
  const GemmTuning rank2 = table("other", {entry(4, 40)});
  const GemmTuning merged = merge_gemm_tuning({rank0, rank1, rank2});
  EXPECT_EQ(merged, table("L", {entry(1, 1), entry(2, 2), entry(3, 30)}));
  EXPECT_EQ(merge_gemm_tuning({}), GemmTuning{});
}

TEST(GemmTuningFile, WritesAtomicallyAndReadsBack) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "zt_gemm_tuning_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "gemm_tuning.txt").string();
  EXPECT_FALSE(read_gemm_tuning_file(path).has_value());
  const GemmTuning t = table("L", {entry(7, 9)});
  write_gemm_tuning_file(path, t);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(read_gemm_tuning_file(path), t);
  write_gemm_tuning_file(path, table("L", {}));  // replaces
  EXPECT_EQ(read_gemm_tuning_file(path), table("L", {}));
  std::ofstream(path) << "not a tuning file\n";
  EXPECT_NE(error_of([&] { read_gemm_tuning_file(path); }).find(path + " line 1: expected the 'library"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(GemmTuningFile, LivesBesideTheCheckpointsUnlessNamed) {
  TrainConfig cfg = parse_config_text("model { preset: tiny }\n", "t.pbtxt");
  EXPECT_EQ(gemm_tuning_path(cfg), (std::filesystem::path("checkpoints") / "gemm_tuning.txt").string());
  cfg.mutable_train()->set_gemm_tuning_file("/data/tuning.txt");
  EXPECT_EQ(gemm_tuning_path(cfg), "/data/tuning.txt");
  cfg.mutable_train()->clear_gemm_tuning_file();
  cfg.mutable_checkpoint()->set_dir("");
  EXPECT_EQ(gemm_tuning_path(cfg), "");
}

}  // namespace
}  // namespace zt

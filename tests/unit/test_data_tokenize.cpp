// tokenize_files end to end: text files in a temporary folder, shards written, read back and compared
// with the documents tokenized one by one and placed by the documented validation rule.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "launch/data/loader.h"
#include "launch/data/shard.h"
#include "launch/data/tokenize.h"
#include "error_text.h"

namespace zt::data {
namespace {

namespace fs = std::filesystem;

using test::error_of;

// Random "sentences" of words, some non-ASCII, so byte ids cover a wide range.
std::string random_text(std::mt19937& gen, size_t words) {
  static const std::vector<std::string> vocabulary = {"the", "model", "learns", "tokens", "über", "数据", "—", "GPU",
                                                      "loss", "\n", "3.14", "don't", "ZeRO"};
  std::string text;
  for (size_t i = 0; i < words; ++i) text += (i ? " " : "") + vocabulary[gen() % vocabulary.size()];
  return text;
}

class TokenizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_tokenize_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "text");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path(name), std::ios::binary) << text; }

  static std::vector<int32_t> read_all(const std::vector<std::string>& shards) {
    std::vector<int32_t> all;
    for (const std::string& s : shards) {
      const std::vector<int32_t> t = read_shard(s, 257);
      all.insert(all.end(), t.begin(), t.end());
    }
    return all;
  }

  fs::path dir_;
};

TEST_F(TokenizeTest, ValidationRuleTakesKDocumentsSpreadOutIncludingTheLast) {
  for (const int64_t n : {2, 3, 10, 97}) {
    for (int64_t k = 1; k < n; ++k) {
      std::vector<int64_t> picked;
      for (int64_t d = 0; d < n; ++d) {
        if (is_validation_document(d, n, k)) picked.push_back(d);
      }
      ASSERT_EQ(static_cast<int64_t>(picked.size()), k) << n << " " << k;
      EXPECT_EQ(picked.back(), n - 1);
      for (size_t i = 1; i < picked.size(); ++i) {  // evenly spread: gaps differ by at most one
        EXPECT_LE(picked[i] - picked[i - 1], n / k + 1);
        EXPECT_GE(picked[i] - picked[i - 1], n / k);
      }
    }
  }
}

TEST_F(TokenizeTest, WritesShardsThatReadBackAsTheDocumentsInOrder) {
  std::mt19937 gen(3);
  std::vector<std::string> documents;
  for (int f = 0; f < 7; ++f) {
    documents.push_back(random_text(gen, 50 + gen() % 200));
    write("text/doc" + std::to_string(f) + ".txt", documents.back());
  }
  std::ostringstream progress;
  TokenizeOptions options;
  options.inputs = {path("text/doc[0-4].txt"), path("text/doc[56].txt")};
  options.output_prefix = path("out/corpus");  // the folder is created
  options.shard_tokens = 500;
  options.val_fraction = 0.3;  // k = round(2.1) = 2 of 7: documents 3 and 6 (2(d+1)/7 passes 1 and 2)
  options.progress = &progress;
  const TokenizeResult result = tokenize_files(options);

  const ByteTokenizer tok;
  std::vector<int32_t> want_train, want_val;
  for (int64_t d = 0; d < 7; ++d) {
    std::vector<int32_t>& to = (d == 3 || d == 6) ? want_val : want_train;
    to.push_back(256);
    const std::vector<int32_t> ids = tok.encode(documents[d]);
    to.insert(to.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(result.files, 7);
  EXPECT_EQ(result.documents, 7);
  EXPECT_EQ(result.val_documents, 2);
  EXPECT_EQ(result.train_tokens, static_cast<int64_t>(want_train.size()));
  EXPECT_EQ(result.val_tokens, static_cast<int64_t>(want_val.size()));
  EXPECT_EQ(read_all(result.train_shards), want_train);
  EXPECT_EQ(read_all(result.val_shards), want_val);
  // Full shards of 500 tokens, named in order; only the last of each split is shorter.
  ASSERT_EQ(result.train_shards.size(), (want_train.size() + 499) / 500);
  for (size_t i = 0; i < result.train_shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "out/corpus_train_%06zu.bin", i);
    EXPECT_EQ(result.train_shards[i], path(name));
    if (i + 1 < result.train_shards.size()) {
      EXPECT_EQ(ShardFile(result.train_shards[i]).num_tokens(), 500);
    }
  }
  EXPECT_EQ(result.val_shards[0], path("out/corpus_val_000000.bin"));
  EXPECT_NE(progress.str().find("[tokenize] 7/7 " + path("text/doc6.txt")), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("[tokenize] wrote " + path("out/corpus_train_000000.bin") + " (500 tokens)"),
            std::string::npos);

  // The loader reads them as they are.
  DataLoader loader(TokenSource::from_glob(path("out/corpus_train_*.bin")), {.batch_size = 2, .seq_len = 30});
  const Batch b = loader.next();
  EXPECT_EQ(b.inputs, std::vector<int32_t>(want_train.begin(), want_train.begin() + 60));

  // A second run refuses to mix with the old shards unless told to overwrite; then none of them is left.
  EXPECT_EQ(error_of([&] { tokenize_files(options); }),
            "[tokenize] " + path("out/corpus_train_000000.bin") + " already exists; a loader reading '" +
                path("out/corpus_train_*.bin") + "' would mix old and new shards: remove them or set overwrite");
  options.overwrite = true;
  options.shard_tokens = 100000;
  options.progress = nullptr;
  const TokenizeResult again = tokenize_files(options);
  EXPECT_EQ(again.train_shards.size(), 1u);
  EXPECT_EQ(TokenSource::from_glob(path("out/corpus_train_*.bin")).num_parts(), 1u);
  EXPECT_EQ(read_all(again.train_shards), want_train);
}

TEST_F(TokenizeTest, SplitsFilesIntoDocumentsAtASeparator) {
  write("text/stories.txt", "Once upon a time.<|endoftext|>The end.<|endoftext|><|endoftext|>Another one.\n");
  write("text/more.txt", "<|endoftext|>Last.");
  TokenizeOptions options;
  options.inputs = {path("text/stories.txt"), path("text/more.txt")};
  options.output_prefix = path("tiny");
  options.val_fraction = 0.25;  // 4 documents, k = 1: the last
  options.document_separator = "<|endoftext|>";
  const TokenizeResult result = tokenize_files(options);
  EXPECT_EQ(result.documents, 4);
  const ByteTokenizer tok;
  auto with_eot = [&](const std::vector<std::string>& docs) {
    std::vector<int32_t> out;
    for (const std::string& d : docs) {
      out.push_back(256);
      for (int32_t id : tok.encode(d)) out.push_back(id);
    }
    return out;
  };
  EXPECT_EQ(read_all(result.train_shards), with_eot({"Once upon a time.", "The end.", "Another one.\n"}));
  EXPECT_EQ(read_all(result.val_shards), with_eot({"Last."}));
}

TEST_F(TokenizeTest, RefusesBadOptions) {
  write("text/one.txt", "just one document");
  TokenizeOptions options;
  options.inputs = {path("text/one.txt")};
  options.output_prefix = path("o");
  EXPECT_EQ(error_of([&] { tokenize_files(options); }),
            "[tokenize] val_fraction 0.05 of 1 document leaves none for training; give more files, a "
            "document_separator, or val_fraction 0");
  options.val_fraction = 0;
  EXPECT_EQ(tokenize_files(options).train_tokens, 18);
  EXPECT_EQ(error_of([&] {
              TokenizeOptions o = options;
              o.inputs = {path("text/*.md")};
              tokenize_files(o);
            }),
            "[tokenize] no file matches '" + path("text/*.md") + "'");
  EXPECT_EQ(error_of([&] {
              TokenizeOptions o = options;
              o.val_fraction = 1.0;
              tokenize_files(o);
            }),
            "[tokenize] val_fraction 1 must be in [0, 1)");
  EXPECT_EQ(error_of([&] {
              TokenizeOptions o = options;
              o.output_prefix.clear();
              tokenize_files(o);
            }),
            "[tokenize] output_prefix is empty; give e.g. data/tiny");
}

}  // namespace
}  // namespace zt::data

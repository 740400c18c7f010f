// The corpus compiled into the binary: its documents, and its train/validation token split read
// through the loader, checked against the documents tokenized one by one.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "launch/data/embedded_corpus.h"

namespace zt::data {
namespace {

TEST(EmbeddedCorpus, HoldsTheProseAndProjectFilesWithinItsSizeBudget) {
  const std::vector<EmbeddedDocument> documents = embedded_corpus_documents();
  ASSERT_GE(documents.size(), 5u);
  EXPECT_EQ(documents[0].name, "launch/data/corpus_prose.md");
  EXPECT_EQ(documents[0].text.rfind("# Notes on training transformers\n", 0), 0u);
#ifdef ZT_SOURCE_DIR
  // The prose is compiled in as written (regenerate with scripts/make_corpus after editing it).
  std::ifstream prose(std::string(ZT_SOURCE_DIR) + "/launch/data/corpus_prose.md", std::ios::binary);
  std::ostringstream on_disk;
  on_disk << prose.rdbuf();
  EXPECT_EQ(documents[0].text, on_disk.str());
#endif
  size_t bytes = 0;
  std::set<std::string> names;
  for (const EmbeddedDocument& d : documents) {
    EXPECT_FALSE(d.text.empty()) << d.name;
    EXPECT_TRUE(names.insert(d.name).second) << d.name << " twice";
    bytes += d.text.size();
  }
  EXPECT_GT(bytes, 100'000u);
  EXPECT_LT(bytes, 800'000u);
  std::string joined;
  for (const EmbeddedDocument& d : documents) joined += (joined.empty() ? "" : "\n\n") + d.text;
  EXPECT_EQ(embedded_corpus_text(), joined);
}

TEST(EmbeddedCorpus, SplitsTheLastTenthOfTokensForValidation) {
  const ByteTokenizer tok;
  std::vector<int32_t> want;
  for (const EmbeddedDocument& d : embedded_corpus_documents()) {
    want.push_back(tok.eot_token());
    for (int32_t id : tok.encode(d.text)) want.push_back(id);
  }
  const EmbeddedCorpus corpus = open_embedded_corpus(tok);
  const auto total = static_cast<int64_t>(want.size());
  const auto val_tokens = static_cast<int64_t>(std::ceil(0.1 * static_cast<double>(total)));
  ASSERT_EQ(corpus.val_tokens, val_tokens);
  ASSERT_EQ(corpus.train_tokens, total - val_tokens);
  ASSERT_EQ(corpus.train.num_parts(), 1u);
  ASSERT_EQ(corpus.val.num_parts(), 1u);
  std::vector<int32_t> got(static_cast<size_t>(total));
  corpus.train.read(0, 0, corpus.train_tokens, got.data(), tok.vocab_size());
  corpus.val.read(0, 0, corpus.val_tokens, got.data() + corpus.train_tokens, tok.vocab_size());
  EXPECT_EQ(got, want);

  // Both halves feed the loader; the first training batch is the start of the corpus.
  DataLoader train(corpus.train, {.batch_size = 4, .seq_len = 64, .vocab_size = tok.vocab_size()});
  const Batch b = train.next();
  EXPECT_EQ(b.inputs, std::vector<int32_t>(want.begin(), want.begin() + 256));
  EXPECT_EQ(b.targets, std::vector<int32_t>(want.begin() + 1, want.begin() + 257));
  DataLoader val(corpus.val, {.batch_size = 4, .seq_len = 64, .vocab_size = tok.vocab_size()});
  EXPECT_EQ(val.next().inputs, std::vector<int32_t>(want.begin() + corpus.train_tokens,
                                                    want.begin() + corpus.train_tokens + 256));
  EXPECT_EQ(val.windows_per_epoch(), (val_tokens - 1) / 256);
}

}  // namespace
}  // namespace zt::data

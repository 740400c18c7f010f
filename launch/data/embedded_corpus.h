// A text corpus compiled into the binary, so the demo trains without downloading anything: original
// prose about training transformers plus the project's own docs and sources, as they were when
// scripts/make_corpus last regenerated embedded_corpus.inc (a few hundred KB).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/data/loader.h"
#include "launch/data/tokenizer.h"

namespace zt::data {

struct EmbeddedDocument {
  std::string name;  // the file it was taken from, e.g. "docs/architecture.md"
  std::string text;
};

std::vector<EmbeddedDocument> embedded_corpus_documents();
// All documents' text, joined with blank lines.
std::string embedded_corpus_text();

struct EmbeddedCorpus {
  TokenSource train;
  TokenSource val;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

// Tokenizes the corpus, each document preceded by the tokenizer's eot token (as tokenize_files()
// writes shards), and splits the token stream: the last val_fraction of the tokens (rounded up) are
// validation, the rest training. Both parts are in-memory sources for the DataLoader.
EmbeddedCorpus open_embedded_corpus(const Tokenizer& tokenizer, double val_fraction = 0.1);

}  // namespace zt::data

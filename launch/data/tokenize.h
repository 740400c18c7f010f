// `zerotrain tokenize`: text files in, llm.c token shards out (train and validation), ready for the
// data loader. The CLI fills TokenizeOptions from its flags and calls tokenize_files().
//
// Documents: each input file is one document, or, with document_separator set, the pieces of a file
// between separators (empty pieces are dropped). Every document is written as eot followed by its
// tokens, as llm.c's preprocessing scripts do, so a model learns to start text after eot.
// Validation split: with N documents in all and f = val_fraction > 0, k = max(1, round(f * N))
// documents go to validation, spread evenly: document d (counted from 0 across all files in order) is
// a validation document when floor((d + 1) * k / N) > floor(d * k / N). The last document is always
// one of them. Deterministic, no randomness; needs N >= 2 so that training keeps at least one.
// Shards: <output_prefix>_train_000000.bin, _000001, ... of shard_tokens tokens each (the last one
// shorter), likewise _val_; a document may continue from one shard into the next.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "launch/data/tokenizer.h"

namespace zt::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // text files or glob(3) patterns, read in the given order
  TokenizerSpec tokenizer;
  std::string output_prefix;                // e.g. "data/tiny" -> data/tiny_train_000000.bin
  int64_t shard_tokens = 100'000'000;       // llm.c's fineweb shard size
  double val_fraction = 0.05;               // of documents, in [0, 1)
  std::string document_separator;           // empty: one document per file
  bool overwrite = false;                   // remove existing <prefix>_{train,val}_*.bin first
  std::ostream* progress = nullptr;         // one line per file and per shard written, when set
};

struct TokenizeResult {
  int64_t files = 0;
  int64_t documents = 0;
  int64_t val_documents = 0;
  int64_t train_tokens = 0;  // eot tokens included
  int64_t val_tokens = 0;
  std::vector<std::string> train_shards;
  std::vector<std::string> val_shards;
};

TokenizeResult tokenize_files(const TokenizeOptions& options);
// The same with a tokenizer the caller already has (options.tokenizer is ignored).
TokenizeResult tokenize_files(const TokenizeOptions& options, const Tokenizer& tokenizer);

// The rule above: is document d of n a validation document when k of them are?
bool is_validation_document(int64_t d, int64_t n, int64_t k);

}  // namespace zt::data

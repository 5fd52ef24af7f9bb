// Text <-> token ids for pipe-generate: bytes for byte-level models, GPT-2's
// byte-level BPE for models with its vocabulary, from a tiktoken-format table
// (one "base64(token bytes) rank" per line: gpt2.tiktoken, which
// scripts/prepare-data writes beside its shards). No Python at run time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pipe_generate {

class Tokenizer {
 public:
  // Bytes: token b is byte b (a vocabulary of at least 256).
  static Tokenizer bytes();
  // GPT-2's BPE from a tiktoken table; <|endoftext|> is the id after the table's last rank (50256 for GPT-2).
  static Tokenizer bpe(const std::string& table_path);

  bool is_bpe() const { return !ranks_.empty(); }
  // GPT-2's pre-tokenizer (its regex, written out) then byte-pair merges by rank. Exact for ASCII text; bytes of
  // other UTF-8 characters count as letters, which tiktoken's \p{L} agrees with for letters but not for non-ASCII
  // digits, punctuation or spaces.
  std::vector<std::int32_t> encode(const std::string& text) const;
  // Concatenated bytes of each token (<|endoftext|> as that text); an id beyond the table is an error.
  std::string decode(const std::vector<std::int32_t>& ids) const;

 private:
  std::int32_t rank_of(const std::string& piece) const;  // -1 if absent
  void merge_into(const std::string& piece, std::vector<std::int32_t>& out) const;

  std::map<std::string, std::int32_t> ranks_;  // token bytes -> id
  std::vector<std::string> pieces_;            // id -> token bytes
  std::int32_t end_of_text_ = -1;
};

}  // namespace pipe_generate

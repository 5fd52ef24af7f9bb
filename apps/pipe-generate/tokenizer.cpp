// GPT-2's byte-level BPE (see tokenizer.hpp).
#include "tokenizer.hpp"

#include <fstream>
#include <limits>
#include <sstream>

#include "pipe/error.hpp"

namespace pipe_generate {
namespace {

std::string base64_decode(const std::string& in, const std::string& where) {
  auto value = [&](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    throw libpipe::Error(where + ": '" + in + "' is not base64");
  };
  std::string out;
  int bits = 0, acc = 0;
  for (char c : in) {
    if (c == '=') break;
    acc = (acc << 6) | value(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
// \p{L}: ASCII letters, and (an approximation) every byte of a non-ASCII UTF-8 character.
bool is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }
bool is_other(unsigned char c) { return !is_space(c) && !is_letter(c) && !is_digit(c); }

// GPT-2's pattern, alternative by alternative:
//   '(?:[sdmt]|ll|ve|re) | ' ?\p{L}+ | ' ?\p{N}+ | ' ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
std::vector<std::string> pre_tokenize(const std::string& s) {
  std::vector<std::string> out;
  const std::size_t n = s.size();
  std::size_t i = 0;
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < n) {
    if (s[i] == '\'') {
      bool matched = false;
      for (const char* c : {"ll", "ve", "re", "s", "d", "m", "t"}) {
        const std::string suffix = c;
        if (s.compare(i + 1, suffix.size(), suffix) == 0) {
          out.push_back(s.substr(i, 1 + suffix.size()));
          i += 1 + suffix.size();
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const std::size_t start = i;
    std::size_t j = s[i] == ' ' && i + 1 < n && !is_space(at(i + 1)) ? i + 1 : i;
    if (j < n && !is_space(at(j))) {
      bool (*cls)(unsigned char) = is_letter(at(j)) ? is_letter : is_digit(at(j)) ? is_digit : is_other;
      while (j < n && cls(at(j))) ++j;
      out.push_back(s.substr(start, j - start));
      i = j;
      continue;
    }
    // Whitespace: the run, less its last character when a non-space follows (that one starts the next token,
    // as " word"), unless the run is that one character.
    while (j < n && is_space(at(j))) ++j;
    if (j < n && j - start > 1) --j;
    out.push_back(s.substr(start, j - start));
    i = j;
  }
  return out;
}

}  // namespace

Tokenizer Tokenizer::bytes() { return Tokenizer(); }

Tokenizer Tokenizer::bpe(const std::string& table_path) {
  std::ifstream in(table_path);
  if (!in) throw libpipe::Error("--tokenizer " + table_path + ": cannot open the file");
  Tokenizer t;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string encoded;
    long long rank = -1;
    if (!(fields >> encoded >> rank) || rank < 0 || rank > std::numeric_limits<std::int32_t>::max())
      throw libpipe::Error("--tokenizer " + table_path + ":" + std::to_string(number) +
                           ": expected 'base64 rank' (a tiktoken table such as gpt2.tiktoken)");
    const std::string piece = base64_decode(encoded, table_path + ":" + std::to_string(number));
    t.ranks_[piece] = static_cast<std::int32_t>(rank);
    if (t.pieces_.size() <= static_cast<std::size_t>(rank)) t.pieces_.resize(static_cast<std::size_t>(rank) + 1);
    t.pieces_[static_cast<std::size_t>(rank)] = piece;
  }
  if (t.ranks_.size() < 256) throw libpipe::Error("--tokenizer " + table_path + ": fewer than 256 tokens");
  t.end_of_text_ = static_cast<std::int32_t>(t.pieces_.size());
  return t;
}

std::int32_t Tokenizer::rank_of(const std::string& piece) const {
  auto it = ranks_.find(piece);
  return it == ranks_.end() ? -1 : it->second;
}

// Byte-pair merges: repeatedly join the adjacent pair whose joined bytes have the lowest rank.
void Tokenizer::merge_into(const std::string& piece, std::vector<std::int32_t>& out) const {
  if (std::int32_t whole = rank_of(piece); whole >= 0) {
    out.push_back(whole);
    return;
  }
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  for (;;) {
    std::int32_t best = -1;
    std::size_t at = 0;
    for (std::size_t k = 0; k + 1 < parts.size(); ++k) {
      const std::int32_t r = rank_of(parts[k] + parts[k + 1]);
      if (r >= 0 && (best < 0 || r < best)) best = r, at = k;
    }
    if (best < 0) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  for (const auto& p : parts) {
    const std::int32_t r = rank_of(p);
    if (r < 0) throw libpipe::Error("--prompt: the token table has no entry for a byte of the prompt");
    out.push_back(r);
  }
}

std::vector<std::int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<std::int32_t> out;
  if (!is_bpe()) {
    for (unsigned char c : text) out.push_back(c);
    return out;
  }
  for (const auto& piece : pre_tokenize(text)) merge_into(piece, out);
  return out;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  for (std::int32_t id : ids) {
    if (!is_bpe()) {
      if (id < 0 || id > 255) throw libpipe::Error("token " + std::to_string(id) + " is not a byte");
      out += static_cast<char>(id);
    } else if (id == end_of_text_) {
      out += "<|endoftext|>";
    } else if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size()) {
      throw libpipe::Error("token " + std::to_string(id) + " is beyond the token table's " +
                           std::to_string(pieces_.size()) + " entries");
    } else {
      out += pieces_[static_cast<std::size_t>(id)];
    }
  }
  return out;
}

}  // namespace pipe_generate

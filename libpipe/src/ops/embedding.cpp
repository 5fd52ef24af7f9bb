// GPT-2's token + position embedding as ops (kernels: cpu/embedding.cpp,
// cuda/embedding.cu). An undefined wpe (and dwpe) is no position table: the
// token rows alone, for models that encode positions in attention (rotary).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- embedding

namespace {

void check_embedding_tables(const char* op, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  require_dtype(op, "tokens", tokens, DType::int32);
  if (tokens.shape().size() != 2) throw Error(std::string(op) + ": tokens " + type_of(tokens) + " should be [B, T]");
  require_float(op, "wte", wte);
  if (!wpe.defined()) {
    if (wte.shape().size() != 2) throw Error(std::string(op) + ": wte " + type_of(wte) + " should be [V, C]");
    return;
  }
  require_float(op, "wpe", wpe);
  if (wte.shape().size() != 2 || wpe.shape().size() != 2 || wte.shape()[1] != wpe.shape()[1])
    throw Error(std::string(op) + ": wte " + type_of(wte) + " and wpe " + type_of(wpe) +
                " should be [V, C] and [P, C] with the same C");
  if (tokens.shape()[1] > wpe.shape()[0])
    throw Error(std::string(op) + ": tokens " + type_of(tokens) + " have " + std::to_string(tokens.shape()[1]) +
                " positions but wpe " + type_of(wpe) + " holds only " + std::to_string(wpe.shape()[0]));
}

}  // namespace

Tensor embedding(const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  check_embedding_tables("embedding", tokens, wte, wpe);
  Backend& be = wpe.defined() ? backend_of("embedding", {{"tokens", &tokens}, {"wte", &wte}, {"wpe", &wpe}})
                               : backend_of("embedding", {{"tokens", &tokens}, {"wte", &wte}});
  const std::int64_t batch = tokens.shape()[0], seq = tokens.shape()[1];
  const std::int64_t vocab = wte.shape()[0], dim = wte.shape()[1];
  Tensor y = Tensor::empty({batch, seq, dim}, wte.dtype(), tokens.device());  // the parameters' dtype
  // No table: a null array of wte's dtype (so that an all-bfloat16 call stays native).
  const Backend::In positions = wpe.defined() ? in(wpe) : Backend::In{nullptr, wte.dtype()};
  be.embedding_forward(tokens.i32(), in(wte), positions, out(y), batch, seq, dim, vocab);
  return y;
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor& dwpe) {
  const char* op = "embedding_backward";
  check_embedding_tables(op, tokens, dwte, dwpe);
  require_f32(op, "dwte", dwte);
  if (dwpe.defined()) require_f32(op, "dwpe", dwpe);
  require_float(op, "dout", dout);
  const std::int64_t batch = tokens.shape()[0], seq = tokens.shape()[1], dim = dwte.shape()[1];
  const Shape want{batch, seq, dim};
  if (dout.shape() != want)
    throw Error(std::string(op) + ": dout " + type_of(dout) + " should be " + shape_str(want) + " for tokens " +
                type_of(tokens) + " and dwte " + type_of(dwte));
  Backend& be = dwpe.defined()
                    ? backend_of(op, {{"tokens", &tokens}, {"dout", &dout}, {"dwte", &dwte}, {"dwpe", &dwpe}})
                    : backend_of(op, {{"tokens", &tokens}, {"dout", &dout}, {"dwte", &dwte}});
  // Tokens were range-checked by the forward that produced dout.
  be.embedding_backward(tokens.i32(), in(dout), f32(dwte), dwpe.defined() ? f32(dwpe) : nullptr, batch, seq, dim);
}

}  // namespace libpipe::ops

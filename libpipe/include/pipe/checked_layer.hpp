// CheckedLayer: a base for layers (part of the plugin SDK) that makes the
// run-time checks every layer needs. The engine hands a layer tensors it did
// not describe only through a bug (a wrong micro-batch layout, labels never
// set, contexts mixed up); each check turns that into one line naming the
// layer type and the shapes instead of a crash inside a kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/layer.hpp"

namespace libpipe {

// "float32[B, 64, 128]": a described type with the micro-batch dimension.
PIPE_API std::string batched_type_str(const TensorType& type);
// "float32[2, 64, 128]", or "an undefined tensor".
PIPE_API std::string tensor_type_str(const Tensor& t);

class PIPE_API CheckedLayer : public ParameterLayer {
 public:
  CheckedLayer(std::string type, const LayerDescription& description, const TensorType& input, Device device);

  const std::string& type() const { return type_; }
  // The gradient of parameter `name`, which allocate_grads must have created.
  Tensor& grad(const std::string& name);
  // An Error "<type>: <message>".
  [[noreturn]] void fail(const std::string& message) const;
  // Throws unless x is the described input with a micro-batch dimension in front.
  void check_input(const Tensor& x) const;
  // Throws unless dy has the described output's shape for a micro-batch of `batch`.
  void check_output_grad(const Tensor& dy, std::int64_t batch, const char* call) const;
  // ctx.saved, which must hold exactly `count` tensors at this point of the
  // forward / backward_input / backward_weight sequence; `call` names the caller.
  std::vector<Tensor>& saved(LayerContext& ctx, std::size_t count, const char* call) const;

 private:
  std::string type_;
  TensorType input_;
  TensorType output_;
};

}  // namespace libpipe

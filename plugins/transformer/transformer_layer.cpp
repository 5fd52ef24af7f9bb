// TransformerLayer: the run-time checks of this plugin's layers. They restate
// the core plugin's CoreLayer (this plugin does not link to it) so that a bad
// input, a wrong dy or a mixed-up context reads the same from either plugin:
// one line naming the layer type and the shapes.
#include <algorithm>
#include <pipe/error.hpp>
#include <utility>

#include "transformer_layers.hpp"

namespace pipe_transformer {
namespace {

// "float32[2, 5, 8]"
std::string tensor_type_str(const libpipe::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return libpipe::type_str({t.shape(), t.dtype()});
}

// "float32[B, 5, 8]": a per-sample type with the micro-batch dimension in front.
std::string batched_type_str(const libpipe::TensorType& type) {
  std::string s = std::string(libpipe::dtype_name(type.dtype)) + "[B";
  for (auto d : type.shape) s += ", " + std::to_string(d);
  return s + "]";
}

}  // namespace

TransformerLayer::TransformerLayer(std::string type, const libpipe::LayerDescription& description,
                                   const libpipe::TensorType& input, libpipe::Device device)
    : ParameterLayer(description, device), type_(std::move(type)), input_(input) {}

void TransformerLayer::fail(const std::string& message) const { throw libpipe::Error(type_ + ": " + message); }

void TransformerLayer::check_input(const libpipe::Tensor& x) const {
  const auto& shape = x.shape();
  const bool fits = x.defined() && x.dtype() == input_.dtype && shape.size() == input_.shape.size() + 1 &&
                    std::equal(input_.shape.begin(), input_.shape.end(), shape.begin() + 1);
  if (!fits) fail("input " + tensor_type_str(x) + " does not match the described input " + batched_type_str(input_));
}

void TransformerLayer::check_output_grad(const libpipe::Tensor& dy, std::int64_t batch, const char* call) const {
  libpipe::Shape expected{batch};
  expected.insert(expected.end(), input_.shape.begin(), input_.shape.end());
  if (!dy.defined() || dy.dtype() != libpipe::DType::float32 || dy.shape() != expected)
    fail(std::string(call) + " got dy " + tensor_type_str(dy) + " but the output is " +
         libpipe::type_str({expected, libpipe::DType::float32}));
}

std::vector<libpipe::Tensor>& TransformerLayer::saved(libpipe::LayerContext& ctx, std::size_t count,
                                                      const char* call) const {
  if (ctx.saved.size() != count)
    fail(std::string(call) + " on a context in the wrong state (it holds " + std::to_string(ctx.saved.size()) +
         " saved tensors, expected " + std::to_string(count) +
         "): each micro-batch's context takes this layer's forward, backward_input and backward_weight, in that "
         "order");
  return ctx.saved;
}

libpipe::Tensor& TransformerLayer::grad(const std::string& name) {
  libpipe::Tensor& g = param(name).grad;
  if (!g.defined()) fail("parameter '" + name + "' has no gradient: call allocate_grads before backward_weight");
  return g;
}

}  // namespace pipe_transformer

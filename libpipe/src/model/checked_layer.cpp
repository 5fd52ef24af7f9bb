// CheckedLayer (see checked_layer.hpp).
#include "pipe/checked_layer.hpp"

#include <algorithm>
#include <utility>

#include "pipe/error.hpp"

namespace libpipe {

std::string batched_type_str(const TensorType& type) {
  std::string s = std::string(dtype_name(type.dtype)) + "[B";
  for (auto d : type.shape) s += ", " + std::to_string(d);
  return s + "]";
}

std::string tensor_type_str(const Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return type_str({t.shape(), t.dtype()});
}

CheckedLayer::CheckedLayer(std::string type, const LayerDescription& description, const TensorType& input,
                     Device device)
    : ParameterLayer(description, device), type_(std::move(type)), input_(input), output_(description.output) {}

void CheckedLayer::fail(const std::string& message) const { throw Error(type_ + ": " + message); }

namespace {

// Under mixed precision a float32 activation is stored as bfloat16; describe() speaks of float32 either way.
bool same_storage_class(DType actual, DType described) {
  return actual == described || (described == DType::float32 && actual == DType::bfloat16);
}

}  // namespace

void CheckedLayer::check_input(const Tensor& x) const {
  const auto& shape = x.shape();
  const bool fits = x.defined() && same_storage_class(x.dtype(), input_.dtype) &&
                    shape.size() == input_.shape.size() + 1 &&
                    std::equal(input_.shape.begin(), input_.shape.end(), shape.begin() + 1);
  if (!fits) fail("input " + tensor_type_str(x) + " does not match the described input " + batched_type_str(input_));
}

void CheckedLayer::check_output_grad(const Tensor& dy, std::int64_t batch, const char* call) const {
  Shape expected{batch};
  expected.insert(expected.end(), output_.shape.begin(), output_.shape.end());
  if (!dy.defined() || !same_storage_class(dy.dtype(), DType::float32) || dy.shape() != expected)
    fail(std::string(call) + " got dy " + tensor_type_str(dy) + " but the output is " +
         type_str({expected, DType::float32}));
}

std::vector<Tensor>& CheckedLayer::saved(LayerContext& ctx, std::size_t count, const char* call) const {
  if (ctx.saved.size() != count)
    fail(std::string(call) + " on a context in the wrong state (it holds " + std::to_string(ctx.saved.size()) +
         " saved tensors, expected " + std::to_string(count) +
         "): each micro-batch's context takes this layer's forward, backward_input and backward_weight, in that "
         "order");
  return ctx.saved;
}

Tensor& CheckedLayer::grad(const std::string& name) {
  Tensor& g = param(name).grad;
  if (!g.defined()) fail("parameter '" + name + "' has no gradient: call allocate_grads before backward_weight");
  return g;
}

}  // namespace libpipe

// Layer and factory base classes: out-of-line destructors anchor the vtables in
// libpipe, so plugins and the host agree on one copy.
#include "pipe/layer.hpp"

#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/ops.hpp"

namespace libpipe {

std::int64_t LayerDescription::param_count() const {
  Count n = 0;
  for (const auto& p : params) n += numel(p.shape);
  return n.value();
}

std::uint64_t CreateContext::layer_seed() const {
  return mix_seed(seed, static_cast<std::uint64_t>(layer_index));
}

Layer::~Layer() = default;

std::size_t Layer::parameter_bytes() {
  std::size_t n = 0;
  for (const auto& p : parameters()) n += p.value.bytes() + (p.master.defined() ? p.master.bytes() : 0);
  return n;
}

void allocate_grads(Layer& layer) {
  for (auto& p : layer.parameters())
    if (!p.grad.defined()) p.grad = Tensor::zeros(p.value.shape(), DType::float32, p.value.device());
}

void store_parameters_in_bf16(Layer& layer) {
  for (auto& p : layer.parameters()) {
    if (p.master.defined() || p.value.dtype() != DType::float32) continue;
    p.master = p.value;
    p.value = ops::to_dtype(p.master, DType::bfloat16);
  }
}

void refresh_from_master(Parameter& param) {
  if (param.master.defined()) ops::convert_into(param.value, param.master);
}

Tensor& master_of(Parameter& param) { return param.master.defined() ? param.master : param.value; }
const Tensor& master_of(const Parameter& param) { return param.master.defined() ? param.master : param.value; }

void zero_grads(Layer& layer) {
  for (auto& p : layer.parameters())
    if (p.grad.defined()) ops::fill(p.grad, 0.0f);
}

LayerFactory::~LayerFactory() = default;

ParameterLayer::ParameterLayer(const LayerDescription& description, Device device) {
  for (const auto& spec : description.params)
    params_.push_back(Parameter{spec, Tensor::zeros(spec.shape, DType::float32, device), Tensor(), Tensor()});
}

Parameter& ParameterLayer::param(const std::string& name) {
  for (auto& p : params_)
    if (p.spec.name == name) return p;
  throw Error("layer has no parameter '" + name + "'");
}

}  // namespace libpipe

// Optimizer state and steps (see optimizer.hpp); the math is in the backend.
// Under mixed precision it updates the float32 master weights and rounds them
// into the bfloat16 values the layers compute with.
#include "pipe/optimizer.hpp"

#include <set>

#include "pipe/error.hpp"
#include "pipe/ops.hpp"

namespace libpipe {

Optimizer::Optimizer(const OptimizerConfig& config, const std::vector<Parameter*>& params) : config_(config) {
  if (config_.kind != "adamw" && config_.kind != "sgd")
    throw Error("unknown optimizer '" + config_.kind + "' (expected adamw or sgd)");
  std::set<const void*> seen;
  for (Parameter* p : params) {
    if (!p->grad.defined()) throw Error("optimizer: parameter '" + p->spec.name + "' has no gradient allocated");
    if (!seen.insert(p->value.data()).second) continue;  // a tied parameter already listed
    Slot slot{p, Tensor::zeros(p->value.shape(), DType::float32, p->value.device()), Tensor(),
              p->value.shape().size() >= 2};
    if (config_.kind == "adamw") slot.v = Tensor::zeros(p->value.shape(), DType::float32, p->value.device());
    slots_.push_back(std::move(slot));
  }
}

void Optimizer::step(float lr) {
  ++steps_;
  if (config_.kind == "adamw") {  // every tensor in one call: a device fuses them into a few launches
    std::vector<ops::AdamwParam> all;
    for (auto& s : slots_) {
      Parameter& p = *s.param;
      all.push_back({&master_of(p), &p.grad, &s.m, &s.v, p.master.defined() ? &p.value : nullptr,
                     s.decay ? config_.weight_decay : 0.0f});
    }
    ops::adamw_multi(all, lr, config_.beta1, config_.beta2, config_.eps, steps_);
    return;
  }
  for (auto& s : slots_) {
    ops::sgd_momentum(master_of(*s.param), s.param->grad, s.m, lr, config_.momentum,
                      s.decay ? config_.weight_decay : 0.0f);
    refresh_from_master(*s.param);
  }
}

Optimizer::State Optimizer::state_of(const Parameter& param) {
  for (auto& s : slots_)
    if (s.param->value.data() == param.value.data()) return State{&s.m, s.v.defined() ? &s.v : nullptr};
  throw Error("the optimizer does not update parameter '" + param.spec.name + "'");
}

std::vector<Parameter*> parameters_of(const std::vector<Layer*>& layers) {
  std::vector<Parameter*> out;
  for (Layer* layer : layers)
    for (auto& p : layer->parameters()) out.push_back(&p);
  return out;
}

namespace {
Parameter& tieable(Layer& layer) {
  for (auto& p : layer.parameters())
    if (p.spec.tieable) return p;
  throw Error("share_tied_parameter: a layer in the tie group has no tieable parameter");
}
}  // namespace

void share_tied_parameter(const std::vector<Layer*>& tied) {
  if (tied.size() < 2) return;
  Parameter& owner = tieable(*tied.front());
  for (std::size_t i = 1; i < tied.size(); ++i) {
    Parameter& p = tieable(*tied[i]);
    if (p.value.shape() != owner.value.shape())
      throw Error("share_tied_parameter: shapes " + shape_str(p.value.shape()) + " and " +
                  shape_str(owner.value.shape()) + " differ");
    p.value = owner.value;
    p.grad = owner.grad;
  }
}

}  // namespace libpipe

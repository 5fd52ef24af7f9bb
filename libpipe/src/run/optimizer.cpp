// Optimizer state and steps (see optimizer.hpp); the math is in the backend.
// Under mixed precision it updates the float32 master weights and rounds them
// into the bfloat16 values the layers compute with.
#include "pipe/optimizer.hpp"

#include <set>

#include "pipe/error.hpp"
#include "pipe/ops.hpp"

namespace libpipe {

Tensor shard_view(Tensor& t, const ShardRange& range) {
  if (range.begin == 0 && range.end == t.numel()) return t;
  if (range.begin < 0 || range.end > t.numel() || range.begin > range.end)
    throw Error("shard_view: elements [" + std::to_string(range.begin) + ", " + std::to_string(range.end) +
                ") of a tensor of " + std::to_string(t.numel()));
  auto* base = static_cast<unsigned char*>(t.data()) + static_cast<std::size_t>(range.begin) * dtype_size(t.dtype());
  return Tensor::borrow(base, {range.size()}, t.dtype(), t.device());
}

Optimizer::Optimizer(const OptimizerConfig& config, const std::vector<Parameter*>& params, int shard_rank,
                     int shard_count)
    : config_(config), shard_rank_(shard_rank), shard_count_(shard_count) {
  if (config_.kind != "adamw" && config_.kind != "sgd")
    throw Error("unknown optimizer '" + config_.kind + "' (expected adamw or sgd)");
  std::set<const void*> seen;
  for (Parameter* p : params) {
    if (!p->grad.defined()) throw Error("optimizer: parameter '" + p->spec.name + "' has no gradient allocated");
    if (!seen.insert(p->value.data()).second) continue;  // a tied parameter already listed
    const ShardRange shard = shard_range(p->value.numel(), shard_count_, shard_rank_);
    const Shape shape = sharded() ? Shape{shard.size()} : p->value.shape();
    Slot slot{p, Tensor::zeros(shape, DType::float32, p->value.device()), Tensor(), p->value.shape().size() >= 2,
              shard, Tensor()};
    if (config_.kind == "adamw") slot.v = Tensor::zeros(shape, DType::float32, p->value.device());
    if (sharded() && p->master.defined()) {  // ZeRO-1 under bf16: keep only this rank's slice of the master
      slot.master = ops::clone(shard_view(p->master, shard));
      p->master = Tensor();
    }
    slots_.push_back(std::move(slot));
  }
}

void Optimizer::step(float lr) {
  ++steps_;
  // Views of the slice each slot updates (the whole tensors unless sharded); kept alive through the call.
  std::vector<Tensor> masters, grads, values;
  masters.reserve(slots_.size()), grads.reserve(slots_.size()), values.reserve(slots_.size());
  for (auto& s : slots_) {
    Parameter& p = *s.param;
    const bool mixed = s.master.defined() || p.master.defined();  // value is the bfloat16 rounding of a master
    masters.push_back(s.master.defined() ? s.master : shard_view(master_of(p), s.shard));
    grads.push_back(shard_view(p.grad, s.shard));
    values.push_back(mixed ? shard_view(p.value, s.shard) : Tensor());
  }
  if (config_.kind == "adamw") {  // every tensor in one call: a device fuses them into a few launches
    std::vector<ops::AdamwParam> all;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.shard.size() == 0) continue;
      all.push_back({&masters[i], &grads[i], &s.m, &s.v, values[i].defined() ? &values[i] : nullptr,
                     s.decay ? config_.weight_decay : 0.0f});
    }
    ops::adamw_multi(all, lr, config_.beta1, config_.beta2, config_.eps, steps_);
    return;
  }
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.shard.size() == 0) continue;
    ops::sgd_momentum(masters[i], grads[i], s.m, lr, config_.momentum, s.decay ? config_.weight_decay : 0.0f);
    if (values[i].defined()) ops::convert_into(values[i], masters[i]);  // the slice's bfloat16 rounding
  }
}

ShardRange Optimizer::shard_of(const Parameter& param) const { return slot_of(param).shard; }

std::int64_t Optimizer::unsharded_state_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& s : slots_) bytes += s.param->value.numel() * 4 * (s.v.defined() ? 2 : 1);
  return bytes;
}

std::int64_t Optimizer::state_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& s : slots_) bytes += static_cast<std::int64_t>(s.m.bytes() + (s.v.defined() ? s.v.bytes() : 0));
  return bytes;
}

std::int64_t Optimizer::master_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& s : slots_)
    bytes += static_cast<std::int64_t>(s.master.defined() ? s.master.bytes() : s.param->master.bytes());
  return bytes;
}

std::int64_t Optimizer::unsharded_master_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& s : slots_)
    if (s.master.defined() || s.param->master.defined()) bytes += s.param->value.numel() * 4;
  return bytes;
}

const Optimizer::Slot& Optimizer::slot_of(const Parameter& param) const {
  for (const auto& s : slots_)
    if (s.param->value.data() == param.value.data()) return s;
  throw Error("the optimizer does not update parameter '" + param.spec.name + "'");
}

Optimizer::Slot& Optimizer::slot_of(const Parameter& param) {
  return const_cast<Slot&>(static_cast<const Optimizer*>(this)->slot_of(param));
}

Optimizer::State Optimizer::state_of(const Parameter& param) {
  Slot& s = slot_of(param);
  return State{&s.m, s.v.defined() ? &s.v : nullptr};
}

Tensor* Optimizer::master_slice(const Parameter& param) {
  Slot& s = slot_of(param);
  return s.master.defined() ? &s.master : nullptr;
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

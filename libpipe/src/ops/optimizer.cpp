// Optimizer updates as ops: SGD with momentum, AdamW, fused multi-tensor AdamW
// (kernels: cpu/optimizer.cpp, cuda/optimizer.cu).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- optimizers

void sgd_momentum(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, float lr, float momentum,
                  float weight_decay) {
  const char* op = "sgd_momentum";
  require_f32(op, "param", param);
  require_f32(op, "grad", grad);
  require_f32(op, "momentum_buffer", momentum_buffer);
  require_same_shape(op, "param", param, "grad", grad);
  require_same_shape(op, "param", param, "momentum_buffer", momentum_buffer);
  Backend& be = backend_of(op, {{"param", &param}, {"grad", &grad}, {"momentum_buffer", &momentum_buffer}});
  be.sgd_momentum(f32(param), f32(grad), f32(momentum_buffer), param.numel(), lr, momentum, weight_decay);
}

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1, float beta2, float eps,
           float weight_decay, std::int64_t step) {
  const char* op = "adamw";
  require_f32(op, "param", param);
  require_f32(op, "grad", grad);
  require_f32(op, "m", m);
  require_f32(op, "v", v);
  require_same_shape(op, "param", param, "grad", grad);
  require_same_shape(op, "param", param, "m", m);
  require_same_shape(op, "param", param, "v", v);
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  Backend& be = backend_of(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  be.adamw(f32(param), f32(grad), f32(m), f32(v), param.numel(), lr, beta1, beta2, eps, weight_decay, step);
}

void adamw_multi(const std::vector<AdamwParam>& params, float lr, float beta1, float beta2, float eps,
                 std::int64_t step) {
  const char* op = "adamw_multi";
  if (params.empty()) return;
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  std::vector<Backend::AdamwTensor> tensors;
  for (const AdamwParam& p : params) {
    require_f32(op, "param", *p.param);
    require_f32(op, "grad", *p.grad);
    require_f32(op, "m", *p.m);
    require_f32(op, "v", *p.v);
    require_same_shape(op, "param", *p.param, "grad", *p.grad);
    require_same_shape(op, "param", *p.param, "m", *p.m);
    require_same_shape(op, "param", *p.param, "v", *p.v);
    const Tensor& first = *params.front().param;
    if (p.bf16_copy != nullptr) {
      require_dtype(op, "bf16_copy", *p.bf16_copy, DType::bfloat16);
      require_same_shape(op, "param", *p.param, "bf16_copy", *p.bf16_copy);
      backend_of(op, {{"the first param", &first}, {"bf16_copy", p.bf16_copy}});
    }
    backend_of(op, {{"the first param", &first}, {"param", p.param}, {"grad", p.grad}, {"m", p.m}, {"v", p.v}});
    tensors.push_back({f32(*p.param), f32(*p.grad), f32(*p.m), f32(*p.v),
                       p.bf16_copy != nullptr ? p.bf16_copy->bf16() : nullptr, p.param->numel(), p.weight_decay});
  }
  backend_for(params.front().param->device())
      .adamw_multi(tensors.data(), static_cast<int>(tensors.size()), lr, beta1, beta2, eps, step);
}

}  // namespace libpipe::ops

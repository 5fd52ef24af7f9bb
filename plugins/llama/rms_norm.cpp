// RMSNorm over the last dimension with a learned scale and no shift
// (Hugging Face's LlamaRMSNorm): y = x / sqrt(mean(x^2) + eps) * weight,
// computed in float32. C comes from the input, as for LayerNorm.
#include <pipe/ops.hpp>
#include <sstream>

#include "llama_layers.hpp"

namespace pipe_llama {

float read_eps(const libpipe::Args& args) {
  const double eps = args.get_float("eps", 1e-5);
  if (!(eps > 0.0)) {  // a zero eps divides by zero on an all-zero row; a negative one is a typo
    std::ostringstream message;
    message << "argument 'eps' must be positive, not " << eps;
    throw libpipe::ArgError("eps", message.str());
  }
  return static_cast<float>(eps);
}

namespace {

// ctx.saved: {x, rstd}.
class RmsNormLayer : public LlamaLayer {
 public:
  RmsNormLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, float eps,
               libpipe::Device device)
      : LlamaLayer("RMSNorm", description, input, device), eps_(eps) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    libpipe::Tensor rstd;
    libpipe::Tensor y = libpipe::ops::rms_norm(x, param("weight").value, eps_, rstd);
    ctx.saved = {x, rstd};
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 2, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::ops::rms_norm_backward_input(dy, s[0], param("weight").value, s[1]);
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 2, "backward_weight");
    check_output_grad(dy, s[0].shape()[0], "backward_weight");
    libpipe::ops::rms_norm_backward_weight(dy, s[0], s[1], grad("weight"));
  }

 private:
  float eps_;
};

class RmsNormFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "RMSNorm(eps=1e-5): y = x / sqrt(mean(x^2) + eps) * weight over the last dim";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    read_eps(args);  // validated here so that a bad eps fails at planning time
    if (input.dtype != libpipe::DType::float32 || input.shape.empty() || input.shape.back() == 0)
      throw libpipe::ShapeError("float32[*, C]");
    const Count channels = input.shape.back();
    const Count n = libpipe::numel(input.shape);
    const Count rows = Count(n.value() / channels.value());

    libpipe::LayerDescription d;
    d.output = input;
    d.params.push_back({"weight", {channels.value()}});
    d.flops = (Count(kRmsNormFlopsPerElement) * n).value();
    // Backward needs the input and each row's 1/rms.
    d.activation_bytes = ((n + rows) * kElementBytes).value();
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    auto layer = std::make_unique<RmsNormLayer>(describe(args, input), input, read_eps(args), context.device);
    libpipe::fill_constant(layer->param("weight").value, 1.0f);
    return layer;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_rms_norm_factory() { return std::make_unique<RmsNormFactory>(); }

}  // namespace pipe_llama

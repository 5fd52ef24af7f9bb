// A user's layer plugin, built the way anyone outside the project builds one:
// "Scale" multiplies its input by a learned per-channel gain. Its math is plain
// loops over host memory, so it runs on the CPU only; a layer meant for every
// device calls the ops of <pipe/ops.hpp> instead.
#include <pipe/error.hpp>
#include <pipe/init.hpp>
#include <pipe/plugin.hpp>

namespace {

using libpipe::Tensor;

// y[r, c] = x[r, c] * gain[c] over rows r of the flattened leading dimensions.
class ScaleLayer : public libpipe::ParameterLayer {
 public:
  using ParameterLayer::ParameterLayer;

  Tensor forward(libpipe::LayerContext& ctx, const Tensor& x) override {
    const std::int64_t channels = param("gain").value.numel();
    if (x.dtype() != libpipe::DType::float32 || x.shape().size() < 2 || x.shape().back() != channels)
      throw libpipe::Error("Scale: input " + libpipe::type_str({x.shape(), x.dtype()}) + " does not end in " +
                           std::to_string(channels) + " float32 channels");
    ctx.saved = {x};  // the gain's gradient needs x
    return times_gain(x);
  }

  // dx = dy * gain: the same per-channel product as forward.
  Tensor backward_input(libpipe::LayerContext&, const Tensor& dy) override { return times_gain(dy); }

  // dgain[c] += sum over rows of dy * x.
  void backward_weight(libpipe::LayerContext& ctx, const Tensor& dy) override {
    Tensor x = ctx.saved.at(0), d = dy;  // copies share storage: host_data needs non-const tensors
    const float* xp = x.host_data<float>();
    const float* dp = d.host_data<float>();
    float* grad = param("gain").grad.host_data<float>();
    const std::int64_t channels = param("gain").value.numel();
    for (std::int64_t i = 0; i < x.numel(); ++i) grad[i % channels] += dp[i] * xp[i];
  }

 private:
  Tensor times_gain(Tensor in) {
    Tensor out = Tensor::empty(in.shape(), libpipe::DType::float32, in.device());
    const float* ip = in.host_data<float>();
    float* op = out.host_data<float>();
    const float* gain = param("gain").value.host_data<float>();
    const std::int64_t channels = param("gain").value.numel();
    for (std::int64_t i = 0; i < in.numel(); ++i) op[i] = ip[i] * gain[i % channels];
    return out;
  }
};

class ScaleFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override { return "Scale(init=1.0): y = x * gain (per channel)"; }
  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    args.get_float("init", 1.0);
    if (input.dtype != libpipe::DType::float32 || input.shape.empty()) throw libpipe::ShapeError("float32[*, C]");
    libpipe::LayerDescription d;
    d.output = input;
    d.params = {{"gain", {input.shape.back()}, false}};
    d.flops = 3 * libpipe::numel(input.shape);
    d.activation_bytes = 4 * libpipe::numel(input.shape);
    return d;
  }
  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    auto layer = std::make_unique<ScaleLayer>(describe(args, input), context.device);
    libpipe::fill_constant(layer->param("gain").value, static_cast<float>(args.get_float("init", 1.0)));
    return layer;
  }
};

}  // namespace

PIPE_PLUGIN(registry) { registry.add("Scale", std::make_unique<ScaleFactory>()); }

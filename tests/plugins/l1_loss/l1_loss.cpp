// A user's loss, shipped by a plugin: "L1Loss" is the mean absolute error per
// sample, loss[b] = mean |x - target|. Nothing in libpipe knows its name: its
// description declares it a loss and names the labels it takes (float32
// targets shaped like its input), and the engine, the data sources and
// profiling read that. Plain loops over host memory: CPU only.
#include <cmath>
#include <pipe/error.hpp>
#include <pipe/plugin.hpp>

namespace {

using libpipe::Tensor;

class L1LossLayer : public libpipe::ParameterLayer {
 public:
  using ParameterLayer::ParameterLayer;

  Tensor forward(libpipe::LayerContext& ctx, const Tensor& x) override {
    if (x.dtype() != libpipe::DType::float32 || ctx.labels.shape() != x.shape() ||
        ctx.labels.dtype() != libpipe::DType::float32)
      throw libpipe::Error("L1Loss: input " + libpipe::type_str({x.shape(), x.dtype()}) + " and targets " +
                           libpipe::type_str({ctx.labels.shape(), ctx.labels.dtype()}) +
                           " must be float32 of one shape");
    ctx.saved = {x, ctx.labels};
    Tensor in = x, target = ctx.labels;  // copies share storage: host_data needs non-const tensors
    const std::int64_t batch = x.shape()[0], per_sample = x.numel() / batch;
    Tensor loss = Tensor::zeros({batch}, libpipe::DType::float32, x.device());
    for (std::int64_t b = 0; b < batch; ++b) {
      double sum = 0;
      for (std::int64_t i = b * per_sample; i < (b + 1) * per_sample; ++i)
        sum += std::fabs(in.host_data<float>()[i] - target.host_data<float>()[i]);
      loss.host_data<float>()[b] = static_cast<float>(sum / static_cast<double>(per_sample));
    }
    return loss;
  }

  // dx = sign(x - target) / per_sample * dloss[b]
  Tensor backward_input(libpipe::LayerContext& ctx, const Tensor& dy) override {
    Tensor x = ctx.saved.at(0), target = ctx.saved.at(1), dloss = dy;
    const std::int64_t batch = x.shape()[0], per_sample = x.numel() / batch;
    Tensor dx = Tensor::zeros(x.shape(), libpipe::DType::float32, x.device());
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const float diff = x.host_data<float>()[i] - target.host_data<float>()[i];
      const float sign = diff > 0 ? 1.0f : diff < 0 ? -1.0f : 0.0f;
      dx.host_data<float>()[i] = sign / static_cast<float>(per_sample) * dloss.host_data<float>()[i / per_sample];
    }
    return dx;
  }

  void backward_weight(libpipe::LayerContext&, const Tensor&) override {}  // no parameters
};

class L1LossFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override { return "L1Loss(): loss = mean |x - target|, target float32 of x's shape"; }
  libpipe::LayerDescription describe(const libpipe::Args&, const libpipe::TensorType& input) const override {
    if (input.dtype != libpipe::DType::float32) throw libpipe::ShapeError("float32[*]");
    libpipe::LayerDescription d;
    d.output = {{}, libpipe::DType::float32};  // one loss per sample
    d.flops = 4 * libpipe::numel(input.shape);
    d.activation_bytes = 4 * libpipe::numel(input.shape);
    d.loss = libpipe::LossLabels{input, 0};  // float32 targets shaped like the input
    return d;
  }
  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<L1LossLayer>(describe(args, input), context.device);
  }
};

}  // namespace

PIPE_PLUGIN(registry) { registry.add("L1Loss", std::make_unique<L1LossFactory>()); }

// A user's layer plugin, built the way anyone outside the project builds one:
// "Scale" multiplies its input by a learned per-channel gain.
#include <pipe/error.hpp>
#include <pipe/init.hpp>
#include <pipe/plugin.hpp>

namespace {

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
    auto layer = std::make_unique<libpipe::ParameterLayer>(describe(args, input), context.device);
    libpipe::fill_constant(layer->param("gain").value, static_cast<float>(args.get_float("init", 1.0)));
    return layer;
  }
};

}  // namespace

PIPE_PLUGIN(registry) { registry.add("Scale", std::make_unique<ScaleFactory>()); }

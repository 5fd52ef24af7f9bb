// Registers a type named "Twice", which the core plugin already provides.
#include <pipe/plugin.hpp>

namespace {
// Identity: these plugins exist for their registration, not their math.
class Identity : public libpipe::ParameterLayer {
 public:
  using ParameterLayer::ParameterLayer;
  libpipe::Tensor forward(libpipe::LayerContext&, const libpipe::Tensor& x) override { return x; }
  libpipe::Tensor backward_input(libpipe::LayerContext&, const libpipe::Tensor& dy) override { return dy; }
  void backward_weight(libpipe::LayerContext&, const libpipe::Tensor&) override {}
};

class NoLayers : public libpipe::LayerFactory {
 public:
  std::string summary() const override { return "a clash"; }
  libpipe::LayerDescription describe(const libpipe::Args&, const libpipe::TensorType& input) const override {
    libpipe::LayerDescription d;
    d.output = input;
    return d;
  }
  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<Identity>(describe(args, input), context.device);
  }
};
}  // namespace

PIPE_PLUGIN(registry) { registry.add("Twice", std::make_unique<NoLayers>()); }

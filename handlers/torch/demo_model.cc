#include "handlers/torch/demo_model.h"

#include <cmath>

#include "handlers/torch/torch_handler.h"

namespace model_server::handlers {
namespace {

// Deterministic weights of scale 1/sqrt(fan_in), the same on every libtorch version.
torch::Tensor FixedWeights(int64_t fan_in, int64_t fan_out, double phase) {
  torch::Tensor position =
      torch::arange(fan_in * fan_out, torch::kFloat).reshape({fan_in, fan_out});
  return torch::sin(position * 0.7 + phase) / std::sqrt(static_cast<double>(fan_in));
}

}  // namespace

torch::jit::Module MakeDemoModel(int64_t hidden) {
  torch::jit::Module module("DemoMLP");
  module.register_parameter("w1", FixedWeights(3, hidden, 0.1), false);
  module.register_parameter("b1", FixedWeights(1, hidden, 0.2).reshape({hidden}), false);
  module.register_parameter("w2", FixedWeights(hidden, hidden, 0.3), false);
  module.register_parameter("b2", FixedWeights(1, hidden, 0.4).reshape({hidden}), false);
  module.register_parameter("w3", FixedWeights(hidden, 4, 0.5), false);
  module.register_parameter("b3", FixedWeights(1, 4, 0.6).reshape({4}), false);
  module.register_attribute("input_var_order", c10::ListType::ofStrings(),
                            c10::List<std::string>({"x_1", "x_2", "x_3"}));
  module.register_attribute("output_var_order", c10::ListType::ofStrings(),
                            c10::List<std::string>({"y_1"}));
  module.register_attribute("default_params", c10::ListType::ofFloats(),
                            c10::List<double>({0.1, 0.2, 0.3, 0.4, 0.5}));
  // params[:, 0] is the final layer's bias and params[:, 1:5] its weights, per row, so rows of
  // requests with different parameters share one forward pass.
  module.define(R"JIT(
def forward(self, x: Tensor, params: Tensor) -> Tensor:
    h = torch.tanh(torch.addmm(self.b1, x, self.w1))
    h = torch.tanh(torch.addmm(self.b2, h, self.w2))
    h = torch.tanh(torch.addmm(self.b3, h, self.w3))
    return params[:, 0:1] + (h * params[:, 1:5]).sum(dim=1, keepdim=True)
)JIT");
  module.eval();
  return module;
}

absl::Status ExportDemoModel(const std::string& path, int64_t hidden) {
  try {
    MakeDemoModel(hidden).save(path);
  } catch (const c10::Error& error) {
    return absl::InternalError("cannot write the demo model to " + path + ": " +
                               error.what_without_backtrace());
  }
  return absl::OkStatus();
}

}  // namespace model_server::handlers

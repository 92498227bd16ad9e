// The demo model on a GPU, in every precision, against the CPU's answers. Its own executable
// with its own main: without a CUDA device visible to libtorch it exits with kSkipped, which
// ctest reports as skipped (SKIP_RETURN_CODE in test/CMakeLists.txt), never as passed.

#include "handlers/torch/torch_handler.h"

// torch (through glog) defines CHECK; include it first and give the name to Catch.
#include <torch/cuda.h>
#undef CHECK
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cmath>
#include <iostream>

#include "test/handlers/torch/run_rows.h"

namespace model_server::handlers {
namespace {

TEST_CASE("on a GPU the demo model gives the CPU's answers in every precision", "[torch][gpu]") {
  TorchHandlerOptions cpu_options;
  cpu_options.device = "cpu";
  std::unique_ptr<ModelHandler> cpu = MakeTorchHandler(cpu_options);
  REQUIRE(cpu->Initialize().ok());
  std::vector<float> inputs;
  for (int i = 0; i < 300; ++i) inputs.push_back(static_cast<float>(std::sin(i * 0.37)));
  const std::vector<float> params = {0.3f, -1, 2, 0.5f, 1.5f};
  const std::vector<float> expected = RunRows(*cpu, inputs, params);
  for (const auto& [precision, tolerance] : std::vector<std::pair<std::string, float>>{
           {"fp32", 1e-4f}, {"fp16", 2e-2f}, {"bf16", 5e-2f}}) {
    INFO("precision " << precision);
    TorchHandlerOptions options;
    options.device = "cuda";
    options.precision = precision;
    std::unique_ptr<ModelHandler> gpu = MakeTorchHandler(options);
    REQUIRE(gpu->Initialize().ok());
    const std::vector<float> served = RunRows(*gpu, inputs, params);
    REQUIRE(served.size() == expected.size());
    for (size_t i = 0; i < served.size(); ++i) {
      CHECK(served[i] == Approx(expected[i]).margin(tolerance));
    }
  }
}

}  // namespace
}  // namespace model_server::handlers

// ctest's SKIP_RETURN_CODE for this executable.
constexpr int kSkipped = 77;

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::cout << "SKIPPED: no CUDA device visible to libtorch" << std::endl;
    return kSkipped;
  }
  return Catch::Session().run(argc, argv);
}

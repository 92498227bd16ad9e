#include "handlers/torch/torch_handler.h"

// torch (through glog) defines CHECK; include it first and give the name to Catch.
#include <torch/cuda.h>
#include <torch/script.h>
#undef CHECK
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "handlers/torch/demo_model.h"
#include "test/handlers/torch/run_rows.h"

namespace model_server::handlers {
namespace {

// A fresh file path under the system's temporary folder, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("torch_handler_test_" + std::to_string(::getpid()) + "_" + name)) {}
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Saves a module whose forward is `source` (TorchScript), with attributes set by `setup`.
std::string SaveModel(const TempFile& file, const std::string& source,
                      const std::function<void(torch::jit::Module&)>& setup = {}) {
  torch::jit::Module module("TestModel");
  if (setup) setup(module);
  module.define(source);
  module.save(file.path());
  return file.path();
}

void DeclareInputs(torch::jit::Module& module, std::vector<std::string> names) {
  module.register_attribute("input_var_order", c10::ListType::ofStrings(),
                            c10::List<std::string>(names));
}

std::unique_ptr<ModelHandler> Handler(const std::string& path, int64_t max_batch_rows = 64) {
  TorchHandlerOptions options;
  options.model_path = path;
  options.device = "cpu";
  options.max_batch_rows = max_batch_rows;
  return MakeTorchHandler(options);
}

TEST_CASE("the demo model declares its signature and matches its own forward", "[torch]") {
  std::unique_ptr<ModelHandler> handler = MakeTorchHandler({});
  REQUIRE(handler->Initialize().ok());
  const ModelSignature& signature = handler->signature();
  CHECK(signature.input_names == std::vector<std::string>{"x_1", "x_2", "x_3"});
  CHECK(signature.output_names == std::vector<std::string>{"y_1"});
  CHECK(signature.num_inputs == 3);
  CHECK(signature.num_outputs == 1);
  CHECK(signature.num_params == 5);
  CHECK(signature.default_params == std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f, 0.5f});

  const std::vector<float> inputs = {0.5f, -1, 2, 3, 0.25f, -0.75f};
  const std::vector<float> params = {0.3f, -1, 2, 0.5f, 1.5f};
  const std::vector<float> served = RunRows(*handler, inputs, params);
  torch::jit::Module reference = MakeDemoModel(32);
  const torch::Tensor x = torch::tensor(inputs).reshape({2, 3});
  const torch::Tensor p = torch::tensor(params).reshape({1, 5}).expand({2, 5});
  const torch::Tensor expected = reference.forward({x, p}).toTensor();
  REQUIRE(served.size() == 2);
  CHECK(served[0] == Approx(expected[0][0].item<float>()).margin(1e-6));
  CHECK(served[1] == Approx(expected[1][0].item<float>()).margin(1e-6));
  // Different parameters give different answers: they reach the final layer.
  CHECK(RunRows(*handler, inputs, {0, 0, 0, 0, 0}) == std::vector<float>{0, 0});
  handler->Cleanup();
}

TEST_CASE("an exported demo model loads and serves the same answers", "[torch]") {
  TempFile file("demo.pt");
  REQUIRE(ExportDemoModel(file.path(), 32).ok());
  std::unique_ptr<ModelHandler> exported = Handler(file.path());
  REQUIRE(exported->Initialize().ok());
  std::unique_ptr<ModelHandler> builtin = MakeTorchHandler({});
  REQUIRE(builtin->Initialize().ok());
  const std::vector<float> inputs = {1, 2, 3};
  const std::vector<float> params = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  CHECK(RunRows(*exported, inputs, params) == RunRows(*builtin, inputs, params));
  CHECK(exported->signature().default_params == builtin->signature().default_params);
}

TEST_CASE("a one-input model with two output columns", "[torch]") {
  TempFile file("one_input.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return torch.stack([x.sum(dim=1), x[:, 0] * 2.0], dim=1)
)",
            [](torch::jit::Module& m) {
              DeclareInputs(m, {"a", "b"});
            });
  std::unique_ptr<ModelHandler> handler = Handler(file.path());
  REQUIRE(handler->Initialize().ok());
  CHECK(handler->signature().num_params == 0);
  CHECK(handler->signature().num_outputs == 2);
  CHECK(RunRows(*handler, {1, 2, 3, 4}, {}) == std::vector<float>{3, 2, 7, 6});
}

TEST_CASE("a forward that throws fails that run only", "[torch]") {
  TempFile file("checked.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    assert not bool(torch.any(x > 100.0)), "input above 100"
    return x * 2.0
)",
            [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
  std::unique_ptr<ModelHandler> handler = Handler(file.path());
  REQUIRE(handler->Initialize().ok());
  BatchBuffers buffers = handler->PrepareBatch(1);
  buffers.inputs[0] = 1000;
  absl::StatusOr<const float*> failed = handler->Run();
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(failed.status().message()), Catch::Contains("input above 100"));
  CHECK(RunRows(*handler, {4}, {}) == std::vector<float>{8});
}

TEST_CASE("bad model files are refused with a clear message", "[torch]") {
  auto error_of = [](const std::string& path) {
    std::unique_ptr<ModelHandler> handler = Handler(path);
    const absl::Status status = handler->Initialize();
    REQUIRE_FALSE(status.ok());
    return std::string(status.message());
  };

  SECTION("missing") {
    CHECK_THAT(error_of("/nonexistent/model.pt"),
               Catch::Contains("/nonexistent/model.pt") && Catch::Contains("does not exist"));
  }
  SECTION("corrupt") {
    TempFile file("corrupt.pt");
    std::ofstream(file.path()) << "this is not a TorchScript archive";
    CHECK_THAT(error_of(file.path()), Catch::Contains("cannot load TorchScript model"));
  }
  SECTION("forward takes three tensors") {
    TempFile file("three.pt");
    SaveModel(file, R"(
def forward(self, x: Tensor, p: Tensor, q: Tensor) -> Tensor:
    return x
)",
              [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
    CHECK_THAT(error_of(file.path()), Catch::Contains("must take (x) or (x, params)"));
  }
  SECTION("input width unknown") {
    TempFile file("no_inputs.pt");
    SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return x
)");
    CHECK_THAT(error_of(file.path()), Catch::Contains("neither input_var_order"));
  }
  SECTION("params without a declared length") {
    TempFile file("no_params.pt");
    SaveModel(file, R"(
def forward(self, x: Tensor, p: Tensor) -> Tensor:
    return x + p
)",
              [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
    CHECK_THAT(error_of(file.path()), Catch::Contains("neither default_params"));
  }
  SECTION("output not one row per input row") {
    TempFile file("scalar.pt");
    SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return x.sum()
)",
              [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
    CHECK_THAT(error_of(file.path()),
               Catch::Contains("warm-up forward") && Catch::Contains("expected ["));
  }
}

TEST_CASE("bf16 precision computes in bfloat16 and answers in float32", "[torch]") {
  TorchHandlerOptions options;
  options.device = "cpu";
  std::unique_ptr<ModelHandler> fp32 = MakeTorchHandler(options);
  REQUIRE(fp32->Initialize().ok());
  options.precision = "bf16";
  std::unique_ptr<ModelHandler> bf16 = MakeTorchHandler(options);
  REQUIRE(bf16->Initialize().ok());
  const std::vector<float> inputs = {0.5f, -1, 2, 3, 0.25f, -0.75f};
  const std::vector<float> params = {0.3f, -1, 2, 0.5f, 1.5f};
  const std::vector<float> exact = RunRows(*fp32, inputs, params);
  const std::vector<float> approximate = RunRows(*bf16, inputs, params);
  REQUIRE(approximate.size() == exact.size());
  for (size_t i = 0; i < exact.size(); ++i) {
    CHECK(approximate[i] == Approx(exact[i]).margin(5e-2));
  }
  CHECK(approximate != exact);  // it really computed in bfloat16
}

TEST_CASE("devices are resolved or refused", "[torch]") {
  TorchHandlerOptions options;
  options.device = "tpu:7";
  CHECK(MakeTorchHandler(options)->Initialize().code() == absl::StatusCode::kInvalidArgument);
  options.device = "cpu";
  options.precision = "fp8";
  CHECK(MakeTorchHandler(options)->Initialize().code() == absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    options.device = "cuda";
    const absl::Status status = MakeTorchHandler(options)->Initialize();
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(status.message()), Catch::Contains("CUDA is not available"));
  }
}

}  // namespace
}  // namespace model_server::handlers

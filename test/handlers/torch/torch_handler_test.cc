#include "handlers/torch/torch_handler.h"

// torch (through glog) defines CHECK; include it first and give the name to Catch.
#include <torch/cuda.h>
#include <torch/script.h>
#undef CHECK
#include <ATen/Context.h>
#include <torch/version.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "handlers/batch_executor.h"
#include "handlers/fault.h"
#include "handlers/torch/demo_model.h"
#include "handlers/torch/torch_faults.h"
#include "handlers/torch/torch_signature.h"
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

std::unique_ptr<ModelHandler> Handler(const std::string& path, int64_t max_batch_rows = 64,
                                      std::optional<ModelSignature> signature = std::nullopt) {
  TorchHandlerOptions options;
  options.model_path = path;
  options.device = "cpu";
  options.max_batch_rows = max_batch_rows;
  options.signature = std::move(signature);
  return MakeTorchHandler(options);
}

// One input of a batch: its shape and elements.
struct Given {
  Dims shape;
  torch::Tensor values;  // of the input's type, contiguous
};

// Runs one batch through `handler`; returns its outputs as tensors (copied).
std::vector<torch::Tensor> RunBatch(ModelHandler& handler, const std::vector<Given>& inputs) {
  std::vector<Dims> shapes;
  for (const Given& input : inputs) shapes.push_back(input.shape);
  const std::vector<char*> buffers = handler.PrepareBatch(shapes);
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::memcpy(buffers[i], inputs[i].values.data_ptr(), inputs[i].values.nbytes());
  }
  absl::StatusOr<const std::vector<OutputTensor>*> outputs = handler.Run();
  REQUIRE(outputs.ok());
  std::vector<torch::Tensor> result;
  const ModelSignature& signature = handler.signature();
  for (size_t i = 0; i < (*outputs)->size(); ++i) {
    const OutputTensor& output = (**outputs)[i];
    CHECK(output.type == signature.outputs[i].type);
    std::vector<int64_t> shape(output.shape.begin(), output.shape.end());
    torch::Tensor copy = torch::empty(shape, torch::TensorOptions(TorchType(output.type)));
    std::memcpy(copy.data_ptr(), output.data, copy.nbytes());
    result.push_back(copy);
  }
  return result;
}

ModelSignature Declared(int64_t max_batch_size, std::vector<TensorSpec> inputs,
                        std::vector<TensorSpec> outputs) {
  ModelSignature signature;
  signature.max_batch_size = max_batch_size;
  signature.inputs = std::move(inputs);
  signature.outputs = std::move(outputs);
  return signature;
}

TEST_CASE("the demo model declares its signature and matches its own forward", "[torch]") {
  std::unique_ptr<ModelHandler> handler = MakeTorchHandler({});
  REQUIRE(handler->Initialize().ok());
  const ModelSignature& signature = handler->signature();
  CHECK(signature.seed->input_names == std::vector<std::string>{"x_1", "x_2", "x_3"});
  CHECK(signature.seed->output_names == std::vector<std::string>{"y_1"});
  CHECK(signature.seed->num_inputs == 3);
  CHECK(signature.seed->num_outputs == 1);
  CHECK(signature.seed->num_params == 5);
  CHECK(signature.seed->default_params == std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f, 0.5f});

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
  CHECK(exported->signature().seed->default_params == builtin->signature().seed->default_params);
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
  CHECK(handler->signature().seed->num_params == 0);
  CHECK(handler->signature().seed->num_outputs == 2);
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
  *reinterpret_cast<float*>(handler->PrepareBatch({{1, 1}})[0]) = 1000;
  absl::StatusOr<const std::vector<OutputTensor>*> failed = handler->Run();
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
    CHECK_THAT(error_of(file.path()),
               Catch::Contains("cannot read the type and size of forward argument \"x\"") &&
                   Catch::Contains("config.pbtxt"));
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
               Catch::Contains("must return one float tensor [rows, k] or [rows]"));
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

// An MLP over 4 features whose first layer is torch.addmm: its input is read from the file.
void DefineMlp(torch::jit::Module& module) {
  module.register_parameter("w", torch::arange(12, torch::kFloat).reshape({4, 3}) / 10, false);
  module.register_parameter("b", torch::tensor({0.5f, -0.5f, 1.0f}), false);
}

TEST_CASE("a plain model's inputs and outputs are read from its file", "[torch]") {
  TempFile file("plain_mlp.pt");
  SaveModel(file, R"(
def forward(self, features: Tensor) -> Tensor:
    return torch.relu(torch.addmm(self.b, features, self.w))
)",
            DefineMlp);
  std::unique_ptr<ModelHandler> handler = Handler(file.path(), /*max_batch_rows=*/8);
  const absl::Status initialized = handler->Initialize();
  INFO(initialized.message());
  REQUIRE(initialized.ok());
  const ModelSignature& signature = handler->signature();
  REQUIRE(signature.inputs.size() == 1);
  CHECK(signature.inputs[0].name == "features");
  CHECK(signature.inputs[0].type == DataType::kFp32);
  CHECK(signature.inputs[0].dims == Dims{4});
  REQUIRE(signature.outputs.size() == 1);
  CHECK(signature.outputs[0].name == "OUTPUT__0");
  CHECK(signature.outputs[0].dims == Dims{3});
  CHECK(signature.max_batch_size == 8);
  // One FP32 input of fixed width and one such output: the seed protocol can call it too.
  REQUIRE(signature.seed.has_value());
  CHECK(signature.seed->num_inputs == 4);
  CHECK(signature.seed->num_outputs == 3);

  const torch::Tensor x = torch::linspace(-1, 1, 8).reshape({2, 4});
  const std::vector<torch::Tensor> served = RunBatch(*handler, {{{2, 4}, x}});
  torch::jit::Module reference = torch::jit::load(file.path());
  CHECK(torch::allclose(served[0], reference.forward({x}).toTensor()));
}

TEST_CASE("a convolution's and an embedding's inputs are read from the file", "[torch]") {
  TempFile file("conv_embed.pt");
  SaveModel(file, R"(
def forward(self, image: Tensor, ids: Tensor) -> Tuple[Tensor, Tensor]:
    features = torch.conv2d(image, self.kernel, self.bias, 1, 1).mean(dim=[2, 3])
    return features, torch.embedding(self.table, ids).sum(dim=1)
)",
            [](torch::jit::Module& m) {
              m.register_parameter("kernel", torch::randn({5, 3, 3, 3}), false);
              m.register_parameter("bias", torch::randn({5}), false);
              m.register_parameter("table", torch::randn({10, 2}), false);
            });
  std::unique_ptr<ModelHandler> handler = Handler(file.path(), /*max_batch_rows=*/4);
  const absl::Status initialized = handler->Initialize();
  INFO(initialized.message());
  REQUIRE(initialized.ok());
  const ModelSignature& signature = handler->signature();
  REQUIRE(signature.inputs.size() == 2);
  CHECK(SpecText(signature.inputs[0], true) == "\"image\" FP32 [n, 3, -1, -1]");
  CHECK(SpecText(signature.inputs[1], true) == "\"ids\" INT64 [n, -1]");
  REQUIRE(signature.outputs.size() == 2);
  CHECK(SpecText(signature.outputs[0], true) == "\"OUTPUT__0\" FP32 [n, 5]");
  CHECK(SpecText(signature.outputs[1], true) == "\"OUTPUT__1\" FP32 [n, 2]");
  CHECK_FALSE(signature.seed.has_value());

  const torch::Tensor image = torch::randn({3, 3, 6, 5});
  const torch::Tensor ids = torch::tensor({1, 2, 3, 9, 0, 0}, torch::kLong).reshape({3, 2});
  const std::vector<torch::Tensor> served =
      RunBatch(*handler, {{{3, 3, 6, 5}, image}, {{3, 2}, ids}});
  const auto expected = torch::jit::load(file.path()).forward({image, ids}).toTupleRef().elements();
  CHECK(torch::allclose(served[0], expected[0].toTensor(), 1e-5, 1e-6));
  CHECK(torch::allclose(served[1], expected[1].toTensor(), 1e-5, 1e-6));
}

TEST_CASE("declared inputs bind by name or __index, outputs by __index or dict key", "[torch]") {
  TempFile file("two_inputs.pt");
  SaveModel(file, R"(
def forward(self, dense: Tensor, ids: Tensor) -> Dict[str, Tensor]:
    return {"score": torch.addmm(self.b, dense, self.w), "twice": ids * 2}
)",
            DefineMlp);
  const ModelSignature declared = Declared(
      16, {MakeSpec("ids", DataType::kInt64, {2}), MakeSpec("INPUT__0", DataType::kFp32, {4})},
      {MakeSpec("twice", DataType::kInt64, {2}), MakeSpec("score", DataType::kFp32, {3})});
  std::unique_ptr<ModelHandler> handler = Handler(file.path(), 64, declared);
  REQUIRE(handler->Initialize().ok());
  const torch::Tensor dense = torch::linspace(0, 1, 12).reshape({3, 4});
  const torch::Tensor ids =
      torch::tensor({int64_t{1}, int64_t{-2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{1} << 40},
                    torch::kLong)
          .reshape({3, 2});
  const std::vector<torch::Tensor> served = RunBatch(*handler, {{{3, 2}, ids}, {{3, 4}, dense}});
  CHECK(torch::equal(served[0], ids * 2));  // integers exactly
  CHECK(torch::allclose(served[1],
                        torch::addmm(torch::tensor({0.5f, -0.5f, 1.0f}), dense,
                                     torch::arange(12, torch::kFloat).reshape({4, 3}) / 10)));
}

TEST_CASE("a declaration that forward does not match is refused naming what differs", "[torch]") {
  TempFile file("mismatch.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
    y = torch.addmm(self.b, x, self.w)
    return y, y.sum(dim=1)
)",
            DefineMlp);
  const auto error_of = [&](const ModelSignature& declared) {
    const absl::Status status = Handler(file.path(), 64, declared)->Initialize();
    REQUIRE_FALSE(status.ok());
    return std::string(status.message());
  };
  const TensorSpec x = MakeSpec("INPUT__0", DataType::kFp32, {4});
  CHECK_THAT(error_of(Declared(8, {x},
                               {MakeSpec("OUTPUT__0", DataType::kFp32, {5}),
                                MakeSpec("OUTPUT__1", DataType::kFp32, {})})),
             Catch::Contains("output \"OUTPUT__0\" has shape [1, 3]; expected [1, 5]"));
  CHECK_THAT(error_of(Declared(8, {x},
                               {MakeSpec("OUTPUT__0", DataType::kFp32, {3}),
                                MakeSpec("OUTPUT__7", DataType::kFp32, {})})),
             Catch::Contains("no tensor 7 for output \"OUTPUT__7\""));
  CHECK_THAT(error_of(Declared(8, {MakeSpec("INPUT__1", DataType::kFp32, {4})},
                               {MakeSpec("OUTPUT__0", DataType::kFp32, {3})})),
             Catch::Contains("input \"INPUT__1\" binds to no argument of forward(x)"));
  CHECK_THAT(error_of(Declared(
                 8, {MakeSpec("z", DataType::kFp32, {4}), MakeSpec("w", DataType::kFp32, {4})},
                 {MakeSpec("OUTPUT__0", DataType::kFp32, {3})})),
             Catch::Contains("the config declares 2 inputs (\"z\", \"w\") for forward(x)"));
  CHECK_THAT(error_of(Declared(8, {MakeSpec("INPUT__0", DataType::kFp32, {5})},
                               {MakeSpec("OUTPUT__0", DataType::kFp32, {3})})),
             Catch::Contains("checking forward on 1 rows failed"));
}

TEST_CASE("inputs named neither as arguments nor __index bind by their declared order", "[torch]") {
  TempFile file("ordered.pt");
  SaveModel(file, R"(
def forward(self, a: Tensor, b: Tensor) -> Tensor:
    return a - 2.0 * b
)");
  // "in" is a Triton documentation example's name (no forward argument can be called that).
  const ModelSignature declared =
      Declared(8, {MakeSpec("in", DataType::kFp32, {2}), MakeSpec("b", DataType::kFp32, {2})},
               {MakeSpec("out", DataType::kFp32, {2})});
  // The PyTorch backend's DISABLE_OPTIMIZED_EXECUTION and INFERENCE_MODE false answer the same.
  for (const bool optimized : {true, false}) {
    TorchHandlerOptions options;
    options.model_path = file.path();
    options.device = "cpu";
    options.signature = declared;
    options.optimized_execution = optimized;
    options.inference_mode = optimized;
    std::unique_ptr<ModelHandler> handler = MakeTorchHandler(options);
    REQUIRE(handler->Initialize().ok());
    const torch::Tensor first = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2});
    const torch::Tensor second = torch::tensor({10.0f, 20.0f, 30.0f, 40.0f}).reshape({2, 2});
    const std::vector<torch::Tensor> served =
        RunBatch(*handler, {{{2, 2}, first}, {{2, 2}, second}});
    CHECK(torch::equal(served[0], first - 2.0 * second));  // "in" is a, "b" is b
  }
}

TEST_CASE("a model without a batch dimension, and a reshaped input", "[torch]") {
  TempFile file("unbatched.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return x.sum(dim=0) * 2.0
)");
  // The wire sends [2, 3]; forward gets [6] (reshape) and gives a scalar, declared as [1].
  TensorSpec input = MakeSpec("x", DataType::kFp32, {2, 3});
  input.reshaped = true;
  input.reshape = {6};
  TensorSpec output = MakeSpec("OUTPUT__0", DataType::kFp32, {1});
  output.reshaped = true;  // the model gives [] for the wire's [1]
  std::unique_ptr<ModelHandler> handler = Handler(file.path(), 64, Declared(0, {input}, {output}));
  REQUIRE(handler->Initialize().ok());
  const std::vector<torch::Tensor> served =
      RunBatch(*handler, {{{2, 3}, torch::arange(6, torch::kFloat)}});
  CHECK(served[0].sizes() == c10::IntArrayRef({1}));
  CHECK(served[0].item<float>() == 30);
}

// What TorchScript's interpreter makes of an exception a forward threw: a std::runtime_error
// whose text ends with the original message.
std::runtime_error FromInterpreter(const std::string& original) {
  return std::runtime_error(
      "The following operation failed in the TorchScript interpreter.\n"
      "Traceback of TorchScript (most recent call last):\n"
      "  File \"code/__torch__.py\", line 8, in forward\n"
      "RuntimeError: " +
      original + "\n");
}

TEST_CASE("torch errors are classed: out of memory, a lost device, or the model's own",
          "[torch][faults]") {
  try {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
  } catch (const c10::Error& error) {
    CHECK(ClassifyTorchError(error) == Fault::kOutOfMemory);
    const absl::Status status = TorchErrorStatus(error, "model forward failed");
    CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    CHECK(FaultOf(status) == Fault::kOutOfMemory);
    CHECK_THAT(std::string(status.message()),
               Catch::StartsWith("model forward failed: CUDA out of memory. Tried to allocate"));
  }
  // Through the interpreter the type is lost; the text says it.
  const std::runtime_error illegal = FromInterpreter(
      "CUDA error: an illegal memory access was encountered\n"
      "CUDA kernel errors might be asynchronously reported at some other API call, so the "
      "stacktrace below might be incorrect.\n"
      "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
      "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.");
  CHECK(ClassifyTorchError(illegal) == Fault::kDeviceLost);
  const absl::Status lost = TorchErrorStatus(illegal, "model forward failed");
  CHECK(lost.code() == absl::StatusCode::kUnavailable);
  CHECK(FaultOf(lost) == Fault::kDeviceLost);
  // The line that says what happened, not the traceback's last line.
  CHECK(std::string(lost.message()) ==
        "model forward failed: RuntimeError: CUDA error: an illegal memory access was "
        "encountered");
  for (const char* sticky :
       {"CUDA error: device-side assert triggered", "CUDA error: unspecified launch failure",
        "CUDA error: misaligned address", "CUDA error: an illegal instruction was encountered",
        "CUDA error: uncorrectable ECC error encountered"}) {
    INFO(sticky);
    CHECK(ClassifyTorchErrorText(sticky) == Fault::kDeviceLost);
  }
  for (const char* memory :
       {"CUDA error: out of memory", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `x`",
        "[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 17592186044416 bytes."}) {
    INFO(memory);
    CHECK(ClassifyTorchErrorText(memory) == Fault::kOutOfMemory);
  }
  // Errors a bad request or a bug causes: the model's own. A sticky error's text without CUDA's
  // prefix is a model's message, not CUDA's.
  for (const char* own : {"CUDA error: invalid argument", "AssertionError: input above 100",
                          "mat1 and mat2 shapes cannot be multiplied (2x5 and 4x3)",
                          "an illegal memory access was encountered"}) {
    INFO(own);
    CHECK(ClassifyTorchErrorText(own) == Fault::kNone);
  }
  const absl::Status own = TorchErrorStatus(FromInterpreter("AssertionError: x"), "forward");
  CHECK(own.code() == absl::StatusCode::kInternal);
  CHECK(FaultOf(own) == Fault::kNone);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  // libtorch's accelerator error carries CUDA's code: the code decides, whatever the text.
  const c10::SourceLocation here{__func__, __FILE__, static_cast<uint32_t>(__LINE__)};
  CHECK(ClassifyTorchError(c10::AcceleratorError(here, 700, "CUDA error: x")) ==
        Fault::kDeviceLost);
  CHECK(ClassifyTorchError(c10::AcceleratorError(here, 710, "CUDA error: y")) ==
        Fault::kDeviceLost);
  CHECK(ClassifyTorchError(c10::AcceleratorError(here, 2, "CUDA error: z")) == Fault::kOutOfMemory);
  CHECK(ClassifyTorchError(c10::AcceleratorError(here, 1, "CUDA error: invalid argument")) ==
        Fault::kNone);
#endif
}

// A model that needs more memory than any machine has for batches of more than `rows` rows.
std::string SaveHungryModel(const TempFile& file, int rows) {
  return SaveModel(file,
                   absl::StrCat(R"(
def forward(self, x: Tensor) -> Tensor:
    if x.size(0) > )",
                                rows, R"(:
        x = x + torch.zeros([1 << 60]).narrow(0, 0, 1)
    return x * 2.0
)"),
                   [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
}

TEST_CASE("a forward that runs out of memory is classed so; the handler stays usable",
          "[torch][faults]") {
  TempFile file("hungry.pt");
  std::unique_ptr<ModelHandler> handler = Handler(SaveHungryModel(file, 4));
  REQUIRE(handler->Initialize().ok());
  std::fill_n(reinterpret_cast<float*>(handler->PrepareBatch({{8, 1}})[0]), 8, 1.0f);
  absl::StatusOr<const std::vector<OutputTensor>*> failed = handler->Run();
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(FaultOf(failed.status()) == Fault::kOutOfMemory);
  CHECK_THAT(std::string(failed.status().message()), Catch::Contains("can't allocate memory"));
  CHECK(RunRows(*handler, {1, 2}, {}) == std::vector<float>{2, 4});
}

// A task of `rows` rows (x_1 = 1, 2, ...) for a one-input model, recording its outputs.
class OneInputTask final : public InferenceTask {
 public:
  explicit OneInputTask(int64_t rows) : InferenceTask(MakeRequest(rows)) {}
  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }
  void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row, int64_t,
                int64_t rows) override {
    const float* y = reinterpret_cast<const float*>(outputs[0].data);
    outputs_.insert(outputs_.end(), y + batch_row, y + batch_row + rows);
  }
  void Fail(absl::Status status) override { error_ = std::move(status); }
  std::vector<float> outputs_;
  absl::Status error_;

 private:
  static InferenceRequest MakeRequest(int64_t rows) {
    InferenceRequest request;
    request.rows = rows;
    request.inputs.resize(1);
    request.inputs[0].shape = {rows, 1};
    float* x = reinterpret_cast<float*>(request.inputs[0].Allocate(rows * sizeof(float)));
    for (int64_t row = 0; row < rows; ++row) x[row] = static_cast<float>(row + 1);
    return request;
  }
};

TEST_CASE("through the executor, a real out-of-memory forward splits the batch",
          "[torch][faults]") {
  TempFile file("hungry_batch.pt");
  std::unique_ptr<ModelHandler> handler = Handler(SaveHungryModel(file, 4));
  REQUIRE(handler->Initialize().ok());
  BatchExecutor executor(*handler);
  std::vector<std::unique_ptr<InferenceTask>> batch;
  std::vector<OneInputTask*> tasks;
  for (const int64_t rows : {1, 1, 1, 1, 1, 1, 1, 6}) {
    tasks.push_back(new OneInputTask(rows));
    batch.emplace_back(tasks.back());
  }
  const Execution execution = executor.Execute(batch);
  CHECK(execution.out_of_memory == 4);  // 13 rows, 9, 7, then the 6-row request alone
  CHECK(execution.forward_passes <= 2 * 3 + 1);
  for (size_t i = 0; i + 1 < tasks.size(); ++i) CHECK(tasks[i]->outputs_ == std::vector<float>{2});
  CHECK(tasks.back()->error_.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(tasks.back()->error_.message()),
             Catch::StartsWith("out of memory computing this request's 6 rows alone"));
}

TEST_CASE("a forward that reports a sticky CUDA error is classed as a lost device",
          "[torch][faults]") {
  TempFile file("lost.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    assert not bool(torch.any(x == 666.0)), "CUDA error: an illegal memory access was encountered"
    return x * 2.0
)",
            [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
  std::unique_ptr<ModelHandler> handler = Handler(file.path());
  REQUIRE(handler->Initialize().ok());
  *reinterpret_cast<float*>(handler->PrepareBatch({{1, 1}})[0]) = 666;
  absl::StatusOr<const std::vector<OutputTensor>*> failed = handler->Run();
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
  CHECK(FaultOf(failed.status()) == Fault::kDeviceLost);
  CHECK_THAT(std::string(failed.status().message()), Catch::Contains("illegal memory access"));
}

TEST_CASE("weights are read on the CPU and placed once: floats in the precision, integers kept",
          "[torch]") {
  TempFile file("indexed.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return torch.index_select(x, 1, self.columns) * self.scale
)",
            [](torch::jit::Module& m) {
              DeclareInputs(m, {"a", "b", "c"});
              m.register_buffer("columns", torch::tensor({2, 0}, torch::kLong));
              m.register_parameter("scale", torch::tensor({1.5f}), false);
            });
  for (const std::string precision : {"fp32", "bf16"}) {
    INFO(precision);
    TorchHandlerOptions options;
    options.model_path = file.path();
    options.device = "cpu";
    options.precision = precision;
    std::unique_ptr<ModelHandler> handler = MakeTorchHandler(options);
    REQUIRE(handler->Initialize().ok());
    const std::optional<TorchInstanceInfo> info = DescribeTorchInstance(*handler);
    REQUIRE(info.has_value());
    CHECK(info->device == "cpu");
    CHECK(info->precision == precision);
    CHECK(info->weight_devices == std::vector<std::string>{"cpu"});
    CHECK(info->weight_dtypes ==
          std::vector<std::string>{precision == "fp32" ? "Float" : "BFloat16"});
    CHECK(info->graph_buckets.empty());
    // The integer buffer kept its type: index_select takes it.
    CHECK(RunRows(*handler, {1, 2, 4}, {}) == std::vector<float>{6, 1.5f});
  }
  CHECK_FALSE(DescribeTorchInstance(*MakeTorchHandler({})).has_value());  // not initialized
}

TEST_CASE("instances of one version share one set of weights unless forward sets attributes",
          "[torch]") {
  TempFile plain("shared.pt");
  SaveModel(plain, R"(
def forward(self, features: Tensor) -> Tensor:
    return torch.addmm(self.b, features, self.w)
)",
            DefineMlp);
  TempFile stateful("stateful.pt");
  SaveModel(stateful, R"(
def forward(self, features: Tensor) -> Tensor:
    self.calls += 1
    return torch.addmm(self.b, features, self.w)
)",
            [](torch::jit::Module& m) {
              DefineMlp(m);
              m.register_attribute("calls", c10::IntType::get(), int64_t{0});
            });
  const auto instances = [](const std::string& path, std::shared_ptr<TorchVersionShare> share) {
    std::vector<std::unique_ptr<ModelHandler>> handlers;
    for (int i = 0; i < 2; ++i) {
      TorchHandlerOptions options;
      options.model_path = path;
      options.device = "cpu";
      options.max_batch_rows = 8;
      options.share = share;
      handlers.push_back(MakeTorchHandler(options));
      REQUIRE(handlers.back()->Initialize().ok());
    }
    return handlers;
  };
  const torch::Tensor x = torch::linspace(-1, 1, 8).reshape({2, 4});
  {
    const auto shared = instances(plain.path(), MakeTorchVersionShare());
    const TorchInstanceInfo first = *DescribeTorchInstance(*shared[0]);
    const TorchInstanceInfo second = *DescribeTorchInstance(*shared[1]);
    CHECK_FALSE(first.weights_shared);
    CHECK(second.weights_shared);
    CHECK(first.weights == second.weights);
    CHECK(torch::equal(RunBatch(*shared[0], {{{2, 4}, x}})[0],
                       RunBatch(*shared[1], {{{2, 4}, x}})[0]));
  }
  {
    const auto separate = instances(stateful.path(), MakeTorchVersionShare());
    CHECK_FALSE(DescribeTorchInstance(*separate[1])->weights_shared);
    CHECK(DescribeTorchInstance(*separate[0])->weights !=
          DescribeTorchInstance(*separate[1])->weights);
  }
  {
    // Without a share each instance loads its own.
    const auto own = instances(plain.path(), nullptr);
    CHECK(DescribeTorchInstance(*own[0])->weights != DescribeTorchInstance(*own[1])->weights);
  }
  // Instances on the CPU leave no CUDA cache to release.
  CHECK(CudaCacheReleases() == 0);
}

TEST_CASE("tf32 precision computes in float32 with TF32 matmuls allowed process-wide", "[torch]") {
  TorchHandlerOptions options;
  options.device = "cpu";
  std::unique_ptr<ModelHandler> fp32 = MakeTorchHandler(options);
  REQUIRE(fp32->Initialize().ok());
  options.precision = "tf32";
  std::unique_ptr<ModelHandler> tf32 = MakeTorchHandler(options);
  REQUIRE(tf32->Initialize().ok());
  CHECK(at::globalContext().float32MatmulPrecision() == at::Float32MatmulPrecision::HIGH);
  CHECK(DescribeTorchInstance(*tf32)->weight_dtypes == std::vector<std::string>{"Float"});
  const std::vector<float> inputs = {0.5f, -1, 2, 3, 0.25f, -0.75f};
  const std::vector<float> params = {0.3f, -1, 2, 0.5f, 1.5f};
  const std::vector<float> exact = RunRows(*fp32, inputs, params);
  const std::vector<float> served = RunRows(*tf32, inputs, params);
  REQUIRE(served.size() == exact.size());
  for (size_t i = 0; i < exact.size(); ++i) CHECK(served[i] == Approx(exact[i]).margin(1e-2));
  at::globalContext().setFloat32MatmulPrecision("highest");  // for the tests after this one
}

TEST_CASE("the warm-up runs batch sizes up to the rows it is given, no more", "[torch]") {
  TempFile file("bounded.pt");
  SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    assert x.size(0) <= 8, "more than 8 rows"
    return x * 2.0
)",
            [](torch::jit::Module& m) { DeclareInputs(m, {"a"}); });
  std::unique_ptr<ModelHandler> handler = Handler(file.path(), /*max_batch_rows=*/64);
  REQUIRE(handler->Initialize().ok());
  CHECK(handler->WarmUp(8).ok());
  const absl::Status failed = handler->WarmUp(9);
  CHECK(failed.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(failed.message()), Catch::StartsWith("warm-up forward on 9 rows failed") &&
                                                Catch::Contains("more than 8 rows"));
  // With CUDA graphs asked for on the CPU the instance stays eager and answers.
  TorchHandlerOptions options;
  options.model_path = file.path();
  options.device = "cpu";
  options.cuda_graphs = true;
  std::unique_ptr<ModelHandler> graphs = MakeTorchHandler(options);
  REQUIRE(graphs->Initialize().ok());
  REQUIRE(graphs->WarmUp(8).ok());
  CHECK(DescribeTorchInstance(*graphs)->graph_buckets.empty());
  CHECK(RunRows(*graphs, {1, 2, 3}, {}) == std::vector<float>{2, 4, 6});
}

}  // namespace
}  // namespace model_server::handlers

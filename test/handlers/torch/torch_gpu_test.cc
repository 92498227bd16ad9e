// The TorchScript handler on a GPU. Its own executable with its own main: without a CUDA device
// visible to libtorch it exits with kSkipped (77), which ctest reports as skipped, never as
// passed; with --require-gpu (or MODEL_SERVER_REQUIRE_GPU=1), as scripts/gpu_check.sh runs it
// on a GPU machine, that is a failure instead (exit 1), so a CPU-only or mis-linked libtorch
// cannot pass for a checked GPU.
//
// The "[sticky]" case makes a kernel fail with a device-side assert, after which nothing in the
// process can use the GPU: it runs in a process of its own (ctest's torch_gpu_sticky_tests,
// scripts/gpu_check.sh), and the default run leaves it out.

#include "handlers/torch/torch_handler.h"

// torch (through glog) defines CHECK; include it first and give the name to Catch.
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/script.h>
#undef CHECK
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "handlers/fault.h"
#include "test/handlers/torch/run_rows.h"

namespace model_server::handlers {
namespace {

// A file under the system's temporary folder, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("torch_gpu_test_" + std::to_string(::getpid()) + "_" + name)) {}
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Saves a one-input seed model (x [rows, columns]) whose forward is `source`.
std::string SaveModel(const TempFile& file, const std::string& source, int columns) {
  torch::jit::Module module("TestModel");
  std::vector<std::string> names;
  for (int i = 0; i < columns; ++i) names.push_back("x_" + std::to_string(i + 1));
  module.register_attribute("input_var_order", c10::ListType::ofStrings(),
                            c10::List<std::string>(names));
  module.define(source);
  module.save(file.path());
  return file.path();
}

std::unique_ptr<ModelHandler> Loaded(TorchHandlerOptions options) {
  std::unique_ptr<ModelHandler> handler = MakeTorchHandler(options);
  const absl::Status initialized = handler->Initialize();
  INFO(initialized.message());
  REQUIRE(initialized.ok());
  return handler;
}

TorchHandlerOptions OnGpu(const std::string& precision = "fp32") {
  TorchHandlerOptions options;
  options.device = "cuda:0";
  options.precision = precision;
  return options;
}

// Rows of the demo model's three inputs, different for each `seed`.
std::vector<float> Inputs(int64_t rows, int seed = 0) {
  std::vector<float> inputs;
  for (int64_t i = 0; i < rows * 3; ++i) {
    inputs.push_back(static_cast<float>(std::sin(0.37 * static_cast<double>(i) + seed)));
  }
  return inputs;
}

const std::vector<float> kParams = {0.3f, -1, 2, 0.5f, 1.5f};

// The demo model's answers on the CPU, in float32.
std::vector<float> OnCpu(const std::vector<float>& inputs) {
  TorchHandlerOptions options;
  options.device = "cpu";
  return RunRows(*Loaded(options), inputs, kParams);
}

void CheckClose(const std::vector<float>& served, const std::vector<float>& expected,
                float tolerance) {
  REQUIRE(served.size() == expected.size());
  for (size_t i = 0; i < served.size(); ++i) {
    INFO("element " << i);
    CHECK(served[i] == Approx(expected[i]).margin(tolerance));
  }
}

TEST_CASE("the weights live on the GPU and every forward runs on the instance's own stream",
          "[gpu]") {
  std::unique_ptr<ModelHandler> handler = Loaded(OnGpu());
  REQUIRE(handler->WarmUp(64).ok());
  const std::vector<float> served = RunRows(*handler, Inputs(7), kParams);
  const TorchInstanceInfo info = *DescribeTorchInstance(*handler);
  CHECK(info.device == "cuda:0");
  CHECK(info.weight_devices == std::vector<std::string>{"cuda:0"});
  CHECK(info.weight_dtypes == std::vector<std::string>{"Float"});
  CHECK(info.stream_id != 0);  // not the device's default stream
  CHECK(info.last_forward_stream_id == info.stream_id);
  CheckClose(served, OnCpu(Inputs(7)), 1e-4f);

  // The inputs reach forward on the GPU (a file model that says where its input is).
  TempFile file("where.pt");
  TorchHandlerOptions options = OnGpu();
  options.model_path = SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    return x[:, :1] * 0.0 + (1.0 if x.is_cuda else 0.0)
)",
                                 2);
  std::unique_ptr<ModelHandler> where = Loaded(options);
  CHECK(RunRows(*where, {1, 2, 3, 4}, {}) == std::vector<float>{1, 1});
}

TEST_CASE("instance slots keep their stream across versions; other slots get others", "[gpu]") {
  TorchHandlerOptions options = OnGpu();
  options.stream_key = "model#0";
  const int64_t first = DescribeTorchInstance(*Loaded(options))->stream_id;
  const int64_t next_version = DescribeTorchInstance(*Loaded(options))->stream_id;
  options.stream_key = "model#1";
  const int64_t other_slot = DescribeTorchInstance(*Loaded(options))->stream_id;
  CHECK(first == next_version);
  CHECK(first != other_slot);
}

TEST_CASE("fp16 and bf16 answer close to fp32 on the GPU, yet not equal", "[gpu]") {
  const std::vector<float> inputs = Inputs(300);
  const std::vector<float> fp32 = RunRows(*Loaded(OnGpu("fp32")), inputs, kParams);
  CheckClose(fp32, OnCpu(inputs), 1e-4f);
  for (const auto& [precision, tolerance, dtype] :
       std::vector<std::tuple<std::string, float, std::string>>{
           {"fp16", 2e-2f, "Half"}, {"bf16", 5e-2f, "BFloat16"}, {"tf32", 1e-2f, "Float"}}) {
    INFO("precision " << precision);
    std::unique_ptr<ModelHandler> handler = Loaded(OnGpu(precision));
    CHECK(DescribeTorchInstance(*handler)->weight_dtypes == std::vector<std::string>{dtype});
    const std::vector<float> served = RunRows(*handler, inputs, kParams);
    CheckClose(served, fp32, tolerance);
    if (precision != "tf32") CHECK(served != fp32);  // it really computed in 16 bits
  }
  at::globalContext().setFloat32MatmulPrecision("highest");
}

TEST_CASE("an exported model file serves on the GPU what it serves on the CPU, every batch size",
          "[gpu]") {
  TempFile file("demo.pt");
  REQUIRE(ExportDemoModel(file.path(), 32).ok());
  TorchHandlerOptions options = OnGpu();
  options.model_path = file.path();
  std::unique_ptr<ModelHandler> handler = Loaded(options);
  REQUIRE(handler->WarmUp(4096).ok());
  for (const int64_t rows : {1, 2, 3, 64, 257, 1000, 4096}) {
    INFO(rows << " rows");
    CheckClose(RunRows(*handler, Inputs(rows), kParams), OnCpu(Inputs(rows)), 1e-4f);
  }
}

TEST_CASE("two instances sharing weights run concurrent batches on their own streams", "[gpu]") {
  std::shared_ptr<TorchVersionShare> share = MakeTorchVersionShare();
  std::vector<std::unique_ptr<ModelHandler>> instances;
  for (int i = 0; i < 2; ++i) {
    TorchHandlerOptions options = OnGpu();
    options.share = share;
    options.stream_key = "concurrent#" + std::to_string(i);
    instances.push_back(Loaded(options));
  }
  const TorchInstanceInfo first = *DescribeTorchInstance(*instances[0]);
  const TorchInstanceInfo second = *DescribeTorchInstance(*instances[1]);
  CHECK(second.weights_shared);
  CHECK(first.weights == second.weights);
  CHECK(first.stream_id != second.stream_id);

  const std::vector<int64_t> sizes = {1, 5, 64, 130, 512, 33, 2, 900};
  std::vector<std::vector<std::vector<float>>> expected(2);
  for (int t = 0; t < 2; ++t) {
    for (const int64_t rows : sizes) expected[t].push_back(OnCpu(Inputs(rows, t + 1)));
  }
  std::vector<std::vector<std::vector<float>>> served(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      // Each batch thread warms up its own instance, then runs its batches.
      if (!instances[t]->WarmUp(1024).ok()) return;
      for (int round = 0; round < 10; ++round) {
        for (const int64_t rows : sizes) {
          const std::vector<float> inputs = Inputs(rows, t + 1);
          const ModelSignature& signature = instances[t]->signature();
          const std::vector<char*> buffers = instances[t]->PrepareBatch({{rows, 3}, {rows, 5}});
          std::memcpy(buffers[0], inputs.data(), inputs.size() * sizeof(float));
          for (int64_t row = 0; row < rows; ++row) {
            std::memcpy(buffers[1] + row * 5 * sizeof(float), kParams.data(), 5 * sizeof(float));
          }
          absl::StatusOr<const std::vector<OutputTensor>*> outputs = instances[t]->Run();
          if (!outputs.ok()) return;
          const float* y = reinterpret_cast<const float*>((**outputs)[signature.seed->output].data);
          if (round == 9) served[t].emplace_back(y, y + rows);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < 2; ++t) {
    REQUIRE(served[t].size() == sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) CheckClose(served[t][i], expected[t][i], 1e-4f);
    CHECK(DescribeTorchInstance(*instances[t])->last_forward_stream_id ==
          DescribeTorchInstance(*instances[t])->stream_id);
  }
}

TEST_CASE("CUDA graphs replay bucketed batch sizes; padding rows never reach the answers",
          "[gpu]") {
  TorchHandlerOptions options = OnGpu();
  options.cuda_graphs = true;
  std::unique_ptr<ModelHandler> graphs = Loaded(options);
  REQUIRE(graphs->WarmUp(100).ok());
  const TorchInstanceInfo info = *DescribeTorchInstance(*graphs);
  CHECK(info.graph_buckets == std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 100});
  std::unique_ptr<ModelHandler> eager = Loaded(OnGpu());
  for (const int64_t rows : {1, 3, 5, 64, 65, 99, 100}) {
    INFO(rows << " rows");
    CheckClose(RunRows(*graphs, Inputs(rows), kParams), RunRows(*eager, Inputs(rows), kParams),
               1e-5f);
  }
  CHECK(DescribeTorchInstance(*graphs)->graph_replays == 7);
  // Beyond the largest bucket the instance runs eagerly.
  CheckClose(RunRows(*graphs, Inputs(130), kParams), RunRows(*eager, Inputs(130), kParams), 1e-5f);
  CHECK(DescribeTorchInstance(*graphs)->graph_replays == 7);
}

TEST_CASE("a forward that runs out of GPU memory is classed so; the handler stays usable",
          "[gpu]") {
  TempFile file("hungry.pt");
  TorchHandlerOptions options = OnGpu();
  options.model_path = SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    if x.size(0) > 4:
        x = x + torch.zeros([1 << 40], device=x.device).narrow(0, 0, 1)
    return x * 2.0
)",
                                 1);
  std::unique_ptr<ModelHandler> handler = Loaded(options);
  const int64_t ooms_before = GpuMemoryStats().at(0).ooms;
  std::fill_n(reinterpret_cast<float*>(handler->PrepareBatch({{8, 1}})[0]), 8, 1.0f);
  absl::StatusOr<const std::vector<OutputTensor>*> failed = handler->Run();
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(FaultOf(failed.status()) == Fault::kOutOfMemory);
  CHECK(GpuMemoryStats().at(0).ooms == ooms_before + 1);
  CHECK(RunRows(*handler, {1, 2}, {}) == std::vector<float>{2, 4});
}

TEST_CASE("GPU memory is reported, and a retired version's cache is released once", "[gpu]") {
  const size_t releases = CudaCacheReleases();
  int64_t reserved_while_serving = 0;
  {
    std::shared_ptr<TorchVersionShare> share = MakeTorchVersionShare();
    TorchHandlerOptions options = OnGpu();
    options.demo_hidden = 1024;
    options.share = share;
    share.reset();
    std::vector<std::unique_ptr<ModelHandler>> version;
    for (int i = 0; i < 2; ++i) {
      version.push_back(Loaded(options));
      REQUIRE(version.back()->WarmUp(4096).ok());
    }
    const std::vector<GpuMemory> memory = GpuMemoryStats();
    REQUIRE_FALSE(memory.empty());
    CHECK(memory[0].device == 0);
    CHECK(memory[0].allocated_bytes > 0);
    CHECK(memory[0].reserved_bytes >= memory[0].allocated_bytes);
    CHECK(memory[0].peak_allocated_bytes >= memory[0].allocated_bytes);
    reserved_while_serving = memory[0].reserved_bytes;
    version[0]->Cleanup();
    CHECK(CudaCacheReleases() == releases);  // the version's other instance still serves
    version[1]->Cleanup();
  }
  CHECK(CudaCacheReleases() == releases + 1);
  CHECK(GpuMemoryStats().at(0).reserved_bytes < reserved_while_serving);
}

TEST_CASE("a device-side assert is classed as a lost device", "[gpu][sticky]") {
  TempFile file("assert.pt");
  TorchHandlerOptions options = OnGpu();
  options.model_path = SaveModel(file, R"(
def forward(self, x: Tensor) -> Tensor:
    index = (x[:, 0] * 0.0).long() + 1000000 * (x[:, 0] == 666.0).long()
    return torch.index_select(x, 0, index)
)",
                                 1);
  std::unique_ptr<ModelHandler> handler = Loaded(options);
  *reinterpret_cast<float*>(handler->PrepareBatch({{1, 1}})[0]) = 666;
  absl::StatusOr<const std::vector<OutputTensor>*> failed = handler->Run();
  REQUIRE_FALSE(failed.ok());
  INFO(failed.status().message());
  CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
  CHECK(FaultOf(failed.status()) == Fault::kDeviceLost);
}

}  // namespace
}  // namespace model_server::handlers

// ctest's SKIP_RETURN_CODE for this executable.
constexpr int kSkipped = 77;

int main(int argc, char** argv) {
  // --require-gpu (ours, taken out before Catch reads the rest): no GPU is a failure.
  bool require_gpu = std::getenv("MODEL_SERVER_REQUIRE_GPU") != nullptr &&
                     std::string(std::getenv("MODEL_SERVER_REQUIRE_GPU")) == "1";
  std::vector<char*> arguments;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--require-gpu") {
      require_gpu = true;
    } else {
      arguments.push_back(argv[i]);
    }
  }
  if (!torch::cuda::is_available()) {
    const std::string why =
        model_server::handlers::CudaCompiled()
            ? "no CUDA device visible to libtorch"
            : "this libtorch has no CUDA (a CPU-only build, or the wrong libtorch linked)";
    if (require_gpu) {
      std::cout << "FAILED: a GPU is required (--require-gpu) but " << why << std::endl;
      return 1;
    }
    std::cout << "SKIPPED: " << why << std::endl;
    return kSkipped;
  }
  return Catch::Session().run(static_cast<int>(arguments.size()), arguments.data());
}

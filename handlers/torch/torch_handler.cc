#include "handlers/torch/torch_handler.h"

#include <ATen/Parallel.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"
#include "handlers/torch/demo_model.h"
#include "handlers/torch/torch_signature.h"

namespace model_server::handlers {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Why a model file does not load, in one line. A file that uses an operator or a file format
// newer than this libtorch gets the fix too: PyTorch only loads what its own version knows.
std::string LoadErrorSummary(const char* message) {
  const std::string summary = Summary(message);
  const bool needs_newer_torch = summary.find("Unknown builtin op") != std::string::npos ||
                                 summary.find("maximum supported version") != std::string::npos;
  if (!needs_newer_torch) return summary;
  const char* newer = TORCH_VERSION_MAJOR < 2
                          ? "libtorch 2.x"
                          : "the libtorch of the PyTorch that saved the model, or a newer one";
  return absl::StrCat(summary, " The model needs a newer libtorch than this server's ",
                      TORCH_VERSION, ": build model_server against ", newer,
                      " (README.md, \"libtorch versions\").");
}

// The stream an instance computes on: CPU has a single stream, so every instance shares it;
// a GPU gives each instance its own from the device's pool, so instances overlap their copies
// and kernels. Device-generic (no CUDA headers), so every build compiles it and the CPU tests
// run through it.
c10::Stream InstanceStream(const torch::Device& device) {
  const c10::impl::VirtualGuardImpl guard(device.type());
  return device.is_cpu() ? guard.getStream(device) : guard.getStreamFromGlobalPool(device);
}

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  const bool cuda_available = torch::cuda::is_available();
  if (name == "auto") return cuda_available ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device \"", name, "\"; use cpu, cuda, cuda:N or auto"));
  }
  if (device.is_cuda()) {
    if (!cuda_available) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", name, " requested but CUDA is not available to this libtorch build"));
    }
    if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(absl::StrCat("device ", name, " does not exist; ",
                                                        torch::cuda::device_count(), " GPU(s)"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported device \"", name, "\""));
  }
  return device;
}

absl::StatusOr<torch::Dtype> ResolvePrecision(const std::string& name) {
  if (name == "fp32") return torch::kFloat;
  if (name == "fp16") return torch::kHalf;
  if (name == "bf16") return torch::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision \"", name, "\"; use fp32, fp16 or bf16"));
}

// Size a variable dimension gets in the forward passes that warm a model up and read its
// outputs, and a second size that tells which output dimensions follow it.
constexpr int64_t kProbeSize = 16;
constexpr int64_t kSecondProbeSize = 8;

// Whether `spec` allows `shape` (batch dimension excluded).
bool ShapeFits(const TensorSpec& spec, c10::IntArrayRef shape) {
  if (shape.size() != spec.dims.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (spec.dims[i] != kAnySize && spec.dims[i] != shape[i]) return false;
  }
  return true;
}

std::string ShapeText(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

class TorchHandler final : public ModelHandler {
 public:
  explicit TorchHandler(const TorchHandlerOptions& options) : options_(options) {}

  absl::Status Initialize() override {
    absl::StatusOr<torch::Device> device = ResolveDevice(options_.device);
    if (!device.ok()) return device.status();
    device_ = *device;
    absl::StatusOr<torch::Dtype> dtype = ResolvePrecision(options_.precision);
    if (!dtype.ok()) return dtype.status();
    dtype_ = *dtype;
    try {
      stream_ = InstanceStream(device_);
    } catch (const c10::Error& error) {
      return absl::FailedPreconditionError(absl::StrCat("no stream on ", device_.str(), ": ",
                                                        Summary(error.what_without_backtrace())));
    }
    if (options_.torch_threads > 0) at::set_num_threads(options_.torch_threads);
    const auto start = std::chrono::steady_clock::now();
    if (absl::Status loaded = Load(); !loaded.ok()) return loaded;
    if (absl::Status read = ReadSignature(); !read.ok()) return read;
    const auto loaded = std::chrono::steady_clock::now();
    initialize_times_.load_seconds = SecondsBetween(start, loaded);
    spdlog::info("model {} loaded on {} in {:.0f} ms",
                 options_.model_path.empty() ? "demo" : options_.model_path, device_.str(),
                 initialize_times_.load_seconds * 1e3);
    if (absl::Status warmed = WarmUp(); !warmed.ok()) return warmed;
    initialize_times_.warmup_seconds = SecondsBetween(loaded, std::chrono::steady_clock::now());
    spdlog::info("model warmed up in {:.0f} ms: {} inputs, {} outputs, max batch {}",
                 initialize_times_.warmup_seconds * 1e3, signature_.inputs.size(),
                 signature_.outputs.size(), signature_.max_batch_size);
    return absl::OkStatus();
  }

  const ModelSignature& signature() const override { return signature_; }
  InitializeTimes initialize_times() const override { return initialize_times_; }

  std::vector<char*> PrepareBatch(const std::vector<Dims>& shapes) override {
    std::vector<char*> buffers;
    buffers.reserve(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t elements = ElementCount(shapes[i]).value_or(0);
      torch::Tensor& buffer = buffers_[i];
      if (!buffer.defined() || buffer.numel() < elements) {
        // Pinned host memory lets the copy to the GPU run asynchronously.
        const int64_t capacity =
            std::max<int64_t>(elements, buffer.defined() ? 2 * buffer.numel() : elements);
        buffer = torch::empty({std::max<int64_t>(capacity, 1)},
                              torch::TensorOptions(TorchType(signature_.inputs[i].type))
                                  .pinned_memory(device_.is_cuda()));
      }
      batch_inputs_[i] =
          buffer.narrow(0, 0, elements).view(c10::IntArrayRef(shapes[i].data(), shapes[i].size()));
      buffers.push_back(static_cast<char*>(buffer.data_ptr()));
    }
    return buffers;
  }

  absl::StatusOr<const std::vector<OutputTensor>*> Run() override {
    absl::StatusOr<c10::IValue> result = Forward();
    if (!result.ok()) return result.status();
    try {
      absl::StatusOr<std::vector<torch::Tensor>> selected =
          SelectOutputs(*result, signature_.outputs);
      if (!selected.ok()) return selected.status();
      const int64_t rows = signature_.batches() ? batch_inputs_[0].size(0) : 0;
      for (size_t i = 0; i < signature_.outputs.size(); ++i) {
        absl::Status converted = KeepOutput(i, (*selected)[i], rows);
        if (!converted.ok()) return converted;
      }
    } catch (const c10::Error& error) {
      return absl::InternalError(
          absl::StrCat("model output failed: ", Summary(error.what_without_backtrace())));
    }
    return &outputs_;
  }

  void Cleanup() override {
    buffers_.clear();
    batch_inputs_.clear();
    output_tensors_.clear();
    outputs_.clear();
    module_ = torch::jit::Module();
  }

 private:
  absl::Status Load() {
    const std::string& path = options_.model_path;
    if (path.empty()) {
      module_ = MakeDemoModel(options_.demo_hidden);
      module_.to(device_, dtype_);
      return absl::OkStatus();
    }
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error)) {
      return absl::NotFoundError(
          absl::StrCat("model file ", path, " does not exist or is not a file"));
    }
    try {
      module_ = torch::jit::load(path, device_);
      if (dtype_ != torch::kFloat) module_.to(dtype_);
      module_.eval();
    } catch (const c10::Error& load_error) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load TorchScript model ", path, ": ",
                       LoadErrorSummary(load_error.what_without_backtrace())));
    } catch (const std::exception& load_error) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load TorchScript model ", path, ": ",
                                                     LoadErrorSummary(load_error.what())));
    }
    if (!module_.find_method("forward")) {
      return absl::InvalidArgumentError("model has no forward method");
    }
    return absl::OkStatus();
  }

  // The signature: as declared, as the module's seed attributes say, or read from forward; the
  // outputs of the last two from probe forward passes.
  absl::Status ReadSignature() {
    bool outputs_known = true;
    try {
      if (options_.signature) {
        signature_ = *options_.signature;
      } else {
        absl::StatusOr<std::optional<ModelSignature>> seed =
            SeedAttributeSignature(module_, options_.max_batch_rows);
        if (!seed.ok()) return seed.status();
        if (*seed) {
          signature_ = **std::move(seed);
        } else {
          absl::StatusOr<std::vector<TensorSpec>> inputs = ReadInputs(module_);
          if (!inputs.ok()) return inputs.status();
          signature_.inputs = *std::move(inputs);
          signature_.max_batch_size = options_.max_batch_rows;
        }
        outputs_known = false;
      }
      absl::StatusOr<std::vector<size_t>> positions = BindInputs(module_, signature_.inputs);
      if (!positions.ok()) return positions.status();
      positions_ = *std::move(positions);
      const auto& arguments = module_.get_method("forward").function().getSchema().arguments();
      for (size_t position : positions_) argument_names_.push_back(arguments[position + 1].name());
    } catch (const c10::Error& error) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read the model's forward: ",
                                                     Summary(error.what_without_backtrace())));
    }
    buffers_.resize(signature_.inputs.size());
    batch_inputs_.resize(signature_.inputs.size());
    if (!outputs_known) {
      if (absl::Status read = ReadOutputs(); !read.ok()) return read;
    }
    outputs_.resize(signature_.outputs.size());
    output_tensors_.resize(signature_.outputs.size());
    return absl::OkStatus();
  }

  // Outputs named and shaped as a probe forward pass gives them (of two rows, variable input
  // dimensions kProbeSize; a second pass with kSecondProbeSize tells which output dimensions
  // vary with them). A seed model's y takes the width forward gives.
  absl::Status ReadOutputs() {
    const bool variable = std::any_of(
        signature_.inputs.begin(), signature_.inputs.end(), [](const TensorSpec& input) {
          return std::find(input.dims.begin(), input.dims.end(), kAnySize) != input.dims.end();
        });
    std::vector<std::vector<std::pair<std::string, torch::Tensor>>> probes;
    for (const int64_t size : {kProbeSize, kSecondProbeSize}) {
      if (size == kSecondProbeSize && !variable) break;
      FillZeros(signature_.batches() ? 2 : 0, size);
      absl::StatusOr<c10::IValue> result = Forward();
      if (!result.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("probe forward failed: ", result.status().message()));
      }
      absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>> named =
          NamedOutputs(*result);
      if (!named.ok()) return named.status();
      probes.push_back(*std::move(named));
    }
    const size_t skip = signature_.batches() ? 1 : 0;
    if (signature_.seed) {  // y: [rows, k], or [rows] for k = 1
      const torch::Tensor& y = probes[0][0].second;
      if (probes[0].size() != 1 || !y.is_floating_point() || y.dim() < 1 || y.dim() > 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "a model with seed attributes must return one float tensor [rows, k] or [rows]; "
            "it returned ",
            probes[0].size(), " outputs, the first of shape ", ShapeText(y.sizes())));
      }
      const int64_t width = y.dim() == 2 ? y.size(1) : 1;
      TensorSpec& output = signature_.outputs[0];
      output.dims = {width};
      if (y.dim() == 1) output.reshaped = true;  // the model gives [rows]
      SeedSignature& seed = *signature_.seed;
      seed.num_outputs = width;
      if (!seed.output_names.empty() && static_cast<int64_t>(seed.output_names.size()) != width) {
        return absl::InvalidArgumentError(
            absl::StrCat("model attribute output_var_order names ", seed.output_names.size(),
                         " outputs but forward returns ", width, " columns"));
      }
      return absl::OkStatus();
    }
    for (size_t i = 0; i < probes[0].size(); ++i) {
      const auto& [name, tensor] = probes[0][i];
      TensorSpec output;
      output.name = name;
      std::optional<DataType> type = WireType(tensor.scalar_type());
      if (!type) {
        return absl::InvalidArgumentError(absl::StrCat("output \"", name, "\" has type ",
                                                       c10::toString(tensor.scalar_type()),
                                                       ", which no wire protocol carries"));
      }
      // Reduced precision is this server's choice: the model as saved answers in float32.
      output.type = tensor.is_floating_point() && dtype_ != torch::kFloat ? DataType::kFp32 : *type;
      if (tensor.dim() < static_cast<int64_t>(skip)) {
        return absl::InvalidArgumentError(
            absl::StrCat("output \"", name, "\" has no batch dimension"));
      }
      for (int64_t d = skip; d < tensor.dim(); ++d) {
        const bool varies = probes.size() > 1 && (probes[1].size() != probes[0].size() ||
                                                  probes[1][i].second.dim() != tensor.dim() ||
                                                  probes[1][i].second.size(d) != tensor.size(d));
        output.dims.push_back(varies ? kAnySize : tensor.size(d));
      }
      signature_.outputs.push_back(std::move(output));
    }
    signature_.seed = DefaultSeedSignature(signature_);
    return absl::OkStatus();
  }

  // Zero inputs (optional ones their default) of `rows` rows (no batch dimension when 0),
  // variable dimensions `size`.
  void FillZeros(int64_t rows, int64_t size) {
    std::vector<Dims> shapes;
    for (const TensorSpec& input : signature_.inputs) {
      Dims shape;
      if (signature_.batches()) shape.push_back(rows);
      for (const int64_t dim : input.dims) shape.push_back(dim == kAnySize ? size : dim);
      shapes.push_back(std::move(shape));
    }
    const std::vector<char*> buffers = PrepareBatch(shapes);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const TensorSpec& input = signature_.inputs[i];
      const size_t bytes = ElementCount(shapes[i]).value_or(0) * ElementSize(input.type);
      const std::string* value = input.default_value ? &*input.default_value : nullptr;
      if (value == nullptr || value->empty() || bytes % value->size() != 0) {
        std::memset(buffers[i], 0, bytes);
        continue;
      }
      for (size_t at = 0; at < bytes; at += value->size()) {
        std::memcpy(buffers[i] + at, value->data(), value->size());
      }
    }
  }

  // Forward over the batch inputs of the last PrepareBatch.
  absl::StatusOr<c10::IValue> Forward() {
    // torch's intra-op thread count (--torch-threads) reaches a thread's OpenMP and BLAS only
    // through at::init_num_threads on that thread; a batch thread left at the defaults ran
    // batches of libtorch 2.x (OpenMP, MKL) on every CPU, waiting for threads the other work
    // needs: 15 ms instead of 0.05 ms for the demo-style MLP's 64 rows on a busy 2-core machine.
    thread_local bool threads_applied = false;
    if (!threads_applied) {
      at::init_num_threads();
      threads_applied = true;
    }
    try {
      c10::InferenceMode inference_mode;
      const c10::StreamGuard stream_guard(stream_);
      std::vector<c10::IValue> positional;
      std::unordered_map<std::string, c10::IValue> named;
      bool in_order = true;
      for (size_t i = 0; i < positions_.size(); ++i) in_order = in_order && positions_[i] == i;
      for (size_t i = 0; i < batch_inputs_.size(); ++i) {
        const TensorSpec& spec = signature_.inputs[i];
        torch::Tensor input = batch_inputs_[i];
        if (spec.reshaped) {
          std::vector<int64_t> shape;
          if (signature_.batches()) shape.push_back(input.size(0));
          shape.insert(shape.end(), spec.reshape.begin(), spec.reshape.end());
          input = input.view(shape);
        }
        // One copy in per tensor (asynchronous from pinned memory); floats in the precision.
        input = dtype_ != torch::kFloat && input.is_floating_point()
                    ? input.to(device_, dtype_, /*non_blocking=*/true)
                    : input.to(device_, /*non_blocking=*/true);
        if (in_order) {
          positional.emplace_back(std::move(input));
        } else {
          named.emplace(argument_names_[i], std::move(input));
        }
      }
      return module_.get_method("forward")(std::move(positional), named);
    } catch (const c10::Error& error) {
      return absl::InternalError(
          absl::StrCat("model forward failed: ", Summary(error.what_without_backtrace())));
    } catch (const std::exception& error) {
      return absl::InternalError(absl::StrCat("model forward failed: ", Summary(error.what())));
    }
  }

  // Checks output `i` of forward against its spec and keeps it, in host memory, for the batch
  // of `rows` rows (0: the model does not batch).
  absl::Status KeepOutput(size_t i, const torch::Tensor& tensor, int64_t rows) {
    const TensorSpec& spec = signature_.outputs[i];
    const size_t skip = signature_.batches() ? 1 : 0;
    const auto wrong = [&] {
      std::string expected = DimsText(spec.reshaped ? spec.reshape : spec.dims);
      if (skip == 1)
        expected.insert(1, absl::StrCat(rows, spec.dims.empty() && !spec.reshaped ? "" : ", "));
      return absl::InternalError(absl::StrCat("model output \"", spec.name, "\" has shape ",
                                              ShapeText(tensor.sizes()), "; expected ", expected));
    };
    if (skip == 1 && (tensor.dim() == 0 || tensor.size(0) != rows)) return wrong();
    const c10::IntArrayRef per_row = tensor.sizes().slice(skip);
    torch::Tensor host;
    if (spec.reshaped) {
      // The model gives the reshape; the wire the dims (same elements per row).
      if (per_row.size() != spec.reshape.size()) return wrong();
      std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().begin() + skip);
      for (const int64_t dim : spec.dims) shape.push_back(dim);
      host = tensor.reshape(shape);
    } else {
      if (!ShapeFits(spec, per_row)) return wrong();
      host = tensor;
    }
    output_tensors_[i] = host.to(torch::kCPU, TorchType(spec.type)).contiguous();
    OutputTensor& output = outputs_[i];
    output.type = spec.type;
    output.shape.assign(output_tensors_[i].sizes().begin(), output_tensors_[i].sizes().end());
    output.data = static_cast<const char*>(output_tensors_[i].data_ptr());
    return absl::OkStatus();
  }

  // Runs the batch sizes the batcher will produce before the server says SERVING: TorchScript's
  // profiling executor specialises on its first calls, and those should not hit users. Checks
  // the declared outputs against forward's.
  absl::Status WarmUp() {
    std::set<int64_t> sizes = {0};
    if (signature_.batches()) {
      sizes = {1, 2, 7, 64, 512, signature_.max_batch_size};
      for (auto it = sizes.begin(); it != sizes.end();) {
        it = *it > signature_.max_batch_size ? sizes.erase(it) : std::next(it);
      }
    }
    for (int round = 0; round < 3; ++round) {
      for (const int64_t rows : sizes) {
        FillZeros(rows, kProbeSize);
        if (absl::StatusOr<const std::vector<OutputTensor>*> ran = Run(); !ran.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "warm-up forward", signature_.batches() ? absl::StrCat(" on ", rows, " rows") : "",
              " failed: ", ran.status().message()));
        }
      }
    }
    return absl::OkStatus();
  }

  const TorchHandlerOptions options_;
  torch::Device device_{torch::kCPU};
  torch::Dtype dtype_ = torch::kFloat;
  c10::Stream stream_{c10::Stream::DEFAULT, torch::Device(torch::kCPU)};  // see InstanceStream
  torch::jit::Module module_;
  ModelSignature signature_;
  InitializeTimes initialize_times_;
  std::vector<size_t> positions_;              // input i → forward argument (after self)
  std::vector<std::string> argument_names_;    // input i → that argument's name
  std::vector<torch::Tensor> buffers_;         // per input: host memory, reused across batches
  std::vector<torch::Tensor> batch_inputs_;    // per input: the batch's view of buffers_
  std::vector<torch::Tensor> output_tensors_;  // per output: the batch's, on the host
  std::vector<OutputTensor> outputs_;          // per output: views of output_tensors_
};

}  // namespace

std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options) {
  return std::make_unique<TorchHandler>(options);
}

}  // namespace model_server::handlers

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
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/torch/demo_model.h"

namespace model_server::handlers {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// The line of a torch error message that says what went wrong. TorchScript errors put a
// traceback first and the error itself on the last line; other errors lead with it (after
// blank lines, for TorchScript compile errors).
std::string Summary(const char* message) {
  const std::string text(message);
  if (text.find("Traceback of TorchScript") == std::string::npos) {
    const size_t start = std::min(text.find_first_not_of('\n'), text.size());
    return text.substr(start, text.find('\n', start) - start);
  }
  const size_t end = text.find_last_not_of("\n") + 1;
  const size_t start = text.rfind('\n', end - 1);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - start - 1);
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

absl::StatusOr<std::vector<std::string>> StringListAttribute(const torch::jit::Module& module,
                                                             const std::string& name) {
  std::vector<std::string> result;
  if (!module.hasattr(name)) return result;
  const c10::IValue value = module.attr(name);
  if (!value.isList()) {
    return absl::InvalidArgumentError(absl::StrCat("model attribute ", name, " must be List[str]"));
  }
  for (const c10::IValue& item : value.toListRef()) {
    if (!item.isString()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model attribute ", name, " must be List[str]"));
    }
    result.push_back(item.toStringRef());
  }
  return result;
}

absl::StatusOr<std::vector<float>> FloatListAttribute(const torch::jit::Module& module,
                                                      const std::string& name) {
  std::vector<float> result;
  if (!module.hasattr(name)) return result;
  const c10::IValue value = module.attr(name);
  if (!value.isList()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model attribute ", name, " must be List[float]"));
  }
  for (const c10::IValue& item : value.toListRef()) {
    if (!item.isDouble() && !item.isInt()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model attribute ", name, " must be List[float]"));
    }
    result.push_back(static_cast<float>(item.isDouble() ? item.toDouble() : item.toInt()));
  }
  return result;
}

// An int attribute, or `fallback` when the module has none.
absl::StatusOr<int64_t> IntAttribute(const torch::jit::Module& module, const std::string& name,
                                     int64_t fallback) {
  if (!module.hasattr(name)) return fallback;
  const c10::IValue value = module.attr(name);
  if (!value.isInt() || value.toInt() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model attribute ", name, " must be a non-negative int"));
  }
  return value.toInt();
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
    spdlog::info("model warmed up in {:.0f} ms: {} inputs, {} params, {} outputs",
                 initialize_times_.warmup_seconds * 1e3, signature_.num_inputs,
                 signature_.num_params, signature_.num_outputs);
    return absl::OkStatus();
  }

  const ModelSignature& signature() const override { return signature_; }
  InitializeTimes initialize_times() const override { return initialize_times_; }

  BatchBuffers PrepareBatch(int64_t rows) override {
    if (rows > capacity_) {
      capacity_ = std::max(rows, 2 * capacity_);
      // Pinned host memory lets the copy to the GPU run asynchronously.
      const torch::TensorOptions host =
          torch::TensorOptions(torch::kFloat).pinned_memory(device_.is_cuda());
      inputs_ = torch::empty({capacity_, signature_.num_inputs}, host);
      if (signature_.num_params > 0) {
        params_ = torch::empty({capacity_, signature_.num_params}, host);
      }
    }
    rows_ = rows;
    return BatchBuffers{inputs_.data_ptr<float>(),
                        signature_.num_params > 0 ? params_.data_ptr<float>() : nullptr};
  }

  absl::StatusOr<const float*> Run() override {
    try {
      c10::InferenceMode inference_mode;
      const c10::StreamGuard stream_guard(stream_);
      // One copy in per tensor (asynchronous from pinned memory); one copy out below.
      arguments_.clear();
      arguments_.emplace_back(
          inputs_.narrow(0, 0, rows_).to(device_, dtype_, /*non_blocking=*/true));
      if (signature_.num_params > 0) {
        arguments_.emplace_back(
            params_.narrow(0, 0, rows_).to(device_, dtype_, /*non_blocking=*/true));
      }
      const c10::IValue result = module_.forward(arguments_);
      if (!result.isTensor()) {
        return absl::InternalError(
            absl::StrCat("model forward returned ", result.tagKind(), ", expected a Tensor"));
      }
      outputs_ = result.toTensor().to(torch::kCPU, torch::kFloat).contiguous();
      if (signature_.num_outputs == 0) {
        // The first forward (warm-up) tells the output width: [rows, k], or [rows] for k = 1.
        signature_.num_outputs = outputs_.dim() == 2 ? outputs_.size(1) : outputs_.dim() == 1;
      }
      if (absl::Status shape = CheckOutputShape(outputs_, rows_); !shape.ok()) return shape;
      return outputs_.data_ptr<float>();
    } catch (const c10::Error& error) {
      return absl::InternalError(
          absl::StrCat("model forward failed: ", Summary(error.what_without_backtrace())));
    } catch (const std::exception& error) {
      return absl::InternalError(absl::StrCat("model forward failed: ", Summary(error.what())));
    }
  }

  void Cleanup() override {
    arguments_.clear();
    inputs_ = params_ = outputs_ = torch::Tensor();
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
      module_.to(dtype_);
      module_.eval();
    } catch (const c10::Error& load_error) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load TorchScript model ", path, ": ",
                       LoadErrorSummary(load_error.what_without_backtrace())));
    } catch (const std::exception& load_error) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load TorchScript model ", path, ": ",
                                                     LoadErrorSummary(load_error.what())));
    }
    return absl::OkStatus();
  }

  absl::Status ReadSignature() {
    const auto forward = module_.find_method("forward");
    if (!forward) return absl::InvalidArgumentError("model has no forward method");
    const size_t arguments = forward->function().getSchema().arguments().size() - 1;  // self
    if (arguments != 1 && arguments != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("model forward must take (x) or (x, params) tensors; it takes ", arguments,
                       " arguments"));
    }
    absl::StatusOr<std::vector<std::string>> inputs =
        StringListAttribute(module_, "input_var_order");
    if (!inputs.ok()) return inputs.status();
    absl::StatusOr<std::vector<std::string>> outputs =
        StringListAttribute(module_, "output_var_order");
    if (!outputs.ok()) return outputs.status();
    absl::StatusOr<std::vector<float>> defaults = FloatListAttribute(module_, "default_params");
    if (!defaults.ok()) return defaults.status();
    absl::StatusOr<int64_t> num_inputs = IntAttribute(module_, "num_inputs", inputs->size());
    if (!num_inputs.ok()) return num_inputs.status();
    absl::StatusOr<int64_t> num_params = IntAttribute(module_, "num_params", defaults->size());
    if (!num_params.ok()) return num_params.status();

    if (*num_inputs == 0) {
      return absl::InvalidArgumentError(
          "model declares neither input_var_order (List[str]) nor num_inputs (int); "
          "one is needed to know its input width");
    }
    if (!inputs->empty() && static_cast<int64_t>(inputs->size()) != *num_inputs) {
      return absl::InvalidArgumentError("model attributes input_var_order and num_inputs disagree");
    }
    if (arguments == 2 && *num_params == 0) {
      return absl::InvalidArgumentError(
          "model forward takes params but the model declares neither default_params "
          "(List[float]) nor num_params (int)");
    }
    if (arguments == 1 && (*num_params > 0 || !defaults->empty())) {
      return absl::InvalidArgumentError(
          "model declares tunable parameters but its forward takes only x");
    }
    if (!defaults->empty() && static_cast<int64_t>(defaults->size()) != *num_params) {
      return absl::InvalidArgumentError("model attributes default_params and num_params disagree");
    }
    signature_.input_names = *std::move(inputs);
    signature_.output_names = *std::move(outputs);
    signature_.num_inputs = *num_inputs;
    signature_.num_params = *num_params;
    signature_.default_params = *std::move(defaults);
    return absl::OkStatus();
  }

  absl::Status CheckOutputShape(const torch::Tensor& outputs, int64_t rows) const {
    const bool matches =
        outputs.dim() == 2
            ? outputs.size(0) == rows && outputs.size(1) == signature_.num_outputs
            : outputs.dim() == 1 && outputs.size(0) == rows && signature_.num_outputs == 1;
    if (matches) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("model forward returned shape [", absl::StrJoin(outputs.sizes(), ", "),
                     "] for ", rows, " rows; expected [", rows, ", ", signature_.num_outputs, "]"));
  }

  // Runs the batch sizes the batcher will produce before the server says SERVING: TorchScript's
  // profiling executor specialises on its first calls, and those should not hit users.
  absl::Status WarmUp() {
    std::set<int64_t> sizes = {1, 2, 7, 64, 512, options_.max_batch_rows};
    for (auto it = sizes.begin(); it != sizes.end();) {
      it = *it > options_.max_batch_rows ? sizes.erase(it) : std::next(it);
    }
    for (int round = 0; round < 3; ++round) {
      for (const int64_t rows : sizes) {
        BatchBuffers buffers = PrepareBatch(rows);
        std::fill_n(buffers.inputs, rows * signature_.num_inputs, 0.0f);
        for (int64_t row = 0; row < rows && buffers.params != nullptr; ++row) {
          float* row_params = buffers.params + row * signature_.num_params;
          if (signature_.default_params.empty()) {
            std::fill_n(row_params, signature_.num_params, 0.0f);
          } else {
            std::copy(signature_.default_params.begin(), signature_.default_params.end(),
                      row_params);
          }
        }
        if (absl::StatusOr<const float*> ran = Run(); !ran.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("warm-up forward on ", rows, " rows failed: ", ran.status().message()));
        }
      }
    }
    if (!signature_.output_names.empty() &&
        static_cast<int64_t>(signature_.output_names.size()) != signature_.num_outputs) {
      return absl::InvalidArgumentError(
          absl::StrCat("model attribute output_var_order names ", signature_.output_names.size(),
                       " outputs but forward returns ", signature_.num_outputs, " columns"));
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
  int64_t capacity_ = 0;  // rows inputs_ and params_ can hold
  int64_t rows_ = 0;      // rows of the batch being prepared or run
  torch::Tensor inputs_;
  torch::Tensor params_;
  torch::Tensor outputs_;
  std::vector<c10::IValue> arguments_;
};

}  // namespace

std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options) {
  return std::make_unique<TorchHandler>(options);
}

}  // namespace model_server::handlers

#include "handlers/torch/torch_handler.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/mutex.h"
#include "handlers/fault.h"
#include "handlers/signature.h"
#include "handlers/torch/cuda_support.h"
#include "handlers/torch/demo_model.h"
#include "handlers/torch/torch_faults.h"
#include "handlers/torch/torch_signature.h"

namespace model_server::handlers {
namespace {

std::atomic<size_t> cuda_cache_releases{0};

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
                      " (docs/MODELS.md, \"libtorch versions\").");
}

// A stream of its own for an instance: CPU has a single stream, so every instance shares it;
// a GPU gives each instance its own from the device's pool (non-blocking streams), so instances
// overlap their copies and kernels. Device-generic (no CUDA headers), so every build compiles it
// and the CPU tests run through it.
c10::Stream FreshStream(const torch::Device& device) {
  const c10::impl::VirtualGuardImpl guard(device.type());
  return device.is_cpu() ? guard.getStream(device) : guard.getStreamFromGlobalPool(device);
}

// The stream of the instance slot `key` on `device`: the same one for every instance (of every
// version) with that key, for the life of the process.
c10::Stream SlotStream(const torch::Device& device, const std::string& key) {
  if (key.empty() || device.is_cpu()) return FreshStream(device);
  static std::mutex mu;
  static auto* streams = new std::map<std::pair<std::string, std::string>, c10::Stream>();
  std::lock_guard<std::mutex> lock(mu);
  const auto slot = std::make_pair(device.str(), key);
  auto found = streams->find(slot);
  if (found == streams->end()) found = streams->emplace(slot, FreshStream(device)).first;
  return found->second;
}

// The id of the stream current on `device` now.
int64_t CurrentStreamId(const torch::Device& device) {
  const c10::impl::VirtualGuardImpl guard(device.type());
  return static_cast<int64_t>(guard.getStream(device).id());
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
    // "cuda" is the first GPU: its stream and its weights then name the same device.
    if (!device.has_index()) device = torch::Device(torch::kCUDA, 0);
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported device \"", name, "\""));
  }
  return device;
}

struct Precision {
  torch::Dtype dtype = torch::kFloat;
  bool tf32 = false;  // float32 matmuls and convolutions may use TF32 tensor cores
};

absl::StatusOr<Precision> ResolvePrecision(const std::string& name) {
  if (name == "fp32") return Precision{torch::kFloat, false};
  if (name == "tf32") return Precision{torch::kFloat, true};
  if (name == "fp16") return Precision{torch::kHalf, false};
  if (name == "bf16") return Precision{torch::kBFloat16, false};
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision \"", name, "\"; use fp32, tf32, fp16 or bf16"));
}

// Turns on TF32 for float32 matmuls (precision "high") and convolutions, process-wide, once.
void AllowTf32() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::globalContext().setFloat32MatmulPrecision("high");
    at::globalContext().setAllowTF32CuDNN(true);
    spdlog::info("precision tf32: float32 matmuls and convolutions may use TF32 (process-wide)");
  });
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

// Whether forward (with the methods it calls) sets attributes of the module: two threads running
// it on one module would then race, so such a module is not shared between instances.
bool ForwardSetsAttributes(const torch::jit::Module& module) {
  try {
    std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph()->copy();
    torch::jit::Inline(*graph);
    const std::function<bool(torch::jit::Block*)> sets = [&](torch::jit::Block* block) {
      for (torch::jit::Node* node : block->nodes()) {
        if (node->kind() == c10::prim::SetAttr) return true;
        for (torch::jit::Block* inner : node->blocks()) {
          if (sets(inner)) return true;
        }
      }
      return false;
    };
    return sets(graph->block());
  } catch (const std::exception&) {
    return true;  // unknown: do not share
  }
}

// The batch sizes CUDA graphs are captured for: powers of two below `max_rows`, and `max_rows`.
std::vector<int64_t> GraphBuckets(int64_t max_rows) {
  std::vector<int64_t> buckets;
  for (int64_t rows = 1; rows < max_rows; rows *= 2) buckets.push_back(rows);
  if (max_rows > 0) buckets.push_back(max_rows);
  return buckets;
}

}  // namespace

// The weights the instances of one version share, and the CUDA cache they leave behind.
class TorchVersionShare {
 public:
  ~TorchVersionShare() {
    modules_.clear();  // the instances have let go of theirs: the weights are freed now
    if (used_gpu_) {
      try {
        cuda_support::EmptyCache();
        ++cuda_cache_releases;
      } catch (const std::exception& error) {
        spdlog::warn("emptying the CUDA cache failed: {}", Summary(error.what()));
      }
    }
  }

  // The module loaded for `key` by an earlier instance (and true), else the one `load` gives
  // (and false), kept for later instances when `shareable` says so. Loader thread.
  absl::StatusOr<std::pair<torch::jit::Module, bool>> Get(
      const std::string& key, const std::function<absl::StatusOr<torch::jit::Module>()>& load,
      const std::function<bool(const torch::jit::Module&)>& shareable) {
    base::MutexLock lock(mu_);
    const auto found = modules_.find(key);
    if (found != modules_.end()) return std::make_pair(found->second, true);
    absl::StatusOr<torch::jit::Module> loaded = load();
    if (!loaded.ok()) return loaded.status();
    if (shareable(*loaded)) modules_.emplace(key, *loaded);
    return std::make_pair(*std::move(loaded), false);
  }

  void UsedGpu() { used_gpu_ = true; }

 private:
  base::Mutex mu_;
  std::map<std::string, torch::jit::Module> modules_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> used_gpu_{false};
};

std::shared_ptr<TorchVersionShare> MakeTorchVersionShare() {
  return std::make_shared<TorchVersionShare>();
}

namespace {

class TorchHandler final : public ModelHandler {
 public:
  explicit TorchHandler(const TorchHandlerOptions& options)
      : options_(options),
        share_(options.share != nullptr ? options.share : MakeTorchVersionShare()) {}

  absl::Status Initialize() override {
    absl::StatusOr<torch::Device> device = ResolveDevice(options_.device);
    if (!device.ok()) return device.status();
    device_ = *device;
    absl::StatusOr<Precision> precision = ResolvePrecision(options_.precision);
    if (!precision.ok()) return precision.status();
    dtype_ = precision->dtype;
    if (precision->tf32) AllowTf32();
    try {
      stream_ = SlotStream(device_, options_.stream_key);
      if (device_.is_cuda()) input_copies_.emplace(device_.type());
    } catch (const c10::Error& error) {
      return absl::FailedPreconditionError(absl::StrCat("no stream on ", device_.str(), ": ",
                                                        Summary(error.what_without_backtrace())));
    }
    if (device_.is_cuda()) share_->UsedGpu();
    if (options_.torch_threads > 0) at::set_num_threads(options_.torch_threads);
    const auto start = std::chrono::steady_clock::now();
    if (absl::Status loaded = Load(); !loaded.ok()) return loaded;
    if (absl::Status read = ReadSignature(); !read.ok()) return read;
    const auto loaded = std::chrono::steady_clock::now();
    initialize_times_.load_seconds = SecondsBetween(start, loaded);
    spdlog::info("model {} loaded on {} ({}{}) in {:.0f} ms",
                 options_.model_path.empty() ? "demo" : options_.model_path, device_.str(),
                 options_.precision,
                 weights_shared_ ? ", weights shared with another instance" : "",
                 initialize_times_.load_seconds * 1e3);
    if (absl::Status checked = CheckForward(); !checked.ok()) return checked;
    initialize_times_.warmup_seconds = SecondsBetween(loaded, std::chrono::steady_clock::now());
    return absl::OkStatus();
  }

  bool ThreadBound() const override { return device_.is_cuda(); }

  // Runs the batch sizes the executor will run (up to max_rows) three times on this thread:
  // TorchScript's profiling executor specialises on its first calls, the caching allocator
  // grows to the largest batch, and a GPU library's per-thread handle and workspace are made
  // here, not in a user's request. Then captures the CUDA graphs when asked.
  absl::Status WarmUp(int64_t max_rows) override {
    const auto start = std::chrono::steady_clock::now();
    std::set<int64_t> sizes = {0};
    if (signature_.batches()) {
      max_rows = std::max<int64_t>(std::min(max_rows, signature_.max_batch_size), 1);
      sizes = {1, 2, 7, 64, 512, max_rows};
      if (GraphsWanted()) {
        for (const int64_t rows : GraphBuckets(max_rows)) sizes.insert(rows);
      }
      for (auto it = sizes.begin(); it != sizes.end();) {
        it = *it > max_rows ? sizes.erase(it) : std::next(it);
      }
    }
    for (int round = 0; round < 3; ++round) {
      for (const int64_t rows : sizes) {
        if (absl::Status ran = RunZeros(rows, "warm-up forward"); !ran.ok()) return ran;
      }
    }
    if (GraphsWanted()) CaptureGraphs(max_rows);
    const double seconds = SecondsBetween(start, std::chrono::steady_clock::now());
    initialize_times_.warmup_seconds += seconds;
    spdlog::info(
        "model {} warmed up on {} in {:.0f} ms: {} inputs, {} outputs, batches up to {}{}",
        options_.model_path.empty() ? "demo" : options_.model_path, device_.str(), seconds * 1e3,
        signature_.inputs.size(), signature_.outputs.size(), signature_.batches() ? max_rows : 0,
        graphs_.empty() ? "" : absl::StrCat(", CUDA graphs for ", graphs_.size(), " sizes"));
    return absl::OkStatus();
  }

  const ModelSignature& signature() const override { return signature_; }
  InitializeTimes initialize_times() const override { return initialize_times_; }

  std::vector<char*> PrepareBatch(const std::vector<Dims>& shapes) override {
    // The last batch's copies out of these buffers must be done before they are written again.
    // Run has waited for them already, whatever way it returned; an error here (a lost device)
    // shows again in the next Run.
    if (absl::Status copied = WaitForInputCopies(); !copied.ok()) {
      spdlog::debug("waiting for the input copies: {}", std::string(copied.message()));
    }
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
      // The batch's shape over the buffer's storage: buffer.narrow(0, 0, elements).view(shape)
      // without two dispatched operators (about 8,000 instructions per input and batch on
      // libtorch 1.13; bench/cost).
      batch_inputs_[i] = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(buffer.storage()),
                                                                  buffer.key_set(), buffer.dtype());
      batch_inputs_[i].unsafeGetTensorImpl()->set_sizes_contiguous(
          c10::IntArrayRef(shapes[i].data(), shapes[i].size()));
      buffers.push_back(static_cast<char*>(buffer.data_ptr()));
    }
    return buffers;
  }

  absl::StatusOr<const std::vector<OutputTensor>*> Run() override {
    absl::StatusOr<const std::vector<OutputTensor>*> ran = RunOnStream();
    // Whatever way the forward ended, the copies out of the pinned buffers are done before the
    // next PrepareBatch may hand the buffers out again.
    absl::Status copied = WaitForInputCopies();
    if (ran.ok() && !copied.ok()) return copied;
    return ran;
  }

  void Cleanup() override {
    try {
      if (device_.is_cuda()) stream_.synchronize();  // nothing still reads what is freed below
    } catch (const std::exception& error) {
      spdlog::warn("{}: {}", device_.str(), Summary(error.what()));
    }
    graphs_.clear();
    graph_inputs_.clear();
    buffers_.clear();
    batch_inputs_.clear();
    output_tensors_.clear();
    outputs_.clear();
    module_ = torch::jit::Module();
    loaded_ = false;
    input_copies_.reset();
    share_.reset();  // the version's last instance returns the CUDA cache, once
  }

  bool loaded() const { return loaded_; }

  TorchInstanceInfo Describe() const {
    TorchInstanceInfo info;
    info.device = device_.str();
    info.precision = options_.precision;
    info.stream_id = static_cast<int64_t>(stream_.id());
    info.last_forward_stream_id = last_forward_stream_id_;
    std::set<std::string> devices, dtypes;
    for (const auto& parameter : module_.named_parameters(/*recurse=*/true)) {
      if (info.weights == nullptr) info.weights = parameter.value.data_ptr();
      devices.insert(parameter.value.device().str());
      dtypes.insert(std::string(c10::toString(parameter.value.scalar_type())));
    }
    for (const auto& buffer : module_.named_buffers(/*recurse=*/true)) {
      devices.insert(buffer.value.device().str());
    }
    info.weight_devices.assign(devices.begin(), devices.end());
    info.weight_dtypes.assign(dtypes.begin(), dtypes.end());
    info.weights_shared = weights_shared_;
    for (const GraphBucket& bucket : graphs_) info.graph_buckets.push_back(bucket.rows);
    info.graph_replays = graph_replays_;
    return info;
  }

 private:
  // A CUDA graph for batches of up to `rows` rows, and the outputs its replays write.
  struct GraphBucket {
    int64_t rows = 0;
    std::unique_ptr<cuda_support::Graph> graph;
    std::vector<torch::Tensor> outputs;  // device tensors [rows, ...], as forward gave them
  };

  // The module, placed on the device in the precision: the version's shared copy when another
  // instance loaded it, else read from the file (or built: the demo model).
  absl::Status Load() {
    const std::string& path = options_.model_path;
    if (!path.empty()) {
      std::error_code error;
      if (!std::filesystem::is_regular_file(path, error)) {
        return absl::NotFoundError(
            absl::StrCat("model file ", path, " does not exist or is not a file"));
      }
    }
    const std::string key =
        absl::StrCat(path.empty() ? absl::StrCat("demo model ", options_.demo_hidden) : path,
                     " on ", device_.str(), " in ", c10::toString(dtype_));
    absl::StatusOr<std::pair<torch::jit::Module, bool>> got = share_->Get(
        key, [this] { return LoadModule(); },
        [](const torch::jit::Module& module) { return !ForwardSetsAttributes(module); });
    if (!got.ok()) return got.status();
    module_ = got->first;
    weights_shared_ = got->second;
    loaded_ = true;
    return absl::OkStatus();
  }

  // Reads the module on the CPU, then moves and casts its weights once, on the instance's
  // stream, and waits for that stream: no forward on any stream can see half-converted weights,
  // and float32 and reduced-precision copies never sit on the device together.
  absl::StatusOr<torch::jit::Module> LoadModule() {
    const std::string& path = options_.model_path;
    torch::jit::Module module;
    try {
      module = path.empty() ? MakeDemoModel(options_.demo_hidden)
                            : torch::jit::load(path, torch::Device(torch::kCPU));
      module.eval();
    } catch (const c10::Error& load_error) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load TorchScript model ", path, ": ",
                       LoadErrorSummary(load_error.what_without_backtrace())));
    } catch (const std::exception& load_error) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load TorchScript model ", path, ": ",
                                                     LoadErrorSummary(load_error.what())));
    }
    if (!module.find_method("forward")) {
      return absl::InvalidArgumentError("model has no forward method");
    }
    try {
      const torch::NoGradGuard no_grad;
      const c10::StreamGuard on_stream(stream_);
      const auto place = [&](torch::Tensor tensor) {
        // Floating-point weights take the precision; integer ones (indices, counters) keep
        // their type.
        const torch::ScalarType type =
            tensor.is_floating_point() && dtype_ != torch::kFloat ? dtype_ : tensor.scalar_type();
        if (tensor.device() == device_ && tensor.scalar_type() == type) return;
        tensor.set_data(tensor.to(device_, type));
      };
      for (const auto& parameter : module.named_parameters(/*recurse=*/true))
        place(parameter.value);
      for (const auto& buffer : module.named_buffers(/*recurse=*/true)) place(buffer.value);
      stream_.synchronize();
    } catch (const std::exception& error) {
      return TorchErrorStatus(error, absl::StrCat("cannot place the model on ", device_.str(),
                                                  " in ", options_.precision));
    }
    return module;
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
    FillDefaultInputs(signature_, shapes, PrepareBatch(shapes));
  }

  // A forward over zero inputs of `rows` rows (see FillZeros), its outputs checked; errors say
  // `what` ran on how many rows, and keep their class (handlers/fault.h).
  absl::Status RunZeros(int64_t rows, const char* what) {
    FillZeros(rows, kProbeSize);
    absl::StatusOr<const std::vector<OutputTensor>*> ran = Run();
    if (ran.ok()) return absl::OkStatus();
    const std::string context = absl::StrCat(
        what, signature_.batches() ? absl::StrCat(" on ", rows, " rows") : "", " failed: ");
    if (FaultOf(ran.status()) != Fault::kNone) return WithContext(ran.status(), context);
    return absl::InvalidArgumentError(absl::StrCat(context, ran.status().message()));
  }

  // One forward of one row on the loading thread, which checks the outputs against the
  // signature (declared, or read from probes) before anything serves.
  absl::Status CheckForward() { return RunZeros(signature_.batches() ? 1 : 0, "checking forward"); }

  // The batch inputs of the last PrepareBatch on the device (copied from pinned memory without
  // blocking), as forward takes them: reshaped where declared, floats in the precision. Under
  // the instance's stream; records the copies' event.
  std::vector<torch::Tensor> DeviceInputs() {
    std::vector<torch::Tensor> inputs;
    for (size_t i = 0; i < batch_inputs_.size(); ++i) {
      // On the CPU, the batch buffer itself (a `to` that does nothing still costs a dispatch).
      torch::Tensor input = batch_inputs_[i].device() == device_
                                ? batch_inputs_[i]
                                : batch_inputs_[i].to(device_, /*non_blocking=*/true);
      inputs.push_back(ForForward(i, std::move(input)));
    }
    RecordInputCopies();
    return inputs;
  }

  // Input `i`, already on the device, as forward takes it.
  torch::Tensor ForForward(size_t i, torch::Tensor input) const {
    const TensorSpec& spec = signature_.inputs[i];
    if (spec.reshaped) {
      std::vector<int64_t> shape;
      if (signature_.batches()) shape.push_back(input.size(0));
      shape.insert(shape.end(), spec.reshape.begin(), spec.reshape.end());
      input = input.view(shape);
    }
    if (dtype_ != torch::kFloat && input.is_floating_point()) input = input.to(dtype_);
    return input;
  }

  // Calls forward with `inputs`, positionally when they are in forward's order, else by name.
  c10::IValue CallForward(std::vector<torch::Tensor> inputs) {
    std::vector<c10::IValue> positional;
    std::unordered_map<std::string, c10::IValue> named;
    bool in_order = true;
    for (size_t i = 0; i < positions_.size(); ++i) in_order = in_order && positions_[i] == i;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (in_order) {
        positional.emplace_back(std::move(inputs[i]));
      } else {
        named.emplace(argument_names_[i], std::move(inputs[i]));
      }
    }
    return module_.get_method("forward")(std::move(positional), named);
  }

  // Forward over the batch inputs of the last PrepareBatch, on the instance's stream.
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
      const c10::InferenceMode inference_mode(options_.inference_mode);
      const torch::NoGradGuard no_grad;
      const torch::jit::GraphOptimizerEnabledGuard optimized(options_.optimized_execution);
      const c10::StreamGuard stream_guard(stream_);
      last_forward_stream_id_ = CurrentStreamId(device_);
      return CallForward(DeviceInputs());
    } catch (const std::exception& error) {
      return TorchErrorStatus(error, "model forward failed");
    }
  }

  // The forward and the copies of its outputs to the host, all on the instance's stream (a
  // captured graph's replay when one holds the batch).
  absl::StatusOr<const std::vector<OutputTensor>*> RunOnStream() {
    const int64_t rows = signature_.batches() ? batch_inputs_[0].size(0) : 0;
    std::vector<torch::Tensor> selected;
    try {
      const c10::InferenceMode inference_mode(options_.inference_mode);
      const torch::NoGradGuard no_grad;
      const c10::StreamGuard stream_guard(stream_);
      if (GraphBucket* bucket = GraphFor(rows)) {
        last_forward_stream_id_ = CurrentStreamId(device_);
        selected = ReplayGraph(*bucket, rows);
      } else {
        absl::StatusOr<c10::IValue> result = Forward();
        if (!result.ok()) return result.status();
        absl::StatusOr<std::vector<torch::Tensor>> outputs =
            SelectOutputs(*result, signature_.outputs);
        if (!outputs.ok()) return outputs.status();
        selected = *std::move(outputs);
      }
      for (size_t i = 0; i < signature_.outputs.size(); ++i) {
        absl::Status converted = KeepOutput(i, selected[i], rows);
        if (!converted.ok()) return converted;
      }
    } catch (const std::exception& error) {
      return TorchErrorStatus(error, "model output failed");
    }
    return &outputs_;
  }

  void RecordInputCopies() {
    if (input_copies_) input_copies_->record(stream_);
  }

  // Waits until the copies out of the pinned input buffers are done (no-op on the CPU, whose
  // copies are done when they return).
  absl::Status WaitForInputCopies() {
    if (!input_copies_) return absl::OkStatus();
    try {
#if TORCH_VERSION_MAJOR >= 2
      input_copies_->synchronize();
#else
      while (!input_copies_->query()) std::this_thread::yield();
#endif
    } catch (const std::exception& error) {
      return TorchErrorStatus(error, "waiting for the input copies failed");
    }
    return absl::OkStatus();
  }

  bool GraphsWanted() const { return options_.cuda_graphs && signature_.batches(); }

  // The graph of the smallest bucket that holds `rows`; null when none (eager).
  GraphBucket* GraphFor(int64_t rows) {
    if (rows < 1) return nullptr;
    for (GraphBucket& bucket : graphs_) {
      if (bucket.rows >= rows) return &bucket;
    }
    return nullptr;
  }

  // Copies the batch into the graph's input tensors (rows past the batch's zeroed), replays the
  // graph and returns the batch's rows of its outputs. Under the instance's stream.
  std::vector<torch::Tensor> ReplayGraph(GraphBucket& bucket, int64_t rows) {
    for (size_t i = 0; i < batch_inputs_.size(); ++i) {
      graph_inputs_[i].narrow(0, 0, rows).copy_(batch_inputs_[i], /*non_blocking=*/true);
      if (bucket.rows > rows) graph_inputs_[i].narrow(0, rows, bucket.rows - rows).zero_();
    }
    RecordInputCopies();
    bucket.graph->Replay();
    ++graph_replays_;
    std::vector<torch::Tensor> outputs;
    for (const torch::Tensor& output : bucket.outputs) outputs.push_back(output.narrow(0, 0, rows));
    return outputs;
  }

  // Captures a graph per bucket (largest first; the others share its memory pool) of a forward
  // over the graph's input tensors. Leaves the instance eager, with a warning saying why, when it
  // cannot.
  void CaptureGraphs(int64_t max_rows) {
    const auto off = [&](const std::string& why) {
      spdlog::warn("model {} on {}: CUDA graphs off for this instance: {}",
                   options_.model_path.empty() ? "demo" : options_.model_path, device_.str(), why);
      graphs_.clear();
      graph_inputs_.clear();
    };
    if (!device_.is_cuda()) return off(absl::StrCat("it runs on ", device_.str()));
    if (!cuda_support::Compiled()) return off("this libtorch has no CUDA");
    for (const TensorSpec& input : signature_.inputs) {
      if (std::find(input.dims.begin(), input.dims.end(), kAnySize) != input.dims.end()) {
        return off(absl::StrCat("input \"", input.name,
                                "\" has a variable size past the batch dimension"));
      }
    }
    try {
      c10::InferenceMode inference_mode;
      {
        const c10::StreamGuard stream_guard(stream_);
        for (const TensorSpec& input : signature_.inputs) {
          std::vector<int64_t> shape = {max_rows};
          shape.insert(shape.end(), input.dims.begin(), input.dims.end());
          graph_inputs_.push_back(
              torch::zeros(shape, torch::TensorOptions(TorchType(input.type)).device(device_)));
        }
      }
      const std::vector<int64_t> buckets = GraphBuckets(max_rows);
      std::vector<GraphBucket> captured;
      for (auto rows = buckets.rbegin(); rows != buckets.rend(); ++rows) {
        GraphBucket bucket;
        bucket.rows = *rows;
        bucket.graph = cuda_support::Capture(
            stream_, captured.empty() ? nullptr : captured.front().graph.get(), [&] {
              std::vector<torch::Tensor> inputs;
              for (size_t i = 0; i < graph_inputs_.size(); ++i) {
                inputs.push_back(ForForward(i, graph_inputs_[i].narrow(0, 0, *rows)));
              }
              absl::StatusOr<std::vector<torch::Tensor>> outputs =
                  SelectOutputs(CallForward(std::move(inputs)), signature_.outputs);
              if (!outputs.ok()) throw std::runtime_error(std::string(outputs.status().message()));
              bucket.outputs = *std::move(outputs);
            });
        captured.push_back(std::move(bucket));
      }
      stream_.synchronize();
      graphs_.assign(std::make_move_iterator(captured.rbegin()),
                     std::make_move_iterator(captured.rend()));
    } catch (const std::exception& error) {
      off(absl::StrCat("capture failed: ", Summary(error.what())));
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

  const TorchHandlerOptions options_;
  std::shared_ptr<TorchVersionShare> share_;  // released by Cleanup
  torch::Device device_{torch::kCPU};
  torch::Dtype dtype_ = torch::kFloat;
  c10::Stream stream_{c10::Stream::DEFAULT, torch::Device(torch::kCPU)};  // see SlotStream
  // On a GPU: recorded on stream_ after the copies out of buffers_ (see WaitForInputCopies).
  std::optional<c10::Event> input_copies_;
  torch::jit::Module module_;
  bool loaded_ = false;          // module_ is the model (until Cleanup)
  bool weights_shared_ = false;  // module_ came from the share, loaded by another instance
  ModelSignature signature_;
  InitializeTimes initialize_times_;
  std::vector<size_t> positions_;              // input i → forward argument (after self)
  std::vector<std::string> argument_names_;    // input i → that argument's name
  std::vector<torch::Tensor> buffers_;         // per input: host memory, reused across batches
  std::vector<torch::Tensor> batch_inputs_;    // per input: the batch's view of buffers_
  std::vector<torch::Tensor> output_tensors_;  // per output: the batch's, on the host
  std::vector<OutputTensor> outputs_;          // per output: views of output_tensors_
  std::vector<torch::Tensor> graph_inputs_;    // per input: [max rows, ...] on the device
  std::vector<GraphBucket> graphs_;            // by rows, ascending; empty: eager
  int64_t graph_replays_ = 0;
  int64_t last_forward_stream_id_ = -1;
};

}  // namespace

std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options) {
  return std::make_unique<TorchHandler>(options);
}

std::optional<TorchInstanceInfo> DescribeTorchInstance(const ModelHandler& handler) {
  const auto* torch_handler = dynamic_cast<const TorchHandler*>(&handler);
  if (torch_handler == nullptr || !torch_handler->loaded()) return std::nullopt;
  return torch_handler->Describe();
}

std::vector<GpuMemory> GpuMemoryStats() {
  if (!cuda_support::Compiled() || !torch::cuda::is_available()) return {};
  return cuda_support::MemoryStats();
}

int VisibleGpus() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

bool CudaCompiled() { return cuda_support::Compiled(); }

size_t CudaCacheReleases() { return cuda_cache_releases.load(); }

}  // namespace model_server::handlers

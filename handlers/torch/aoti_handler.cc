#include "handlers/torch/aoti_handler.h"

#include <ATen/Parallel.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <caffe2/serialize/inline_container.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/mutex.h"
#include "handlers/aoti_package.h"
#include "handlers/signature.h"
#include "handlers/torch/torch_signature.h"

namespace model_server::handlers {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// Loading a package: the types SharedAotiPackage holds (so not in an anonymous namespace).
namespace aoti_loading {

namespace fs = std::filesystem;

// Constructing AOTIModelPackageLoaders concurrently races inside libtorch (load_json_file
// parses into one static JSON object): every construction in the process takes this lock.
base::Mutex& LoaderConstructionMutex() {
  static base::Mutex* mutex = new base::Mutex;
  return *mutex;
}

// The directories packages are unpacked into, removed at exit if their handlers did not get to
// it (a failed startup returns from main with models loaded).
class UnpackedDirectories {
 public:
  static UnpackedDirectories& Get() {
    static UnpackedDirectories* directories = [] {
      auto* made = new UnpackedDirectories;
      std::atexit([] { Get().RemoveAll(); });
      return made;
    }();
    return *directories;
  }

  void Add(const std::string& path) {
    base::MutexLock lock(mu_);
    paths_.insert(path);
  }

  // Removes `path` and everything in it.
  void Remove(const std::string& path) {
    {
      base::MutexLock lock(mu_);
      paths_.erase(path);
    }
    RemoveTree(path);
  }

 private:
  static void RemoveTree(const std::string& path) {
    std::error_code error;
    fs::remove_all(path, error);
    if (error) spdlog::warn("cannot remove {}: {}", path, error.message());
  }

  void RemoveAll() {
    std::set<std::string> paths;
    {
      base::MutexLock lock(mu_);
      paths.swap(paths_);
    }
    for (const std::string& path : paths) RemoveTree(path);
  }

  base::Mutex mu_;
  std::set<std::string> paths_ ABSL_GUARDED_BY(mu_);
};

// The folder temporary files go to: $TMPDIR, else /tmp.
std::string TemporaryFolder() {
  const char* tmpdir = std::getenv("TMPDIR");
  return tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
}

// A package unpacked into a directory of its own, removed with this object.
class UnpackedPackage {
 public:
  // Unpacks the records of `path` (a .pt2: a zip archive in PyTorch's container format) into a
  // new directory under $TMPDIR.
  static absl::StatusOr<std::unique_ptr<UnpackedPackage>> Unpack(const std::string& path) {
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
    std::vector<std::string> records;
    try {
      reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
      records = reader->getAllRecords();
    } catch (const c10::Error& error) {
      return NotPackage(path, Summary(error.what_without_backtrace()));
    } catch (const std::exception& error) {
      return NotPackage(path, Summary(error.what()));
    }
    const std::string folder = TemporaryFolder();
    std::string pattern = folder + "/model_server-pt2-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      const int error = errno;
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot unpack the AOTInductor package ", path, ": cannot create a directory in ", folder,
          " (TMPDIR", std::getenv("TMPDIR") == nullptr ? " unset, so /tmp" : "",
          "): ", std::strerror(error),
          "; point TMPDIR at a writable directory that allows executables (on Kubernetes with a "
          "read-only root filesystem, an emptyDir volume)"));
    }
    UnpackedDirectories::Get().Add(pattern);
    std::unique_ptr<UnpackedPackage> unpacked(new UnpackedPackage(pattern));
    std::vector<char> chunk(1 << 20);
    for (const std::string& record : records) {
      const fs::path relative(record);
      const bool escapes =
          relative.is_absolute() || std::any_of(relative.begin(), relative.end(),
                                                [](const fs::path& part) { return part == ".."; });
      if (escapes)
        return NotPackage(path, absl::StrCat("record \"", record, "\" leaves its folder"));
      const fs::path target = fs::path(pattern) / relative;
      std::error_code made;
      fs::create_directories(target.parent_path(), made);
      std::ofstream out(target, std::ios::binary);
      if (made || !out) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot unpack the AOTInductor package ", path, " into ", pattern, ": cannot write ",
            target.string(), made ? absl::StrCat(": ", made.message()) : ""));
      }
      try {
        const size_t size = reader->getRecordSize(record);
        caffe2::serialize::ChunkRecordIterator chunks =
            reader->createChunkReaderIter(record, size, chunk.size());
        size_t written = 0;
        while (written < size) {
          const size_t read = chunks.next(chunk.data());
          if (read == 0) break;
          out.write(chunk.data(), static_cast<std::streamsize>(read));
          written += read;
        }
        if (written != size) return NotPackage(path, absl::StrCat("record ", record, " is short"));
      } catch (const c10::Error& error) {
        return NotPackage(path, Summary(error.what_without_backtrace()));
      }
      if (!out.flush()) {
        return absl::FailedPreconditionError(absl::StrCat("cannot unpack the AOTInductor package ",
                                                          path, ": writing ", target.string(),
                                                          " failed (", folder, " full?)"));
      }
      unpacked->records_.push_back(record);
    }
    return unpacked;
  }

  ~UnpackedPackage() { UnpackedDirectories::Get().Remove(directory_); }
  UnpackedPackage(const UnpackedPackage&) = delete;
  UnpackedPackage& operator=(const UnpackedPackage&) = delete;

  const std::string& directory() const { return directory_; }
  const std::vector<std::string>& records() const { return records_; }

  // The text of record `record`; empty when it cannot be read.
  std::string Read(const std::string& record) const {
    std::ifstream in(fs::path(directory_) / record, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

 private:
  explicit UnpackedPackage(std::string directory) : directory_(std::move(directory)) {}

  static absl::Status NotPackage(const std::string& path, const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read AOTInductor package ", path,
                     " (a .pt2 written by torch._inductor.aoti_compile_and_package): ", why));
  }

  const std::string directory_;
  std::vector<std::string> records_;
};

// A loaded package: its directory, the loader, and what it says about itself. The loader goes
// before the directory it was loaded from.
struct LoadedPackage {
  std::unique_ptr<UnpackedPackage> unpacked;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  torch::Device device{torch::kCPU};
  std::map<std::string, std::string> metadata;  // get_metadata()
  std::string wrapper_source;                   // <hash>.wrapper.cpp; empty when absent
  int runners = 1;

  ~LoadedPackage() {
    loader.reset();
    unpacked.reset();
  }
};

// "AOTI_DEVICE_KEY": "cpu" of a wrapper_metadata.json.
std::string DeviceKey(const std::string& metadata_json) {
  static const std::regex key(R"re("AOTI_DEVICE_KEY"\s*:\s*"([^"]*)")re");
  std::smatch match;
  return std::regex_search(metadata_json, match, key) ? match[1].str() : "";
}

// The CPU instruction sets (AOTI_CPU_ISA) the package's kernels use that this CPU lacks.
std::vector<std::string> MissingInstructionSets(const std::string& isa) {
  std::vector<std::string> missing;
#if defined(__x86_64__)
  __builtin_cpu_init();
  for (absl::string_view name : absl::StrSplit(isa, ' ', absl::SkipWhitespace())) {
    bool has = true;
    if (name == "AVX2") {
      has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    } else if (name == "AVX512") {
      has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    } else if (name == "AVX512_VNNI") {
      has = __builtin_cpu_supports("avx512vnni");
    }
    if (!has) missing.emplace_back(name);
  }
#else
  (void)isa;
#endif
  return missing;
}

absl::StatusOr<torch::Device> PackageDevice(const std::string& path, const std::string& key,
                                            const std::string& requested) {
  const bool cuda_available = torch::cuda::is_available();
  if (key != "cpu" && key != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("AOTInductor package ", path,
                                                   " is compiled for device \"", key,
                                                   "\"; this server runs cpu and cuda packages"));
  }
  torch::Device device(torch::kCPU);
  if (requested == "auto") {
    device = key == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  } else {
    try {
      device = torch::Device(requested);
    } catch (const c10::Error&) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device \"", requested, "\"; use cpu, cuda, cuda:N or auto"));
    }
  }
  if (device.type() != (key == "cuda" ? torch::kCUDA : torch::kCPU)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AOTInductor package ", path, " is compiled for ", key, " and cannot run on ",
                     device.str(), ": export it for ", device.is_cuda() ? "cuda" : "cpu",
                     " (scripts/export_model.py --device) or serve it on ", key));
  }
  if (device.is_cuda()) {
    if (!cuda_available) {
      return absl::FailedPreconditionError(absl::StrCat(
          "AOTInductor package ", path,
          " is compiled for cuda, but CUDA is not available to this server's libtorch: export it "
          "for cpu or serve it on a machine with a GPU"));
    }
    if (!device.has_index()) device.set_index(0);
    if (device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", device.str(), " does not exist; ", torch::cuda::device_count(), " GPU(s)"));
    }
  }
  return device;
}

// Unpacks and loads `path` with `runners` runners on the requested device.
absl::StatusOr<std::shared_ptr<LoadedPackage>> LoadPackage(const std::string& path,
                                                           const std::string& requested_device,
                                                           int runners) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    return absl::NotFoundError(
        absl::StrCat("model file ", path, " does not exist or is not a file"));
  }
  absl::StatusOr<std::unique_ptr<UnpackedPackage>> unpacked = UnpackedPackage::Unpack(path);
  if (!unpacked.ok()) return unpacked.status();
  auto package = std::make_shared<LoadedPackage>();
  package->unpacked = *std::move(unpacked);
  package->runners = runners;
  // data/aotinductor/<model>/: "model" unless the package holds one model of another name.
  std::set<std::string> models;
  std::string metadata_record;
  for (const std::string& record : package->unpacked->records()) {
    const std::vector<std::string> parts = absl::StrSplit(record, '/');
    if (parts.size() >= 4 && parts[0] == "data" && parts[1] == "aotinductor") {
      models.insert(parts[2]);
    }
  }
  if (models.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read AOTInductor package ", path,
        ": it holds no compiled model (data/aotinductor/); a TorchScript file? Serve that as "
        "model.pt (platform pytorch_libtorch)"));
  }
  const std::string model =
      models.count("model") > 0 || models.size() > 1 ? "model" : *models.begin();
  if (models.count(model) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("AOTInductor package ", path, " holds several models (",
                     absl::StrJoin(models, ", "), ") and none named \"model\""));
  }
  const std::string folder = absl::StrCat("data/aotinductor/", model, "/");
  for (const std::string& record : package->unpacked->records()) {
    if (!absl::StartsWith(record, folder)) continue;
    if (absl::EndsWith(record, ".wrapper.cpp")) {
      package->wrapper_source = package->unpacked->Read(record);
    } else if (absl::EndsWith(record, "wrapper_metadata.json")) {
      metadata_record = record;
    }
  }
  const std::string key =
      metadata_record.empty() ? "" : DeviceKey(package->unpacked->Read(metadata_record));
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read AOTInductor package ", path,
                     ": it names no device (AOTI_DEVICE_KEY in its wrapper_metadata.json)"));
  }
  absl::StatusOr<torch::Device> device = PackageDevice(path, key, requested_device);
  if (!device.ok()) return device.status();
  package->device = *device;
  try {
    base::MutexLock lock(LoaderConstructionMutex());
    // A directory loads as the unpacked package (the loader then writes nothing itself).
    package->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        package->unpacked->directory(), model, /*run_single_threaded=*/false,
        static_cast<size_t>(runners),
        package->device.is_cuda() ? package->device.index() : static_cast<c10::DeviceIndex>(-1));
    for (const auto& [name, value] : package->loader->get_metadata()) {
      package->metadata.emplace(name, value);
    }
  } catch (const c10::Error& load_error) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load AOTInductor package ", path, ": ",
                                                   Summary(load_error.what_without_backtrace())));
  } catch (const std::exception& load_error) {
    std::string why = Summary(load_error.what());
    if (absl::StrContains(why, "failed to map segment")) {
      absl::StrAppend(&why, " (is ", TemporaryFolder(),
                      " mounted noexec? Point TMPDIR at a folder that allows executables)");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load AOTInductor package ", path, ": ", why));
  }
  const auto isa = package->metadata.find("AOTI_CPU_ISA");
  if (package->device.is_cpu() && isa != package->metadata.end()) {
    const std::vector<std::string> missing = MissingInstructionSets(isa->second);
    if (!missing.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "AOTInductor package ", path, " is compiled for ", isa->second, " and this CPU lacks ",
          absl::StrJoin(missing, ", "), ": export it on a machine with this server's CPU"));
    }
    if (isa->second == "INVALID_VEC_ISA") {
      spdlog::warn(
          "AOTInductor package {} is compiled without SIMD (AOTI_CPU_ISA=INVALID_VEC_ISA): "
          "export it with scripts/export_model.py for vectorised kernels",
          path);
    }
  }
  return package;
}

}  // namespace aoti_loading

using aoti_loading::LoadedPackage;
using aoti_loading::LoadPackage;

class SharedAotiPackage {
 public:
  explicit SharedAotiPackage(int runners) : runners_(std::max(runners, 1)) {}

  // The package, loaded by the first instance to ask; the same for every instance after it for
  // as long as one holds it.
  absl::StatusOr<std::shared_ptr<LoadedPackage>> Acquire(const std::string& path,
                                                         const std::string& device) {
    base::MutexLock lock(mu_);
    if (std::shared_ptr<LoadedPackage> loaded = loaded_.lock()) {
      if (path != path_ || device != device_) {
        return absl::InternalError("instances sharing a package differ in its file or device");
      }
      return loaded;
    }
    absl::StatusOr<std::shared_ptr<LoadedPackage>> loaded = LoadPackage(path, device, runners_);
    if (!loaded.ok()) return loaded.status();
    loaded_ = *loaded;
    path_ = path;
    device_ = device;
    return loaded;
  }

 private:
  const int runners_;
  base::Mutex mu_;
  std::weak_ptr<LoadedPackage> loaded_ ABSL_GUARDED_BY(mu_);
  std::string path_ ABSL_GUARDED_BY(mu_);
  std::string device_ ABSL_GUARDED_BY(mu_);
};

namespace {

// Size a variable dimension gets in probe and warm-up runs, within what the package accepts.
constexpr int64_t kProbeSize = 16;

// The stream an instance computes on (see torch_handler.cc).
c10::Stream InstanceStream(const torch::Device& device) {
  const c10::impl::VirtualGuardImpl guard(device.type());
  return device.is_cpu() ? guard.getStream(device) : guard.getStreamFromGlobalPool(device);
}

std::string ShapeText(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The index a name ending in "__<i>" gives; nullopt for any other name.
std::optional<size_t> SuffixIndex(const std::string& name) {
  const size_t at = name.rfind("__");
  if (at == std::string::npos || at + 2 == name.size()) return std::nullopt;
  size_t index = 0;
  for (size_t i = at + 2; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    index = index * 10 + static_cast<size_t>(name[i] - '0');
  }
  return index;
}

class AotiHandler final : public ModelHandler {
 public:
  explicit AotiHandler(const AotiHandlerOptions& options) : options_(options) {}

  absl::Status Initialize() override {
    if (options_.torch_threads > 0) at::set_num_threads(options_.torch_threads);
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<LoadedPackage>> package =
        options_.shared ? options_.shared->Acquire(options_.package_path, options_.device)
                        : LoadPackage(options_.package_path, options_.device, 1);
    if (!package.ok()) return package.status();
    package_ = *std::move(package);
    try {
      stream_ = InstanceStream(package_->device);
    } catch (const c10::Error& error) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no stream on ", package_->device.str(), ": ", Summary(error.what_without_backtrace())));
    }
    if (absl::Status settled = SettleSignature(); !settled.ok()) return InPackage(settled);
    const auto loaded = std::chrono::steady_clock::now();
    initialize_times_.load_seconds = SecondsBetween(start, loaded);
    spdlog::info("AOTInductor package {} loaded on {} in {:.0f} ms ({} runner{}, CPU ISA {})",
                 options_.package_path, package_->device.str(),
                 initialize_times_.load_seconds * 1e3, package_->runners,
                 package_->runners == 1 ? "" : "s", MetadataValue("AOTI_CPU_ISA", "-"));
    if (absl::Status warmed = WarmUp(); !warmed.ok()) return InPackage(warmed);
    initialize_times_.warmup_seconds = SecondsBetween(loaded, std::chrono::steady_clock::now());
    spdlog::info("package warmed up in {:.0f} ms: {} inputs, {} outputs, max batch {}{}",
                 initialize_times_.warmup_seconds * 1e3, signature_.inputs.size(),
                 signature_.outputs.size(), signature_.max_batch_size,
                 pad_to_ > 1 ? absl::StrCat(", batches padded to ", pad_to_, " rows") : "");
    return absl::OkStatus();
  }

  const ModelSignature& signature() const override { return signature_; }
  InitializeTimes initialize_times() const override { return initialize_times_; }

  std::vector<char*> PrepareBatch(const std::vector<Dims>& shapes) override {
    std::vector<char*> buffers;
    buffers.reserve(shapes.size());
    rows_ = signature_.batches() && !shapes.empty() && !shapes[0].empty() ? shapes[0][0] : 0;
    const int64_t run_rows = std::max(rows_, pad_to_);
    for (size_t i = 0; i < shapes.size(); ++i) {
      Dims shape = shapes[i];
      if (signature_.batches() && !shape.empty()) shape[0] = run_rows;
      const int64_t elements = ElementCount(shape).value_or(0);
      torch::Tensor& buffer = buffers_[i];
      if (!buffer.defined() || buffer.numel() < elements) {
        const int64_t capacity =
            std::max<int64_t>(elements, buffer.defined() ? 2 * buffer.numel() : elements);
        buffer = torch::empty({std::max<int64_t>(capacity, 1)},
                              torch::TensorOptions(TorchType(signature_.inputs[i].type))
                                  .pinned_memory(package_->device.is_cuda()));
      }
      batch_inputs_[i] =
          buffer.narrow(0, 0, elements).view(c10::IntArrayRef(shape.data(), shape.size()));
      buffers.push_back(static_cast<char*>(buffer.data_ptr()));
    }
    return buffers;
  }

  absl::StatusOr<const std::vector<OutputTensor>*> Run() override {
    if (signature_.batches() && (rows_ < 1 || rows_ > signature_.max_batch_size)) {
      return absl::InternalError(absl::StrCat("a batch of ", rows_,
                                              " rows is outside what the package accepts (1 to ",
                                              signature_.max_batch_size, ")"));
    }
    ApplyThreads();
    try {
      c10::InferenceMode inference_mode;
      const c10::StreamGuard stream_guard(stream_);
      std::vector<torch::Tensor> inputs;
      inputs.reserve(batch_inputs_.size());
      for (size_t i = 0; i < batch_inputs_.size(); ++i) {
        torch::Tensor input = batch_inputs_[i];
        if (signature_.batches() && rows_ < pad_to_) {
          // Rows the package needs at least: copies of the first row, dropped from the outputs.
          input.narrow(0, rows_, pad_to_ - rows_).copy_(input.narrow(0, 0, 1));
        }
        const TensorSpec& spec = signature_.inputs[i];
        if (spec.reshaped) {
          std::vector<int64_t> shape;
          if (signature_.batches()) shape.push_back(input.size(0));
          shape.insert(shape.end(), spec.reshape.begin(), spec.reshape.end());
          input = input.view(shape);
        }
        inputs.push_back(input.to(package_->device, /*non_blocking=*/true));
      }
      void* stream = package_->device.is_cuda() ? stream_.native_handle() : nullptr;
      std::vector<torch::Tensor> results = package_->loader->run(inputs, stream);
      results_ = std::move(results);
      for (size_t i = 0; i < signature_.outputs.size(); ++i) {
        if (output_positions_[i] >= results_.size()) {
          return absl::InternalError(absl::StrCat("the package gives ", results_.size(),
                                                  " outputs; output \"", signature_.outputs[i].name,
                                                  "\" is its number ", output_positions_[i]));
        }
        absl::Status kept = KeepOutput(i, results_[output_positions_[i]]);
        if (!kept.ok()) return kept;
      }
    } catch (const c10::Error& error) {
      return absl::InternalError(
          absl::StrCat("package run failed: ", Summary(error.what_without_backtrace())));
    } catch (const std::exception& error) {
      return absl::InternalError(absl::StrCat("package run failed: ", Summary(error.what())));
    }
    return &outputs_;
  }

  void Cleanup() override {
    buffers_.clear();
    batch_inputs_.clear();
    results_.clear();
    output_tensors_.clear();
    outputs_.clear();
    package_.reset();
  }

 private:
  // The package's CPU kernels parallelise with OpenMP regions of their own, which take the
  // calling thread's OpenMP thread count: left at its default (every CPU) on a batch thread, a
  // region waits for threads the other instances and the codec need (a batch of 64 rows took
  // 16 ms instead of 0.1 ms on a busy 2-core machine). Each thread that runs the package sets it
  // to torch's intra-op count (--torch-threads) once.
  static void ApplyThreads() {
    thread_local bool applied = false;
    if (applied) return;
    at::init_num_threads();
    applied = true;
  }

  absl::Status InPackage(const absl::Status& status) const {
    return absl::Status(status.code(), absl::StrCat("AOTInductor package ", options_.package_path,
                                                    ": ", status.message()));
  }

  std::string MetadataValue(const std::string& key, const std::string& otherwise) const {
    const auto found = package_->metadata.find(key);
    return found == package_->metadata.end() ? otherwise : found->second;
  }

  // The signature: declared, else from the package's metadata, else from its input checks and
  // a probe run; then the batch plan and the checks against the package.
  absl::Status SettleSignature() {
    absl::StatusOr<ServerMetadata> metadata = ReadServerMetadata(package_->metadata);
    if (!metadata.ok()) return metadata.status();
    checks_ = ReadInputChecks(package_->wrapper_source);
    int64_t max_batch_size = options_.max_batch_rows;
    if (options_.signature) {
      signature_ = *options_.signature;
      max_batch_size = signature_.max_batch_size;
    } else if (!metadata->inputs.empty()) {
      signature_.inputs = metadata->inputs;
      signature_.outputs = metadata->outputs;
      signature_.max_batch_size = max_batch_size;
    } else {
      if (!metadata->outputs.empty()) {
        return absl::InvalidArgumentError("its metadata names outputs but no inputs");
      }
      absl::Status read = InputsFromChecks();
      if (!read.ok()) return read;
      signature_.max_batch_size = max_batch_size;
    }
    if (signature_.batches()) {
      absl::StatusOr<BatchRange> range =
          PackageBatchRange(*metadata, checks_, RuntimeInputChecksEnabled());
      if (!range.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(range.status().message(),
                         "; declare max_batch_size: 0 in config.pbtxt to serve it unbatched"));
      }
      absl::StatusOr<BatchPlan> plan = PlanBatches(*range, max_batch_size);
      if (!plan.ok()) return plan.status();
      if (plan->max_batch_size < max_batch_size) {
        spdlog::info("AOTInductor package {} accepts batches of up to {} rows ({}): max batch {}",
                     options_.package_path, *range->max, range->source, plan->max_batch_size);
      }
      signature_.max_batch_size = plan->max_batch_size;
      pad_to_ = plan->pad_to;
      if (pad_to_ > 1) {
        spdlog::warn(
            "AOTInductor package {} accepts batches of {} rows or more ({}): smaller batches "
            "run padded to {} rows{}",
            options_.package_path, pad_to_, range->source, pad_to_,
            RuntimeInputChecksEnabled() ? ""
                                        : "; export it with scripts/export_model.py to avoid that");
      }
    }
    const std::string difference =
        CheckedDifference(signature_.inputs, signature_.batches(), checks_);
    if (!difference.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs do not match the package's: ", difference));
    }
    buffers_.resize(signature_.inputs.size());
    batch_inputs_.resize(signature_.inputs.size());
    if (signature_.outputs.empty()) {
      if (absl::Status read = ReadOutputs(); !read.ok()) return read;
    }
    if (absl::Status bound = BindOutputs(); !bound.ok()) return bound;
    if (!options_.signature) {
      if (absl::Status seed = SettleSeed(*metadata); !seed.ok()) return seed;
    }
    return absl::OkStatus();
  }

  // Inputs INPUT__<i> as the package's checks state them.
  absl::Status InputsFromChecks() {
    if (checks_.empty()) {
      return absl::InvalidArgumentError(
          "cannot tell its inputs: it has no model_server metadata (scripts/export_model.py "
          "writes it) and no input checks this server reads; declare its inputs and outputs in "
          "config.pbtxt");
    }
    for (size_t i = 0; i < checks_.size(); ++i) {
      const CheckedInput& check = checks_[i];
      if (!check.type) {
        return absl::InvalidArgumentError(
            absl::StrCat("its input ", i, " has type ",
                         check.type_name.empty() ? "(not stated)" : check.type_name,
                         ", which no wire protocol carries; declare the inputs in config.pbtxt"));
      }
      if (check.dims.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("its input ", i,
                                                       " has no batch dimension; serve it "
                                                       "unbatched (max_batch_size: 0, inputs "
                                                       "declared in config.pbtxt)"));
      }
      TensorSpec spec;
      spec.name = absl::StrCat("INPUT__", i);
      spec.type = *check.type;
      for (size_t d = 1; d < check.dims.size(); ++d) {
        spec.dims.push_back(check.dims[d].fixed() ? check.dims[d].min : kAnySize);
      }
      signature_.inputs.push_back(std::move(spec));
    }
    return absl::OkStatus();
  }

  // The size of variable dimension `d` (after the batch dimension) of input `i` in probe and
  // warm-up runs: kProbeSize within the range the package's checks give.
  int64_t ProbeSize(size_t i, size_t d) const {
    const size_t at = d + (signature_.batches() ? 1 : 0);
    if (i >= checks_.size() || at >= checks_[i].dims.size()) return kProbeSize;
    const CheckedDim& dim = checks_[i].dims[at];
    int64_t size = std::max<int64_t>(kProbeSize, dim.min);
    if (dim.max) size = std::min(size, *dim.max);
    return size;
  }

  // Inputs of `rows` rows (no batch dimension when 0), zeros (optional ones their default).
  void FillProbe(int64_t rows) {
    std::vector<Dims> shapes;
    for (size_t i = 0; i < signature_.inputs.size(); ++i) {
      const TensorSpec& input = signature_.inputs[i];
      Dims shape;
      if (signature_.batches()) shape.push_back(rows);
      for (size_t d = 0; d < input.dims.size(); ++d) {
        shape.push_back(input.dims[d] == kAnySize ? ProbeSize(i, d) : input.dims[d]);
      }
      shapes.push_back(std::move(shape));
    }
    FillDefaultInputs(signature_, shapes, PrepareBatch(shapes));
  }

  // Outputs OUTPUT__<i> as a probe run of two rows gives them.
  absl::Status ReadOutputs() {
    FillProbe(signature_.batches() ? std::min<int64_t>(2, signature_.max_batch_size) : 0);
    results_.clear();
    absl::StatusOr<const std::vector<OutputTensor>*> ran = ProbeRun();
    if (!ran.ok()) return ran.status();
    const size_t skip = signature_.batches() ? 1 : 0;
    for (size_t i = 0; i < probe_results_.size(); ++i) {
      const torch::Tensor& tensor = probe_results_[i];
      TensorSpec output;
      output.name = absl::StrCat("OUTPUT__", i);
      std::optional<DataType> type = WireType(tensor.scalar_type());
      if (!type) {
        return absl::InvalidArgumentError(absl::StrCat("output ", i, " has type ",
                                                       c10::toString(tensor.scalar_type()),
                                                       ", which no wire protocol carries"));
      }
      output.type = *type;
      if (tensor.dim() < static_cast<int64_t>(skip)) {
        return absl::InvalidArgumentError(absl::StrCat("output ", i, " has no batch dimension"));
      }
      for (int64_t d = skip; d < tensor.dim(); ++d) output.dims.push_back(tensor.size(d));
      signature_.outputs.push_back(std::move(output));
    }
    probe_results_.clear();
    return absl::OkStatus();
  }

  // A run whose results are kept whole in probe_results_ (before the outputs are known).
  absl::StatusOr<const std::vector<OutputTensor>*> ProbeRun() {
    ApplyThreads();
    try {
      c10::InferenceMode inference_mode;
      const c10::StreamGuard stream_guard(stream_);
      std::vector<torch::Tensor> inputs;
      for (size_t i = 0; i < batch_inputs_.size(); ++i) {
        torch::Tensor input = batch_inputs_[i];
        if (signature_.batches() && rows_ < pad_to_) {
          input.narrow(0, rows_, pad_to_ - rows_).copy_(input.narrow(0, 0, 1));
        }
        inputs.push_back(input.to(package_->device));
      }
      void* stream = package_->device.is_cuda() ? stream_.native_handle() : nullptr;
      probe_results_ = package_->loader->run(inputs, stream);
      if (signature_.batches() && rows_ < pad_to_) {
        for (torch::Tensor& result : probe_results_) {
          if (result.dim() > 0) result = result.narrow(0, 0, rows_);
        }
      }
    } catch (const c10::Error& error) {
      return absl::InvalidArgumentError(
          absl::StrCat("probe run failed: ", Summary(error.what_without_backtrace())));
    } catch (const std::exception& error) {
      return absl::InvalidArgumentError(absl::StrCat("probe run failed: ", Summary(error.what())));
    }
    return &outputs_;
  }

  // Which of the package's outputs each output of the signature is: its "__<i>" index, else its
  // position.
  absl::Status BindOutputs() {
    output_positions_.clear();
    std::set<size_t> taken;
    for (size_t i = 0; i < signature_.outputs.size(); ++i) {
      const std::optional<size_t> index = SuffixIndex(signature_.outputs[i].name);
      const size_t position = index.value_or(i);
      if (!taken.insert(position).second) {
        return absl::InvalidArgumentError(absl::StrCat("output \"", signature_.outputs[i].name,
                                                       "\" binds to the package's output ",
                                                       position, " a second time"));
      }
      output_positions_.push_back(position);
    }
    outputs_.resize(signature_.outputs.size());
    output_tensors_.resize(signature_.outputs.size());
    return absl::OkStatus();
  }

  // The seed mapping: the metadata's (tensors it leaves out as DefaultSeedSignature finds
  // them), else the one the signature allows by itself.
  absl::Status SettleSeed(const ServerMetadata& metadata) {
    absl::StatusOr<std::optional<SeedDeclaration>> declared = ParseSeedParameters(metadata.seed);
    if (!declared.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("package metadata model_server.", declared.status().message()));
    }
    const std::optional<SeedSignature> found = DefaultSeedSignature(signature_);
    if (!*declared) {
      signature_.seed = found;
      return absl::OkStatus();
    }
    SeedDeclaration declaration = **declared;
    if (found) {
      if (declaration.columns.empty()) {
        declaration.columns = signature_.inputs[found->columns_input].name;
      }
      if (declaration.params.empty() && found->params_input) {
        declaration.params = signature_.inputs[*found->params_input].name;
      }
      if (declaration.output.empty()) declaration.output = signature_.outputs[found->output].name;
    }
    if (declaration.columns.empty() || declaration.output.empty()) {
      return absl::InvalidArgumentError(
          "its metadata declares a seed mapping but names no columns input or output "
          "(model_server.seed_columns, model_server.seed_output) and none is FP32 [k]");
    }
    absl::Status applied = ApplySeedDeclaration(declaration, &signature_);
    if (!applied.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("its metadata's ", applied.message()));
    }
    return absl::OkStatus();
  }

  // Checks output `i` against its spec and keeps it, on the host, for the batch's rows.
  absl::Status KeepOutput(size_t i, torch::Tensor tensor) {
    const TensorSpec& spec = signature_.outputs[i];
    const size_t skip = signature_.batches() ? 1 : 0;
    if (skip == 1 && tensor.dim() > 0 && rows_ < pad_to_ && tensor.size(0) == pad_to_) {
      tensor = tensor.narrow(0, 0, rows_);
    }
    const auto wrong = [&] {
      std::string expected = DimsText(spec.reshaped ? spec.reshape : spec.dims);
      if (skip == 1)
        expected.insert(1, absl::StrCat(rows_, spec.dims.empty() && !spec.reshaped ? "" : ", "));
      return absl::InternalError(absl::StrCat("package output \"", spec.name, "\" has shape ",
                                              ShapeText(tensor.sizes()), "; expected ", expected));
    };
    if (skip == 1 && (tensor.dim() == 0 || tensor.size(0) != rows_)) return wrong();
    const c10::IntArrayRef per_row = tensor.sizes().slice(skip);
    const Dims& expected = spec.reshaped ? spec.reshape : spec.dims;
    if (per_row.size() != expected.size()) return wrong();
    for (size_t d = 0; d < per_row.size(); ++d) {
      if (expected[d] != kAnySize && expected[d] != per_row[d]) return wrong();
    }
    torch::Tensor host = tensor;
    if (spec.reshaped) {
      std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().begin() + skip);
      for (const int64_t dim : spec.dims) shape.push_back(dim);
      host = tensor.reshape(shape);
    }
    output_tensors_[i] = host.to(torch::kCPU, TorchType(spec.type)).contiguous();
    OutputTensor& output = outputs_[i];
    output.type = spec.type;
    output.shape.assign(output_tensors_[i].sizes().begin(), output_tensors_[i].sizes().end());
    output.data = static_cast<const char*>(output_tensors_[i].data_ptr());
    return absl::OkStatus();
  }

  // Runs the batch sizes the batcher will build, checking the outputs against the signature.
  absl::Status WarmUp() {
    std::set<int64_t> sizes = {0};
    if (signature_.batches()) {
      sizes = {1, 2, 7, 64, 512, signature_.max_batch_size};
      for (auto it = sizes.begin(); it != sizes.end();) {
        it = *it > signature_.max_batch_size ? sizes.erase(it) : std::next(it);
      }
    }
    for (const int64_t rows : sizes) {
      FillProbe(rows);
      if (absl::StatusOr<const std::vector<OutputTensor>*> ran = Run(); !ran.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "warm-up run", signature_.batches() ? absl::StrCat(" on ", rows, " rows") : "",
            " failed: ", ran.status().message()));
      }
    }
    return absl::OkStatus();
  }

  const AotiHandlerOptions options_;
  std::shared_ptr<LoadedPackage> package_;
  c10::Stream stream_{c10::Stream::DEFAULT, torch::Device(torch::kCPU)};
  ModelSignature signature_;
  InitializeTimes initialize_times_;
  std::vector<CheckedInput> checks_;
  int64_t pad_to_ = 1;                         // a batch of fewer rows runs padded to this many
  int64_t rows_ = 0;                           // the rows of the last PrepareBatch
  std::vector<size_t> output_positions_;       // output i → the package's output
  std::vector<torch::Tensor> buffers_;         // per input: host memory, reused across batches
  std::vector<torch::Tensor> batch_inputs_;    // per input: the batch's view of buffers_
  std::vector<torch::Tensor> results_;         // the last run's outputs, as the package gave them
  std::vector<torch::Tensor> probe_results_;   // a probe run's, before the outputs are known
  std::vector<torch::Tensor> output_tensors_;  // per output: the batch's, on the host
  std::vector<OutputTensor> outputs_;          // per output: views of output_tensors_
};

}  // namespace

std::unique_ptr<ModelHandler> MakeAotiHandler(const AotiHandlerOptions& options) {
  return std::make_unique<AotiHandler>(options);
}

std::shared_ptr<SharedAotiPackage> MakeSharedAotiPackage(int runners) {
  return std::make_shared<SharedAotiPackage>(runners);
}

std::string AotiUnavailable() { return ""; }

}  // namespace model_server::handlers

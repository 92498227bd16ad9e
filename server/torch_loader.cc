#include "server/torch_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"
#include "handlers/torch/aoti_handler.h"
#include "repository/model_config.h"

namespace model_server::server {
namespace {

// Triton's PyTorch backend parameters (its README), by what this server does with each.
// Set in the handler's options:
constexpr char kDisableOptimizedExecution[] = "DISABLE_OPTIMIZED_EXECUTION";
constexpr char kInferenceMode[] = "INFERENCE_MODE";
// Switches of process-wide libtorch state (or of GPU memory, or of weights shared between
// instances) that the server never changes: accepted with the value that is libtorch's own (or
// what the server does), refused otherwise.
struct FixedParameter {
  const char* name;
  bool value;       // the value accepted
  const char* why;  // why another is refused
};
constexpr FixedParameter kFixedParameters[] = {
    {"ENABLE_JIT_EXECUTOR", true, "it switches libtorch's executor for the whole process"},
    {"ENABLE_JIT_PROFILING", true, "it switches libtorch's profiling for the whole process"},
    {"ENABLE_TENSOR_FUSER", true, "it switches libtorch's fuser for the whole process"},
    {"ENABLE_NVFUSER", false, "it switches libtorch's fuser for the whole process"},
    {"ENABLE_WEIGHT_SHARING", true, "instances on one device share one copy of the weights"},
    {"ENABLE_CACHE_CLEANING", false, "the CUDA cache is not emptied after each batch"},
};
// Thread counts: the server's --torch-threads sets them.
constexpr const char* kThreadParameters[] = {"INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"};

bool IsSeedParameter(const std::string& key) {
  return std::any_of(std::begin(handlers::kSeedParameterNames),
                     std::end(handlers::kSeedParameterNames),
                     [&](const char* name) { return key == name; });
}

// A boolean parameter as the PyTorch backend reads one: true, yes, on or 1; false, no, off or 0
// (any case).
absl::StatusOr<bool> BooleanParameter(const std::string& key, const std::string& text) {
  const std::string value = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (value == "true" || value == "yes" || value == "on" || value == "1") return true;
  if (value == "false" || value == "no" || value == "off" || value == "0") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("config parameter \"", key, "\" is \"", text, "\"; it takes true or false"));
}

// Applies the PyTorch backend's parameters of `config` to `options`; refuses any parameter that
// is neither one of them, the seed mapping's nor the batcher's (latency objective).
absl::Status BackendParameters(const inference::ModelConfig& config,
                               handlers::TorchHandlerOptions* options) {
  for (const auto& [key, value] : config.parameters()) {
    if (IsSeedParameter(key)) continue;
    if (key == repository::kLatencyObjectiveParameter) continue;  // the batcher's
    if (key == kDisableOptimizedExecution || key == kInferenceMode) {
      absl::StatusOr<bool> on = BooleanParameter(key, value.string_value());
      if (!on.ok()) return on.status();
      if (key == kDisableOptimizedExecution) {
        options->optimized_execution = !*on;
      } else {
        options->inference_mode = *on;
      }
      continue;
    }
    const auto fixed = std::find_if(std::begin(kFixedParameters), std::end(kFixedParameters),
                                    [&](const FixedParameter& p) { return key == p.name; });
    if (fixed != std::end(kFixedParameters)) {
      absl::StatusOr<bool> on = BooleanParameter(key, value.string_value());
      if (!on.ok()) return on.status();
      if (*on != fixed->value) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config parameter \"", key, "\": ", *on ? "true" : "false", " is not supported (",
            fixed->why, "); leave it out or set it ", fixed->value ? "true" : "false"));
      }
      continue;
    }
    const bool threads = std::any_of(std::begin(kThreadParameters), std::end(kThreadParameters),
                                     [&](const char* name) { return key == name; });
    if (threads) {
      return absl::InvalidArgumentError(
          absl::StrCat("config parameter \"", key,
                       "\" is not supported: libtorch's threads are the process's, set with "
                       "model_server --torch-threads"));
    }
    std::vector<std::string> known(std::begin(handlers::kSeedParameterNames),
                                   std::end(handlers::kSeedParameterNames));
    known.push_back(kDisableOptimizedExecution);
    known.push_back(kInferenceMode);
    for (const FixedParameter& parameter : kFixedParameters) known.push_back(parameter.name);
    known.push_back(repository::kLatencyObjectiveParameter);
    return absl::InvalidArgumentError(
        absl::StrCat("config parameter \"", key,
                     "\" is not supported (supported: ", absl::StrJoin(known, ", "), ")"));
  }
  return absl::OkStatus();
}

// The seed declaration in the configuration's parameters; nullopt when it has none.
absl::StatusOr<std::optional<handlers::SeedDeclaration>> SeedParameters(
    const inference::ModelConfig& config) {
  std::map<std::string, std::string> parameters;
  for (const auto& [key, value] : config.parameters()) {
    if (IsSeedParameter(key)) parameters.emplace(key, value.string_value());
  }
  absl::StatusOr<std::optional<handlers::SeedDeclaration>> declaration =
      handlers::ParseSeedParameters(parameters);
  if (!declaration.ok()) {
    return absl::Status(declaration.status().code(),
                        absl::StrCat("config parameter ", declaration.status().message()));
  }
  if (*declaration && ((*declaration)->columns.empty() || (*declaration)->output.empty())) {
    return absl::InvalidArgumentError(
        "config parameters seed_columns and seed_output name the seed's tensors; both are needed "
        "with any other seed parameter");
  }
  return declaration;
}

// The declared signature: the configuration's tensors and the seed mapping.
absl::StatusOr<handlers::ModelSignature> DeclaredSignature(const inference::ModelConfig& config) {
  absl::StatusOr<repository::ConfigSignature> tensors = repository::SignatureFromConfig(config);
  if (!tensors.ok()) return tensors.status();
  handlers::ModelSignature signature;
  signature.inputs = std::move(tensors->inputs);
  signature.outputs = std::move(tensors->outputs);
  signature.max_batch_size = tensors->max_batch_size;
  absl::StatusOr<std::optional<handlers::SeedDeclaration>> seed = SeedParameters(config);
  if (!seed.ok()) return seed.status();
  if (*seed) {
    if (absl::Status applied = handlers::ApplySeedDeclaration(**seed, &signature); !applied.ok()) {
      return applied;
    }
  }
  for (const handlers::TensorSpec& input : signature.inputs) {
    if (input.optional && !input.default_value) {
      return absl::InvalidArgumentError(
          absl::StrCat("optional input \"", input.name,
                       "\" has no default: only the seed's parameters input may be optional (with "
                       "default_params)"));
    }
  }
  if (!*seed) signature.seed = handlers::DefaultSeedSignature(signature);
  return signature;
}

}  // namespace

absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> InstanceOptions(
    const repository::RepositoryModel& model, const repository::VersionFile& version,
    const TorchLoaderOptions& options) {
  const inference::ModelConfig& config = model.config;
  const auto in_model = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat("model \"", model.name, "\": ", status.message()));
  };
  if (config.platform() == repository::kPlatformAoti) {
    // The caller names the model and its file.
    if (const std::string unavailable = handlers::AotiUnavailable(); !unavailable.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "it is an AOTInductor package (.pt2, platform torch_aoti), and ", unavailable));
    }
  }
  if (config.model_warmup_size() > 0) {
    return in_model(absl::InvalidArgumentError(
        "config field model_warmup is not supported: the server warms up every batch size it "
        "uses itself (variable dimensions at size 16)"));
  }
  handlers::TorchHandlerOptions base = options.handler;
  base.model_path = version.path;
  if (absl::Status parameters = BackendParameters(config, &base); !parameters.ok()) {
    return in_model(parameters);
  }
  if (config.input_size() > 0 || config.output_size() > 0) {
    absl::StatusOr<handlers::ModelSignature> signature = DeclaredSignature(config);
    if (!signature.ok()) return in_model(signature.status());
    base.signature = *std::move(signature);
  } else {
    const bool seed = std::any_of(config.parameters().begin(), config.parameters().end(),
                                  [](const auto& entry) { return IsSeedParameter(entry.first); });
    if (seed) {
      return in_model(absl::InvalidArgumentError(
          "config parameters seed_* need the inputs and outputs they name declared in the "
          "config"));
    }
    if (config.max_batch_size() > 0) base.max_batch_rows = config.max_batch_size();
  }
  const int visible_gpus =
      options.visible_gpus >= 0 ? options.visible_gpus : handlers::VisibleGpus();
  const bool spread = base.device == "auto" && visible_gpus > 0;
  const auto on_gpu = [](int gpu) { return absl::StrCat("cuda:", gpu); };
  std::vector<handlers::TorchHandlerOptions> instances;
  const auto add = [&](std::string device) {
    handlers::TorchHandlerOptions instance = base;
    instance.device = std::move(device);
    instance.stream_key = absl::StrCat(model.name, "#", instances.size());
    instances.push_back(std::move(instance));
  };
  base.share = handlers::MakeTorchVersionShare();
  if (config.instance_group_size() == 0) {
    for (int i = 0; i < std::max(options.instances, 1); ++i) {
      add(spread ? on_gpu(i % visible_gpus) : base.device);
    }
    return instances;
  }
  for (const inference::ModelInstanceGroup& group : config.instance_group()) {
    const int count = std::max(group.count(), 1);
    const bool gpu = group.kind() == inference::ModelInstanceGroup::KIND_GPU ||
                     (group.kind() == inference::ModelInstanceGroup::KIND_AUTO && spread);
    if (!gpu) {
      const bool cpu = group.kind() == inference::ModelInstanceGroup::KIND_CPU;
      for (int i = 0; i < count; ++i) add(cpu ? "cpu" : base.device);
      continue;
    }
    std::vector<int> gpus(group.gpus().begin(), group.gpus().end());
    if (gpus.empty()) {
      if (visible_gpus == 0) {
        return in_model(absl::FailedPreconditionError(
            "instance_group KIND_GPU lists no gpus, and libtorch sees no GPU to place them on"));
      }
      for (int g = 0; g < visible_gpus; ++g) gpus.push_back(g);
    }
    // As Triton: `count` instances on each GPU of the group.
    for (const int g : gpus) {
      for (int i = 0; i < count; ++i) add(on_gpu(g));
    }
  }
  return instances;
}

VersionLoader MakeTorchLoader(TorchLoaderOptions options) {
  return [options](const repository::RepositoryModel& model,
                   const repository::VersionFile& version) -> absl::StatusOr<Instances> {
    absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> each =
        InstanceOptions(model, version, options);
    if (!each.ok()) return each.status();
    const bool aoti = model.config.platform() == repository::kPlatformAoti;
    if (aoti && options.handler.precision != "fp32") {
      spdlog::warn(
          "model {}: --precision {} does not apply to AOTInductor package {}: it computes in the "
          "types it was exported with",
          model.name, options.handler.precision, version.path);
    }
    // Instances of a package on one device share one loader, one runner each.
    std::map<std::string, int> per_device;
    for (const handlers::TorchHandlerOptions& instance : *each) ++per_device[instance.device];
    std::map<std::string, std::shared_ptr<handlers::SharedAotiPackage>> shared;
    Instances instances;
    for (const handlers::TorchHandlerOptions& instance : *each) {
      std::unique_ptr<handlers::ModelHandler> handler;
      if (aoti) {
        handlers::AotiHandlerOptions package;
        package.package_path = instance.model_path;
        package.device = instance.device;
        package.torch_threads = instance.torch_threads;
        package.max_batch_rows = instance.max_batch_rows;
        package.signature = instance.signature;
        if (options.share_aoti_package && per_device[instance.device] > 1) {
          std::shared_ptr<handlers::SharedAotiPackage>& one = shared[instance.device];
          if (!one) one = handlers::MakeSharedAotiPackage(per_device[instance.device]);
          package.shared = one;
        }
        handler = handlers::MakeAotiHandler(package);
      } else {
        handler = handlers::MakeTorchHandler(instance);
      }
      absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> loaded =
          handlers::LoadedModel::Load(std::move(handler));
      if (!loaded.ok()) return loaded.status();
      instances.push_back(*std::move(loaded));
    }
    return instances;
  };
}

}  // namespace model_server::server

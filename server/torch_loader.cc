#include "server/torch_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"
#include "handlers/torch/aoti_handler.h"
#include "repository/model_config.h"

namespace model_server::server {
namespace {

// The seed declaration in the configuration's parameters; nullopt when it has none.
absl::StatusOr<std::optional<handlers::SeedDeclaration>> SeedParameters(
    const inference::ModelConfig& config) {
  std::map<std::string, std::string> parameters;
  for (const auto& [key, value] : config.parameters()) {
    const bool known = std::any_of(std::begin(handlers::kSeedParameterNames),
                                   std::end(handlers::kSeedParameterNames),
                                   [&](const char* name) { return key == name; });
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("config parameter \"", key, "\" is not supported (supported: ",
                       absl::StrJoin(std::begin(handlers::kSeedParameterNames),
                                     std::end(handlers::kSeedParameterNames), ", "),
                       ")"));
    }
    parameters.emplace(key, value.string_value());
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
  handlers::TorchHandlerOptions base = options.handler;
  base.model_path = version.path;
  if (config.input_size() > 0 || config.output_size() > 0) {
    absl::StatusOr<handlers::ModelSignature> signature = DeclaredSignature(config);
    if (!signature.ok()) return in_model(signature.status());
    base.signature = *std::move(signature);
  } else {
    if (!config.parameters().empty()) {
      return in_model(absl::InvalidArgumentError(
          "config parameters need the inputs and outputs they name declared in the config"));
    }
    if (config.max_batch_size() > 0) base.max_batch_rows = config.max_batch_size();
  }
  std::vector<handlers::TorchHandlerOptions> instances;
  if (config.instance_group_size() == 0) {
    instances.assign(std::max(options.instances, 1), base);
    return instances;
  }
  for (const inference::ModelInstanceGroup& group : config.instance_group()) {
    const int count = std::max(group.count(), 1);
    for (int i = 0; i < count; ++i) {
      handlers::TorchHandlerOptions instance = base;
      if (group.kind() == inference::ModelInstanceGroup::KIND_CPU) {
        instance.device = "cpu";
      } else if (group.kind() == inference::ModelInstanceGroup::KIND_GPU) {
        instance.device = group.gpus_size() == 0
                              ? "cuda:0"
                              : absl::StrCat("cuda:", group.gpus(i % group.gpus_size()));
      }
      instances.push_back(std::move(instance));
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

#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "repository/model_repository.h"
#include "server/served_model.h"

namespace model_server::server {

// Loads version `version` of `model`: one instance per batch thread, each loaded and warmed up,
// all of the same signature. Errors name the problem (the model's own file, a forward that does
// not match the configuration, ...).
using VersionLoader = std::function<absl::StatusOr<Instances>(
    const repository::RepositoryModel& model, const repository::VersionFile& version)>;

// Where the ModelManager finds models: their names, configurations, versions and files, and how
// to load a version. Called from one thread at a time (the manager's).
class ModelCatalog {
 public:
  virtual ~ModelCatalog() = default;

  // Every model it holds, sorted. Errors: the catalog cannot be read.
  virtual absl::StatusOr<std::vector<std::string>> Names() = 0;
  // The model `name` as it is now: its configuration and the versions to serve. `again`: the
  // caller will load every version anew whether or not it changed (SIGHUP); a catalog that
  // numbers the versions itself numbers them anew. Errors name the model and the problem.
  virtual absl::StatusOr<repository::RepositoryModel> Read(const std::string& name, bool again) = 0;
  // A digest of the model's files: when it differs from the one Read gave, the model changed.
  virtual absl::StatusOr<uint64_t> Fingerprint(const std::string& name) = 0;
  // See VersionLoader.
  virtual absl::StatusOr<Instances> Load(const repository::RepositoryModel& model,
                                         const repository::VersionFile& version) = 0;
  // Tells the catalog that `version` of `name` serves now (a catalog that numbers versions
  // itself numbers the next one after it).
  virtual void Served(const std::string& /*name*/, int64_t /*version*/) {}
};

// A Triton model repository (repository/): its folders are the models, its version folders the
// versions, loaded by `loader`.
std::unique_ptr<ModelCatalog> MakeRepositoryCatalog(repository::ModelRepository repository,
                                                    VersionLoader loader);

// One model from a file, outside any repository (--model NAME=PATH, MODEL_LOC, the built-in
// demo model).
struct FileModel {
  std::string name;
  // The model file, watched for changes; empty: no file (the demo model), never changed.
  std::string path;
  // Loads a version from `path` (VersionFile::path).
  VersionLoader load;
};

// Models from files, which the server numbers: version 1 at first, then one more than the
// version serving each time the file has changed (modification time, size, inode or device) when
// it is read, or a reload is asked for. The configuration is TorchScript's ("pytorch_libtorch"), or
// AOTInductor's
// ("torch_aoti") for a .pt2 file, with nothing else declared. Errors: INVALID_ARGUMENT for a
// name twice or a name ValidateModelName refuses.
absl::StatusOr<std::unique_ptr<ModelCatalog>> MakeFileCatalog(std::vector<FileModel> models);

}  // namespace model_server::server

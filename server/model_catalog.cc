#include "server/model_catalog.h"

#include <sys/stat.h>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "repository/model_config.h"

namespace model_server::server {
namespace {

class RepositoryCatalog final : public ModelCatalog {
 public:
  RepositoryCatalog(repository::ModelRepository repository, VersionLoader loader)
      : repository_(std::move(repository)), loader_(std::move(loader)) {}

  absl::StatusOr<std::vector<std::string>> Names() override { return repository_.ListModels(); }
  absl::StatusOr<repository::RepositoryModel> Read(const std::string& name, bool) override {
    return repository_.Read(name);
  }
  absl::StatusOr<uint64_t> Fingerprint(const std::string& name) override {
    return repository_.Fingerprint(name);
  }
  absl::StatusOr<Instances> Load(const repository::RepositoryModel& model,
                                 const repository::VersionFile& version) override {
    return loader_(model, version);
  }

 private:
  const repository::ModelRepository repository_;
  const VersionLoader loader_;
};

// A file as stat(2) sees it; all zero when it does not exist.
uint64_t FileDigest(const std::string& path) {
  struct stat status;
  if (path.empty() || stat(path.c_str(), &status) != 0) return 0;
  uint64_t digest = 1469598103934665603ULL;  // FNV-1a over the fields
  for (const uint64_t field :
       {static_cast<uint64_t>(status.st_dev), static_cast<uint64_t>(status.st_ino),
        static_cast<uint64_t>(status.st_size), static_cast<uint64_t>(status.st_mtim.tv_sec),
        static_cast<uint64_t>(status.st_mtim.tv_nsec)}) {
    digest = (digest ^ field) * 1099511628211ULL;
  }
  return digest;
}

class FileCatalog final : public ModelCatalog {
 public:
  explicit FileCatalog(std::vector<FileModel> models) {
    for (FileModel& model : models) {
      const std::string name = model.name;
      entries_.emplace(name, Entry{std::move(model)});
    }
  }

  absl::StatusOr<std::vector<std::string>> Names() override {
    std::vector<std::string> names;
    for (const auto& [name, entry] : entries_) names.push_back(name);
    return names;
  }

  absl::StatusOr<repository::RepositoryModel> Read(const std::string& name, bool again) override {
    const auto found = entries_.find(name);
    if (found == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("no model \"", name, "\""));
    }
    Entry& entry = found->second;
    const uint64_t digest = FileDigest(entry.model.path);
    const bool anew = entry.served == 0 || again || digest != entry.digest;
    entry.digest = digest;
    repository::RepositoryModel model;
    model.name = name;
    model.config.set_name(name);
    const bool aoti = absl::EndsWith(entry.model.path, ".pt2");
    model.config.set_platform(aoti ? repository::kPlatformAoti : repository::kPlatformTorchScript);
    model.config.set_backend(repository::kBackendPytorch);
    model.versions.push_back({entry.served + (anew ? 1 : 0), entry.model.path});
    model.fingerprint = digest;
    return model;
  }

  absl::StatusOr<uint64_t> Fingerprint(const std::string& name) override {
    const auto found = entries_.find(name);
    if (found == entries_.end())
      return absl::NotFoundError(absl::StrCat("no model \"", name, "\""));
    return FileDigest(found->second.model.path);
  }

  absl::StatusOr<Instances> Load(const repository::RepositoryModel& model,
                                 const repository::VersionFile& version) override {
    return entries_.at(model.name).model.load(model, version);
  }

  void Served(const std::string& name, int64_t version) override {
    entries_.at(name).served = version;
  }

 private:
  struct Entry {
    FileModel model;
    int64_t served = 0;   // the version serving; 0 before the first
    uint64_t digest = 0;  // the file when last read
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace

std::unique_ptr<ModelCatalog> MakeRepositoryCatalog(repository::ModelRepository repository,
                                                    VersionLoader loader) {
  return std::make_unique<RepositoryCatalog>(std::move(repository), std::move(loader));
}

absl::StatusOr<std::unique_ptr<ModelCatalog>> MakeFileCatalog(std::vector<FileModel> models) {
  for (size_t i = 0; i < models.size(); ++i) {
    if (absl::Status valid = repository::ValidateModelName(models[i].name); !valid.ok()) {
      return valid;
    }
    for (size_t j = 0; j < i; ++j) {
      if (models[i].name == models[j].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("model name \"", models[i].name, "\" is given twice"));
      }
    }
  }
  return std::unique_ptr<ModelCatalog>(new FileCatalog(std::move(models)));
}

}  // namespace model_server::server

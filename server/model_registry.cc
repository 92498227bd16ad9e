#include "server/model_registry.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace model_server::server {

ModelRegistry::~ModelRegistry() { ShutdownAll(); }

absl::StatusOr<std::shared_ptr<ServedModel>> ModelRegistry::Find(const std::string& name,
                                                                 const std::string& version) const {
  base::MutexLock lock(mu_);
  const auto found = models_.find(name);
  if (found == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [known, model] : models_) {
      if (!model.versions.empty()) names.push_back(absl::StrCat("\"", known, "\""));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model \"", name, "\"; this server serves ",
                     names.empty() ? "none" : absl::StrJoin(names, ", ")));
  }
  const std::map<int64_t, std::shared_ptr<ServedModel>>& versions = found->second.versions;
  if (versions.empty()) {
    return absl::UnavailableError(
        absl::StrCat("model \"", name, "\" is not loaded: no version of it is ready"));
  }
  if (version.empty()) return versions.rbegin()->second;
  int64_t number = 0;
  const auto at = absl::SimpleAtoi(version, &number) ? versions.find(number) : versions.end();
  if (at == versions.end()) {
    std::vector<int64_t> serving;
    for (const auto& [served, unused] : versions) serving.push_back(served);
    return absl::InvalidArgumentError(
        absl::StrCat("model \"", name, "\" has no version \"", version, "\"; it serves version",
                     serving.size() > 1 ? "s " : " ", absl::StrJoin(serving, ", ")));
  }
  return at->second;
}

std::vector<std::shared_ptr<ServedModel>> ModelRegistry::Versions(const std::string& name) const {
  base::MutexLock lock(mu_);
  std::vector<std::shared_ptr<ServedModel>> versions;
  const auto found = models_.find(name);
  if (found == models_.end()) return versions;
  for (const auto& [number, version] : found->second.versions) versions.push_back(version);
  return versions;
}

std::vector<std::string> ModelRegistry::Names() const {
  base::MutexLock lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, model] : models_) {
    if (!model.versions.empty()) names.push_back(name);
  }
  return names;
}

std::shared_ptr<const inference::ModelConfig> ModelRegistry::Config(const std::string& name) const {
  base::MutexLock lock(mu_);
  const auto found = models_.find(name);
  if (found == models_.end() || found->second.versions.empty()) return nullptr;
  return found->second.config;
}

void ModelRegistry::Install(std::shared_ptr<ServedModel> version,
                            std::shared_ptr<const inference::ModelConfig> config) {
  const std::string name = version->name();
  // Outside mu_: a scrape holds the metrics' locks while it asks this registry for its sources.
  metrics::ModelMetrics* metrics = metrics_->AddModel(name);
  bool first = false;
  std::shared_ptr<ServedModel> replaced;
  {
    base::MutexLock lock(mu_);
    Model& model = models_[name];
    first = model.metrics == nullptr;
    model.metrics = metrics;
    model.config = std::move(config);
    std::shared_ptr<ServedModel>& slot = model.versions[version->version()];
    replaced = std::move(slot);
    slot = version;
    if (replaced != nullptr) ++model.retiring;
    const handlers::InitializeTimes& times = version->initialize_times();
    model.metrics->SetLoadSeconds(times.load_seconds);
    model.metrics->SetWarmupSeconds(times.warmup_seconds);
    UpdateMetrics(model);
  }
  if (first) {
    metrics->SetSources([this, name] { return QueuedRequestsOf(name); },
                        [this, name] { return LoadedVersions(name); });
    metrics->SetQueueDepthSource([this, name] { return QueuedRequestsPerLevelOf(name); });
  }
  if (replaced != nullptr) Retire(name, std::move(replaced));
}

void ModelRegistry::Remove(const std::string& name, std::optional<int64_t> number) {
  std::vector<std::shared_ptr<ServedModel>> removed;
  {
    base::MutexLock lock(mu_);
    const auto found = models_.find(name);
    if (found == models_.end()) return;
    Model& model = found->second;
    for (auto it = model.versions.begin(); it != model.versions.end();) {
      if (number && it->first != *number) {
        ++it;
        continue;
      }
      removed.push_back(std::move(it->second));
      it = model.versions.erase(it);
    }
    model.retiring += removed.size();
    UpdateMetrics(model);
  }
  for (auto& version : removed) Retire(name, std::move(version));
}

void ModelRegistry::Retire(const std::string& name, std::shared_ptr<ServedModel> version) {
  // Calls hold a version only between finding it and queueing their request: this wait is short.
  while (version.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t number = version->version();
  version->Shutdown();  // runs what is queued, joins its threads, releases its instances
  version.reset();
  base::MutexLock lock(mu_);
  if (!shutting_down_)
    spdlog::info("model {}: version {} released after its last batch", name, number);
  Model& model = models_[name];
  --model.retiring;
  UpdateMetrics(model);
}

void ModelRegistry::UpdateMetrics(const Model& model) const {
  if (model.metrics == nullptr) return;
  model.metrics->SetVersion(model.versions.empty() ? 0 : model.versions.rbegin()->first);
}

size_t ModelRegistry::LoadedVersions(const std::string& name) const {
  base::MutexLock lock(mu_);
  const auto found = models_.find(name);
  return found == models_.end() ? 0 : found->second.versions.size() + found->second.retiring;
}

size_t ModelRegistry::QueuedRequestsOf(const std::string& name) const {
  base::MutexLock lock(mu_);
  size_t queued = 0;
  const auto found = models_.find(name);
  if (found == models_.end()) return 0;
  for (const auto& [number, version] : found->second.versions) queued += version->QueuedRequests();
  return queued;
}

std::vector<std::pair<size_t, size_t>> ModelRegistry::QueuedRequestsPerLevelOf(
    const std::string& name) const {
  base::MutexLock lock(mu_);
  std::map<size_t, size_t> levels;
  const auto found = models_.find(name);
  if (found == models_.end()) return {};
  for (const auto& [number, version] : found->second.versions) {
    for (const auto& [level, queued] : version->QueuedRequestsPerLevel()) levels[level] += queued;
  }
  return {levels.begin(), levels.end()};
}

size_t ModelRegistry::QueuedRequests() const {
  base::MutexLock lock(mu_);
  size_t queued = 0;
  for (const auto& [name, model] : models_) {
    for (const auto& [number, version] : model.versions) queued += version->QueuedRequests();
  }
  return queued;
}

void ModelRegistry::ShutdownAll() {
  std::vector<std::string> names;
  std::vector<metrics::ModelMetrics*> sources;
  {
    base::MutexLock lock(mu_);
    shutting_down_ = true;
    for (auto& [name, model] : models_) {
      names.push_back(name);
      if (model.metrics != nullptr) sources.push_back(model.metrics);
    }
  }
  // Scrapes may outlive the registry: they stop asking it first (outside mu_, see Install).
  for (metrics::ModelMetrics* metrics : sources) {
    metrics->SetSources(nullptr, nullptr);
    metrics->SetQueueDepthSource(nullptr);
  }
  for (const std::string& name : names) Remove(name, std::nullopt);
}

}  // namespace model_server::server

#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "protos/model_config.pb.h"
#include "server/metrics/metrics.h"
#include "server/served_model.h"

namespace model_server::server {

// The model versions being served, by name and version number, for the calls that use them and
// for the ModelManager that installs and removes them. A call holds the version it found
// (a shared_ptr) only until its request is queued; a removed version is shut down (its queue
// run, its threads joined, its instances released) once no call holds it any more, so removing
// a version never fails a call that found it. Thread-safe.
class ModelRegistry {
 public:
  // Each model's metrics are added to `metrics` (which outlives the registry) when its first
  // version is installed.
  explicit ModelRegistry(metrics::ServerMetrics* metrics) : metrics_(metrics) {}
  // ShutdownAll.
  ~ModelRegistry();

  // Version `version` of the model `name`, or its highest serving version when `version` is
  // empty. INVALID_ARGUMENT for a model never served (naming those that are) or a version it
  // does not serve; UNAVAILABLE for a model that serves no version now (unloaded or failed).
  absl::StatusOr<std::shared_ptr<ServedModel>> Find(const std::string& name,
                                                    const std::string& version) const;
  // The serving versions of `name`, lowest first; empty when none.
  std::vector<std::shared_ptr<ServedModel>> Versions(const std::string& name) const;
  // Every model that serves a version now, in name order.
  std::vector<std::string> Names() const;
  // The configuration `name` is served with; null when it serves no version.
  std::shared_ptr<const inference::ModelConfig> Config(const std::string& name) const;

  // Serves `version` for its model from now on, with `config` as the model's configuration,
  // replacing a version of the same number, which is then retired (blocks until it is released).
  void Install(std::shared_ptr<ServedModel> version,
               std::shared_ptr<const inference::ModelConfig> config);
  // Stops serving version `number` of `name` (every version when nullopt) and retires them
  // (blocks until they are released). Removing the last version keeps the name known (Find
  // answers UNAVAILABLE for it).
  void Remove(const std::string& name, std::optional<int64_t> number);

  // Versions of `name` in memory: serving, and removed but not yet released. Any thread.
  size_t LoadedVersions(const std::string& name) const;
  // Requests waiting in the queues of every serving version, of `name` or of all models. Any
  // thread.
  size_t QueuedRequestsOf(const std::string& name) const;
  size_t QueuedRequests() const;
  // The requests waiting in `name`'s serving versions by priority level, as (level, requests),
  // levels in order. Any thread.
  std::vector<std::pair<size_t, size_t>> QueuedRequestsPerLevelOf(const std::string& name) const;
  // Removes every version of every model (server shutdown); the registry serves nothing after.
  void ShutdownAll();

 private:
  struct Model {
    std::map<int64_t, std::shared_ptr<ServedModel>> versions;
    std::shared_ptr<const inference::ModelConfig> config;
    metrics::ModelMetrics* metrics = nullptr;
    size_t retiring = 0;
  };

  // Waits until the registry's caller holds the only reference to `version`, then shuts it down.
  void Retire(const std::string& name, std::shared_ptr<ServedModel> version)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The model's gauges after a change.
  void UpdateMetrics(const Model& model) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  metrics::ServerMetrics* const metrics_;
  mutable base::Mutex mu_;
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;  // set by ShutdownAll
};

}  // namespace model_server::server

#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "server/model_catalog.h"
#include "server/model_registry.h"
#include "server/served_model.h"
#include "server/work_pool.h"

namespace model_server::server {

// Triton's --model-control-mode.
enum class ControlMode {
  kNone,      // load every model at startup; later changes only by SIGHUP
  kPoll,      // load every model at startup; follow the catalog's changes
  kExplicit,  // load what startup_models names; then RepositoryModelLoad / Unload
};

struct ManagerOptions {
  ControlMode mode = ControlMode::kNone;
  // How often the catalog is checked for changes in poll mode.
  std::chrono::milliseconds poll_interval{std::chrono::seconds(15)};
  // The models loaded at startup in explicit mode; "*" names every model.
  std::vector<std::string> startup_models;
  // Whether a model that fails to load at startup stops the server (Triton's --exit-on-error);
  // otherwise it is left unavailable, with its reason in the index.
  bool exit_on_error = true;
  // How versions are served where their configuration says nothing (no dynamic_batching block
  // is written for models without a config.pbtxt, which batch with these options).
  ServingOptions serving;
};

// A model version's place in the repository index (Triton's RepositoryIndex).
struct IndexEntry {
  std::string name;
  std::string version;  // empty for a model that has no version to report
  std::string state;    // READY, LOADING, UNLOADING, UNAVAILABLE; empty: never loaded
  std::string reason;   // why it is UNAVAILABLE
};

// Loads, reloads and unloads the models of a catalog into a registry, one operation at a time on a
// thread of its own, as Triton's model control modes do. A reload loads and warms up the new
// version beside the serving one, which keeps answering until the new one serves; a version that
// fails to load (or, without a configuration change, whose signature differs) is refused and the
// old one serves on. Unloading waits for the model's requests in flight. The settled
// configuration of each loaded model (inputs and outputs completed from its file when its
// configuration has none) is what the registry reports.
class ModelManager {
 public:
  using Done = std::function<void(absl::Status)>;

  // Loads the startup models (see ControlMode) on the calling thread, then starts the manager's
  // thread. `catalog` is owned; `registry`, `codec_pool` (may be null) and `metrics` outlive the
  // manager. Errors: a model that fails to load, with exit_on_error; the catalog cannot be read.
  static absl::StatusOr<std::unique_ptr<ModelManager>> Start(std::unique_ptr<ModelCatalog> catalog,
                                                             ModelRegistry* registry,
                                                             WorkPool* codec_pool,
                                                             metrics::ServerMetrics* metrics,
                                                             const ManagerOptions& options);
  // Stop.
  ~ModelManager();

  // Loads `name` anew (RepositoryModelLoad): its configuration and the versions its policy picks,
  // then drops the versions it no longer picks. `done` gets OK once every picked version serves,
  // else the errors, naming model and version; it runs on the manager's thread (or at once with
  // FAILED_PRECONDITION outside explicit mode, UNAVAILABLE once stopped). Any thread.
  void Load(const std::string& name, Done done);
  // Stops serving every version of `name` and releases them once their requests are done; `done`
  // as for Load (OK for a model not loaded). Any thread.
  void Unload(const std::string& name, Done done);
  // Loads every serving model anew, changed or not (what SIGHUP does), once the thread is free.
  // Any thread; any mode.
  void RequestReload();

  // The models of the catalog and the state of each of their versions, ordered by name and
  // version; `ready_only` keeps the READY ones. Any thread.
  std::vector<IndexEntry> Index(bool ready_only) const;

  ControlMode mode() const { return options_.mode; }

  // Stops the thread once the operation in progress is done; queued Load and Unload calls get
  // UNAVAILABLE. Idempotent; any thread.
  void Stop();

 private:
  // What the manager last read of a model; manager thread only.
  struct Known {
    uint64_t fingerprint = 0;
    inference::ModelConfig config;
    bool read = false;  // its configuration was read at least once
  };
  struct VersionState {
    std::string state;
    std::string reason;
  };
  struct ModelState {
    std::string reason;  // why the model could not be read; empty when it could
    std::map<int64_t, VersionState> versions;
  };
  struct Job {
    std::function<absl::Status()> work;
    Done done;
  };

  ModelManager(std::unique_ptr<ModelCatalog> catalog, ModelRegistry* registry, WorkPool* codec_pool,
               metrics::ServerMetrics* metrics, const ManagerOptions& options);

  // Loads what the catalog says of `name` now (see Load); `quiet` leaves failures to the caller
  // to log. Manager thread (or startup).
  absl::Status LoadModel(const std::string& name, bool again, bool quiet);
  // Loads and serves one version; `reference` is the signature the new one must have (that of
  // the serving version; null when any goes).
  absl::Status LoadVersion(const repository::RepositoryModel& model,
                           const repository::VersionFile& version,
                           const handlers::ModelSignature* reference);
  absl::Status UnloadModel(const std::string& name);
  // Poll mode: loads new and changed models, unloads those gone from the catalog.
  void Poll();
  void Post(Job job);
  void Loop();

  void SetModelReason(const std::string& name, const std::string& reason)
      ABSL_LOCKS_EXCLUDED(states_mu_);
  void SetVersionState(const std::string& name, int64_t version, const char* state,
                       const std::string& reason = "") ABSL_LOCKS_EXCLUDED(states_mu_);

  const std::unique_ptr<ModelCatalog> catalog_;
  ModelRegistry* const registry_;
  WorkPool* const codec_pool_;
  metrics::ServerMetrics* const metrics_;
  const ManagerOptions options_;
  std::map<std::string, Known> known_;  // manager thread only (and startup, before it)

  mutable base::Mutex states_mu_;
  std::map<std::string, ModelState> states_ ABSL_GUARDED_BY(states_mu_);

  base::Mutex mu_;
  base::CondVar wake_;
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace model_server::server

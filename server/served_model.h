#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/batch_queue.h"
#include "batching/dynamic_batcher.h"
#include "handlers/batch_executor.h"
#include "handlers/inference_task.h"
#include "handlers/model_handler.h"
#include "server/metrics/metrics.h"
#include "server/work_pool.h"

namespace model_server::server {

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;
using Instances = std::vector<std::unique_ptr<handlers::LoadedModel>>;

// Where a model's new versions come from.
struct ModelSource {
  // The model's file, polled for changes (ModelReloader); empty: the model has no file (the
  // built-in demo model) and is never reloaded.
  std::string path;
  // Loads and warms up a new version from `path`: one instance per batch thread, as at startup.
  std::function<absl::StatusOr<Instances>()> load;
};

// One version of a model: an instance per batch thread, and the executor of each. Immutable once
// serving, but for `retired`.
struct ModelVersion {
  int64_t number = 0;
  Instances instances;
  // After the instances, so destroyed before the handlers they refer to.
  std::vector<std::unique_ptr<handlers::BatchExecutor>> executors;
  // Set when a newer version replaces this one (its release is then logged).
  std::atomic<bool> retired{false};
};

// A named model with its own batcher: requests decoded for it queue here, and each of its batch
// threads runs the batches it cuts on its own instance of the model's current version. A swap
// (Reload) loads and warms up a new version beside the current one, which keeps serving; new
// batches then take the new version, and the old one is released when its last batch is done
// (each batch holds its version).
class ServedModel {
 public:
  // Serves `instances` (at least one, all of the same signature) as version 1 of `name`, each on
  // its own batch thread; takes ownership and releases them (LoadedModel's Cleanup) once they are
  // replaced and done, or shut down. New versions come from `source`. Batches hold at most the
  // signature's max_batch_size rows, and batching.max_batch_rows (one request for a model that
  // does not batch); requests may carry `max_rows_per_request` rows. Replies go through
  // `codec_pool` (may be null); the model's metrics are added to `metrics` (labelled with its
  // name). Both outlive the model. Errors: INVALID_ARGUMENT for a bad name, no instances,
  // instances that differ, or bad batching options.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(
      std::string name, Instances instances, ModelSource source,
      batching::BatchingOptions batching, int64_t max_rows_per_request, WorkPool* codec_pool,
      metrics::ServerMetrics* metrics);

  // Shutdown, if it has not run.
  ~ServedModel();

  const std::string& name() const { return name_; }
  // What every version of this model takes and gives; fixed for the model's life (a new version
  // with another signature is refused).
  const handlers::ModelSignature& signature() const { return signature_; }
  // Rows one request may carry.
  int64_t max_rows_per_request() const { return max_rows_per_request_; }
  // The version new batches run on: 1, then +1 per swap. Any thread.
  int64_t version() const;
  // Versions in memory: the current one, and any replaced one still running a batch.
  size_t LoadedVersions() const;
  metrics::ModelMetrics& metrics() const { return *metrics_; }

  // Queues `task` for a batch (see DynamicBatcher::Enqueue). Any thread.
  absl::Status Enqueue(std::unique_ptr<handlers::InferenceTask>& task) {
    return batcher_->Enqueue(task);
  }
  // Requests waiting in the queue (not those being computed). Any thread.
  size_t QueuedRequests() const { return batcher_->NumEnqueuedTasks(); }

  // Whether the model has a file to reload.
  bool reloadable() const { return !source_.path.empty() && source_.load != nullptr; }
  // Whether the file differs (modification time, size, inode or device; or it appeared or went)
  // from what the last load or attempt found. False when not reloadable. Any thread.
  bool FileChanged() const;
  // Loads a new version from the file and swaps it in; on any error (the file does not load or
  // warm up, its signature differs) the current version serves on, and the error is returned
  // (FAILED_PRECONDITION without a file). Logs and counts the outcome. Blocks while loading;
  // swaps are serialized. Any thread but a batch thread.
  absl::Status Reload();

  // Runs every task still queued, joins the batch threads and releases the model's instances.
  // Idempotent; any thread but a batch thread.
  void Shutdown();

 private:
  // The file's identity as stat(2) sees it; all zero when it does not exist.
  struct FileIdentity {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t modified_ns = 0;
    bool operator==(const FileIdentity& other) const;
  };
  static FileIdentity Identify(const std::string& path);

  ServedModel(std::string name, std::shared_ptr<ModelVersion> first, ModelSource source,
              WorkPool* codec_pool, metrics::ModelMetrics* metrics);
  // Batch thread `worker`: one batch on the current version's instance `worker`.
  void RunBatch(size_t worker, std::vector<std::unique_ptr<handlers::InferenceTask>>& batch);
  std::shared_ptr<ModelVersion> Current() const;
  // Version `number` of the model `model_name` from `instances`; it logs its release once
  // retired.
  static std::shared_ptr<ModelVersion> MakeVersion(const std::string& model_name, int64_t number,
                                                   Instances instances);

  const std::string name_;
  const handlers::ModelSignature signature_;
  const ModelSource source_;
  WorkPool* const codec_pool_;
  metrics::ModelMetrics* const metrics_;
  mutable std::mutex mu_;
  // The version new batches take; a batch holds its version until it has replied, so a version
  // is released once it is no longer current and its last batch is done. Guarded by mu_.
  std::shared_ptr<ModelVersion> current_;
  // Replaced versions, to count those still held by a batch. Guarded by mu_.
  mutable std::vector<std::weak_ptr<ModelVersion>> retired_;
  std::mutex reload_mu_;  // serializes Reload
  // The file as the last load or attempt found it. Guarded by identity_mu_.
  mutable std::mutex identity_mu_;
  FileIdentity attempted_;
  std::unique_ptr<Batcher> batcher_;
  int64_t max_rows_per_request_ = 0;
};

// The model `name` (and, when `version` is not empty, that version of it) among `models`, for
// requests that name one. INVALID_ARGUMENT naming what is served when there is none.
absl::StatusOr<ServedModel*> FindModel(const std::vector<std::unique_ptr<ServedModel>>& models,
                                       const std::string& name, const std::string& version);

}  // namespace model_server::server

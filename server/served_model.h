#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
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

// One version of a model: an instance per batch thread, and the executor of each.
struct ModelVersion {
  int64_t number = 0;
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  // After the instances, so destroyed before the handlers they refer to.
  std::vector<std::unique_ptr<handlers::BatchExecutor>> executors;
};

// A named model with its own batcher: requests decoded for it queue here, and each of its batch
// threads runs the batches it cuts on its own instance of the model.
class ServedModel {
 public:
  // Serves `instances` (at least one, all of the same signature) as version 1 of `name`, each on
  // its own batch thread; takes ownership and releases them (LoadedModel's Cleanup) once shut
  // down. Replies go through `codec_pool` (may be null); the model's metrics are added to
  // `metrics` (labelled with its name). Both outlive the model. Errors: INVALID_ARGUMENT for a
  // bad name, no instances, instances that differ, or bad batching options.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(
      std::string name, std::vector<std::unique_ptr<handlers::LoadedModel>> instances,
      const batching::BatchingOptions& batching, WorkPool* codec_pool,
      metrics::ServerMetrics* metrics);

  // Shutdown, if it has not run.
  ~ServedModel();

  const std::string& name() const { return name_; }
  // What every version of this model takes and gives; fixed for the model's life.
  const handlers::ModelSignature& signature() const { return signature_; }
  // The version new batches run on. Any thread.
  int64_t version() const;

  metrics::ModelMetrics& metrics() const { return *metrics_; }

  // Queues `task` for a batch (see DynamicBatcher::Enqueue). Any thread.
  absl::Status Enqueue(std::unique_ptr<handlers::InferenceTask>& task) {
    return batcher_->Enqueue(task);
  }
  // Requests waiting in the queue (not those being computed). Any thread.
  size_t QueuedRequests() const { return batcher_->NumEnqueuedTasks(); }

  // Runs every task still queued, joins the batch threads and releases the model's instances.
  // Idempotent; any thread but a batch thread.
  void Shutdown();

 private:
  ServedModel(std::string name, std::shared_ptr<ModelVersion> first, WorkPool* codec_pool,
              metrics::ModelMetrics* metrics);
  // Batch thread `worker`: one batch on the current version's instance `worker`.
  void RunBatch(size_t worker, std::vector<std::unique_ptr<handlers::InferenceTask>>& batch);
  std::shared_ptr<const ModelVersion> Current() const;

  const std::string name_;
  const handlers::ModelSignature signature_;
  WorkPool* const codec_pool_;
  metrics::ModelMetrics* const metrics_;
  mutable std::mutex mu_;
  // The version new batches take; a batch holds its version until it has replied, so a version
  // is released once it is no longer current and its last batch is done. Guarded by mu_.
  std::shared_ptr<const ModelVersion> current_;
  std::unique_ptr<Batcher> batcher_;
};

// The model `name` (and, when `version` is not empty, that version of it) among `models`, for
// requests that name one. INVALID_ARGUMENT naming what is served when there is none.
absl::StatusOr<ServedModel*> FindModel(const std::vector<std::unique_ptr<ServedModel>>& models,
                                       const std::string& name, const std::string& version);

}  // namespace model_server::server

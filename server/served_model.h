#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/batch_queue.h"
#include "batching/dynamic_batcher.h"
#include "batching/queue_policy.h"
#include "batching/response_cache.h"
#include "handlers/batch_executor.h"
#include "handlers/inference_task.h"
#include "handlers/model_handler.h"
#include "server/inference_statistics.h"
#include "server/metrics/metrics.h"
#include "server/work_pool.h"

namespace model_server::server {

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;
using Instances = std::vector<std::unique_ptr<handlers::LoadedModel>>;

// How one model version is served, beyond its instances.
struct ServingOptions {
  // How its requests are coalesced; max_batch_rows is capped at the signature's max_batch_size
  // (1 for a model that does not batch).
  batching::BatchingOptions batching;
  // Rows one request may carry.
  int64_t max_rows_per_request = 65536;
  // Where the version's answers are cached (response_cache { enable: true }); null: they are
  // not. Outlives the version.
  batching::ResponseCache* cache = nullptr;
};

// Tells a model's metrics what its queue policies did (batching::QueueEvents).
class QueueEventCounter final : public batching::QueueEvents {
 public:
  explicit QueueEventCounter(metrics::ModelMetrics* metrics) : metrics_(metrics) {}
  void Refused(size_t level, batching::Refusal why) override;
  void Delayed(size_t level) override;

 private:
  metrics::ModelMetrics* const metrics_;
};

// One version of a model, serving: an instance per batch thread, the batcher whose batch threads
// run them, and the version's statistics. Requests decoded for it queue here (Enqueue) until
// Shutdown, which runs what is queued, joins the batch threads and releases the instances
// (their Cleanup). Its owner (ModelRegistry) shuts it down once no caller holds it any more.
class ServedModel {
 public:
  // Serves `instances` (at least one, all of the same signature) as version `version` of
  // `name`, each on its own batch thread; takes ownership. Replies go through `codec_pool` (may
  // be null); `metrics` are the model's (shared by its versions). Both outlive this object.
  // Errors: INVALID_ARGUMENT for no instances, instances whose signatures differ, or bad batching
  // options.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(std::string name, int64_t version,
                                                             Instances instances,
                                                             const ServingOptions& options,
                                                             WorkPool* codec_pool,
                                                             metrics::ModelMetrics* metrics);

  // Shutdown, if it has not run.
  ~ServedModel();

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  // What the version takes and gives; fixed.
  const handlers::ModelSignature& signature() const { return signature_; }
  // Rows one request may carry.
  int64_t max_rows_per_request() const { return max_rows_per_request_; }
  metrics::ModelMetrics& metrics() const { return *metrics_; }
  InferenceStatistics& statistics() { return statistics_; }
  // Batch threads (one instance each).
  size_t instances() const { return executors_.size(); }
  // Load and warm-up times, summed over the instances.
  const handlers::InitializeTimes& initialize_times() const { return times_; }

  // Queues `task` for a batch (see DynamicBatcher::Enqueue). Any thread.
  absl::Status Enqueue(std::unique_ptr<handlers::InferenceTask>& task) {
    return batcher_->Enqueue(task);
  }
  // Requests waiting in the queue (not those being computed), in all and by priority level
  // (DynamicBatcher::EnqueuedTasksPerLevel). Any thread.
  size_t QueuedRequests() const { return batcher_->NumEnqueuedTasks(); }
  std::vector<std::pair<size_t, size_t>> QueuedRequestsPerLevel() const {
    return batcher_->EnqueuedTasksPerLevel();
  }

  // The response cache this version's answers go to; null when they are not cached. The
  // version's entries are its cache_owner()'s, dropped when it shuts down.
  batching::ResponseCache* cache() const { return cache_; }
  uint64_t cache_owner() const { return cache_owner_; }

  // Runs every task still queued, joins the batch threads, drops the version's cached answers
  // and releases the instances. Idempotent; any thread but a batch thread.
  void Shutdown();

 private:
  ServedModel(std::string name, int64_t version, Instances instances, const ServingOptions& options,
              WorkPool* codec_pool, metrics::ModelMetrics* metrics);
  // Batch thread `worker`: one batch on instance `worker`.
  void RunBatch(size_t worker, std::vector<std::unique_ptr<handlers::InferenceTask>>& batch);

  const std::string name_;
  const int64_t version_;
  Instances instances_;
  // After the instances, so destroyed before the handlers they refer to.
  std::vector<std::unique_ptr<handlers::BatchExecutor>> executors_;
  const handlers::ModelSignature signature_;
  const handlers::InitializeTimes times_;
  const int64_t max_rows_per_request_;
  WorkPool* const codec_pool_;
  metrics::ModelMetrics* const metrics_;
  InferenceStatistics statistics_;
  QueueEventCounter queue_events_;  // before the batcher, which tells it
  batching::ResponseCache* const cache_;
  const uint64_t cache_owner_;  // unique in the process
  std::unique_ptr<Batcher> batcher_;
};

}  // namespace model_server::server

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "batching/batch_queue.h"
#include "batching/dynamic_batcher.h"
#include "batching/queue_policy.h"
#include "batching/response_cache.h"
#include "handlers/batch_executor.h"
#include "handlers/inference_task.h"
#include "handlers/model_handler.h"
#include "server/inference_statistics.h"
#include "server/metrics/metrics.h"

namespace model_server::server {

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;
using Instances = std::vector<std::unique_ptr<handlers::LoadedModel>>;
// Called on the batch thread once a batch has run on version `version`: each of its tasks has
// been completed or failed; replies to the completed ones (BatchedCall::ReplyAll).
using BatchDone = std::function<void(
    const std::vector<std::unique_ptr<handlers::InferenceTask>>& batch, int64_t version)>;

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
  // A request that arrives while the version is idle runs on the thread that received it
  // (RunIdle) while its forward pass is expected to take at most this long (from the version's
  // measured forward passes); zero: never, every request goes through the batcher.
  std::chrono::microseconds max_idle_forward{500};
  // Called on the batch thread of an instance whose device was found lost (handlers/fault.h),
  // with the model's name and the fault, after each batch that met it or came after it; the
  // instance computes nothing any more (its requests fail with UNAVAILABLE). Null: only that.
  // Must not block on the model (ServedModel::Shutdown joins the thread it runs on).
  std::function<void(const std::string& model, const absl::Status& fault)> on_device_lost;
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
// run them, and the version's statistics. Each batch thread warms its own instance up
// (ModelHandler::WarmUp, batch sizes up to the served max_batch_rows, the largest forward its
// executor runs) before Create returns. Requests decoded for it queue here (Enqueue) until
// Shutdown, which runs what is queued, joins the batch threads and releases the instances
// (their Cleanup). Its owner (ModelRegistry) shuts it down once no caller holds it any more.
//
// A request that finds the version idle — nothing queued, an instance free, forward passes short
// — may run at once on the caller's thread instead (ClaimIdle, RunIdle): one forward pass on that
// instance, with the checks, statistics and metrics a batch of one gets. Each instance runs one
// forward pass at a time, whichever thread runs it: a batch thread holds its instance while it
// runs a batch, and waits for it while a request runs there.
class ServedModel {
 public:
  // Serves `instances` (at least one, all of the same signature) as version `version` of
  // `name`, each on its own batch thread; takes ownership. `batch_done` replies after each batch;
  // `metrics` are the model's (shared by its versions) and outlive this object. Errors:
  // INVALID_ARGUMENT for no instances, instances whose signatures differ, or bad batching options;
  // an instance's warm-up error, naming the instance (its batch threads are joined and the
  // instances released then).
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(std::string name, int64_t version,
                                                             Instances instances,
                                                             const ServingOptions& options,
                                                             BatchDone batch_done,
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
  // Load and warm-up times (each batch thread's warm-up included), summed over the instances.
  const handlers::InitializeTimes& initialize_times() const { return times_; }
  // Rows of the largest forward pass a batch thread runs (and warmed up); 0 for a model that
  // does not batch.
  int64_t max_forward_rows() const { return max_forward_rows_; }

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

  // An instance held for one request run on the claiming thread (RunIdle); let go when destroyed,
  // on that thread (the instance's mutex is unlocked by the thread that locked it).
  class IdleClaim {
   public:
    IdleClaim() = default;
    IdleClaim(IdleClaim&& other) noexcept : instance_(std::exchange(other.instance_, nullptr)) {}
    IdleClaim& operator=(IdleClaim&& other) noexcept;
    ~IdleClaim() { Release(); }
    explicit operator bool() const { return instance_ != nullptr; }

   private:
    friend class ServedModel;
    struct Instance;
    explicit IdleClaim(Instance* instance) : instance_(instance) {}
    void Release();
    Instance* instance_ = nullptr;
  };

  // Whether a request may run on the caller's thread at all now: the version batches without a
  // delay (max_queue_delay 0), its instances are not ThreadBound, it has measured forward passes
  // within max_idle_forward and nothing is queued. Any thread; cheap, for a first look.
  bool MayRunIdle() const;
  // A free instance for a request of `rows` rows and priority `priority` to run on the caller's
  // thread, when MayRunIdle still holds (nothing is queued, at any level: whatever its priority,
  // the request would wait behind nothing), its forward pass, scaled from the measured ones, is
  // expected within max_idle_forward, and the queue would take its priority; empty otherwise
  // (queue the request instead, which refuses a priority outside the levels). Any thread; never
  // blocks.
  IdleClaim ClaimIdle(int64_t rows, uint64_t priority = 0);
  // Runs `task` on the caller's thread on the instance `claim` holds, as a batch of one: it
  // leaves the "queue" (InferenceTask::Dequeue: dropped if its deadline passed or its client
  // cancelled), then is completed or failed as BatchExecutor::Execute does; statistics and
  // metrics as for a batch. Its queue policy's timeout does not apply: it never queued. Lets the
  // instance go before it returns.
  void RunIdle(IdleClaim claim, std::unique_ptr<handlers::InferenceTask>& task);

  // Runs every task still queued, joins the batch threads, drops the version's cached answers
  // and releases the instances. Idempotent; any thread but a batch thread.
  void Shutdown();

 private:
  ServedModel(std::string name, int64_t version, Instances instances, const ServingOptions& options,
              BatchDone batch_done, metrics::ModelMetrics* metrics);
  // Batch thread `worker`: one batch on instance `worker`.
  void RunBatch(size_t worker, std::vector<std::unique_ptr<handlers::InferenceTask>>& batch);
  // Runs `batch` on `instance`, which the caller holds; records what it took.
  void Execute(IdleClaim::Instance& instance,
               std::vector<std::unique_ptr<handlers::InferenceTask>>& batch);
  // Batch thread `worker`, as it starts: warms up instance `worker`; how long it took.
  absl::StatusOr<double> WarmUp(size_t worker);

  const std::string name_;
  const int64_t version_;
  Instances instances_;
  // One per instance, after them, so destroyed before the handlers they refer to.
  std::vector<std::unique_ptr<IdleClaim::Instance>> executors_;
  const handlers::ModelSignature signature_;
  handlers::InitializeTimes times_;  // set by Create, fixed after
  const int64_t max_rows_per_request_;
  const int64_t max_forward_rows_;
  const std::chrono::nanoseconds max_idle_forward_;
  const batching::PriorityOptions priorities_;  // the batcher's levels (ClaimIdle checks them)
  const bool thread_bound_;  // the instances' forward passes stay on their batch threads
  // The version's forward passes so far, smoothed (exponentially weighted, 1/8 per pass): their
  // duration (gathering inputs, forward, handing out outputs) and rows. -1: none measured yet, so
  // no request runs idle until a batch has run. Written by whichever thread ran the pass.
  std::atomic<int64_t> forward_ns_{-1};
  std::atomic<int64_t> forward_rows_{1};
  const BatchDone batch_done_;
  const std::function<void(const std::string&, const absl::Status&)> on_device_lost_;
  metrics::ModelMetrics* const metrics_;
  InferenceStatistics statistics_;
  QueueEventCounter queue_events_;  // before the batcher, which tells it
  batching::ResponseCache* const cache_;
  const uint64_t cache_owner_;  // unique in the process
  std::unique_ptr<Batcher> batcher_;
};

}  // namespace model_server::server

#include "server/served_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "handlers/fault.h"
#include "handlers/signature.h"

namespace model_server::server {
namespace {

handlers::InitializeTimes TotalTimes(const Instances& instances) {
  handlers::InitializeTimes times;
  for (const auto& instance : instances) {
    times.load_seconds += instance->handler().initialize_times().load_seconds;
    times.warmup_seconds += instance->handler().initialize_times().warmup_seconds;
  }
  return times;
}

// Owner ids of versions in the response cache: never reused, so a version that replaces another
// of the same number never finds the other's answers.
std::atomic<uint64_t> next_cache_owner{1};

// An exponentially weighted average's step: `average` moves 1/8 of the way to `sample`.
void Smooth(std::atomic<int64_t>& average, int64_t sample) {
  const int64_t old = average.load(std::memory_order_relaxed);
  average.store(old < 0 ? sample : old + (sample - old) / 8, std::memory_order_relaxed);
}

// What the batch threads' warm-ups report to Create, which waits for all of them.
class WarmUps {
 public:
  explicit WarmUps(size_t workers) : results_(workers, absl::InternalError("not warmed up")) {}

  void Done(size_t worker, absl::StatusOr<double> result) {
    base::MutexLock lock(mu_);
    results_[worker] = std::move(result);
    ++done_;
    all_done_.SignalAll();
  }
  std::vector<absl::StatusOr<double>> Wait() {
    base::MutexLock lock(mu_);
    while (done_ < results_.size()) all_done_.Wait(mu_);
    return results_;
  }

 private:
  base::Mutex mu_;
  base::CondVar all_done_;
  std::vector<absl::StatusOr<double>> results_ ABSL_GUARDED_BY(mu_);
  size_t done_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

void QueueEventCounter::Refused(size_t level, batching::Refusal why) {
  switch (why) {
    case batching::Refusal::kMaxQueueRows:
      metrics_->RecordQueueRejection(level, metrics::QueueRejection::kMaxQueueRows);
      break;
    case batching::Refusal::kMaxQueueSize:
      metrics_->RecordQueueRejection(level, metrics::QueueRejection::kMaxQueueSize);
      break;
    case batching::Refusal::kTimeout:
      metrics_->RecordQueueRejection(level, metrics::QueueRejection::kTimeout);
      metrics_->RecordQueueTimeout(level, /*delayed=*/false);
      break;
  }
}

void QueueEventCounter::Delayed(size_t level) {
  metrics_->RecordQueueTimeout(level, /*delayed=*/true);
}

// An instance's executor and the lock whoever runs a forward pass on it holds.
struct ServedModel::IdleClaim::Instance {
  Instance(size_t index, handlers::ModelHandler& handler, int64_t max_batch_rows)
      : index(index), executor(handler, max_batch_rows) {}
  const size_t index;
  base::Mutex mu;
  handlers::BatchExecutor executor;  // used by the thread holding mu
};

ServedModel::IdleClaim& ServedModel::IdleClaim::operator=(IdleClaim&& other) noexcept {
  if (this != &other) {
    Release();
    instance_ = std::exchange(other.instance_, nullptr);
  }
  return *this;
}

void ServedModel::IdleClaim::Release() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (instance_ != nullptr) std::exchange(instance_, nullptr)->mu.Unlock();
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(std::string name, int64_t version,
                                                                 Instances instances,
                                                                 const ServingOptions& options,
                                                                 BatchDone batch_done,
                                                                 metrics::ModelMetrics* metrics) {
  if (instances.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, " has no instance to serve"));
  }
  for (const auto& instance : instances) {
    const std::string difference =
        handlers::SignatureDifference(instances[0]->signature(), instance->signature());
    if (!difference.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("instances of model ", name, " differ in their signatures: ", difference));
    }
  }
  // A batch holds no more than the model takes; a model without a batch dimension runs requests
  // alone.
  ServingOptions serving = options;
  const handlers::ModelSignature& signature = instances[0]->signature();
  serving.batching.max_batch_rows =
      signature.batches()
          ? std::min<size_t>(serving.batching.max_batch_rows, signature.max_batch_size)
          : 1;
  const size_t workers = instances.size();
  std::unique_ptr<ServedModel> model(new ServedModel(std::move(name), version, std::move(instances),
                                                     serving, std::move(batch_done), metrics));
  serving.batching.events = &model->queue_events_;
  // Shared with the batch threads, which outlive this call when a warm-up fails.
  auto warm_ups = std::make_shared<WarmUps>(workers);
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(
      serving.batching, workers,
      [served = model.get()](size_t worker,
                             std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
        served->RunBatch(worker, batch);
      },
      [served = model.get(), warm_ups](size_t worker) {
        warm_ups->Done(worker, served->WarmUp(worker));
      });
  if (!batcher.ok()) return batcher.status();
  model->batcher_ = *std::move(batcher);
  // Nothing is queued before this returns, so the batch threads take no batch before their
  // warm-up; the server says SERVING only after this.
  const std::vector<absl::StatusOr<double>> warmed = warm_ups->Wait();
  for (size_t worker = 0; worker < warmed.size(); ++worker) {
    if (!warmed[worker].ok()) {
      model->Shutdown();
      return absl::Status(warmed[worker].status().code(),
                          absl::StrCat("model ", model->name_, ": instance ", worker,
                                       " warm-up: ", warmed[worker].status().message()));
    }
    model->times_.warmup_seconds += *warmed[worker];
  }
  return model;
}

ServedModel::ServedModel(std::string name, int64_t version, Instances instances,
                         const ServingOptions& options, BatchDone batch_done,
                         metrics::ModelMetrics* metrics)
    : name_(std::move(name)),
      version_(version),
      instances_(std::move(instances)),
      executors_([this, &options] {
        std::vector<std::unique_ptr<IdleClaim::Instance>> executors;
        for (auto& instance : instances_) {
          executors.push_back(std::make_unique<IdleClaim::Instance>(
              executors.size(), instance->handler(),
              static_cast<int64_t>(options.batching.max_batch_rows)));
        }
        return executors;
      }()),
      signature_(instances_[0]->signature()),
      times_(TotalTimes(instances_)),
      max_rows_per_request_(options.max_rows_per_request),
      max_forward_rows_(executors_[0]->executor.max_forward_rows()),
      // A batching delay asks requests to wait for batch-mates: then none runs alone.
      max_idle_forward_(options.batching.max_queue_delay.count() > 0 ? std::chrono::microseconds(0)
                                                                     : options.max_idle_forward),
      priorities_(options.batching.priorities),
      thread_bound_(instances_[0]->handler().ThreadBound()),
      batch_done_(std::move(batch_done)),
      on_device_lost_(options.on_device_lost),
      metrics_(metrics),
      queue_events_(metrics),
      cache_(options.cache),
      cache_owner_(next_cache_owner.fetch_add(1, std::memory_order_relaxed)) {}

ServedModel::~ServedModel() { Shutdown(); }

void ServedModel::RunBatch(size_t worker,
                           std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
  IdleClaim::Instance& instance = *executors_[worker];
  {
    // Waits while a request runs on the instance from the thread that received it.
    base::MutexLock lock(instance.mu);
    Execute(instance, batch);
  }
  batch_done_(batch, version_);
}

bool ServedModel::MayRunIdle() const {
  const int64_t forward_ns = forward_ns_.load(std::memory_order_relaxed);
  return max_idle_forward_.count() > 0 && !thread_bound_ && forward_ns >= 0 &&
         forward_ns <= max_idle_forward_.count() && batcher_->NumEnqueuedTasks() == 0;
}

// The claim holds the instance's lock beyond this function (the analysis cannot follow it).
ServedModel::IdleClaim ServedModel::ClaimIdle(int64_t rows,
                                              uint64_t priority) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (!MayRunIdle() || !batching::LevelOf(priorities_, priority).ok()) return {};
  // Forward passes take at most proportionally longer with more rows (a fixed cost per pass
  // makes them take less).
  const int64_t typical_rows = std::max<int64_t>(forward_rows_.load(std::memory_order_relaxed), 1);
  const double expected_ns = static_cast<double>(forward_ns_.load(std::memory_order_relaxed)) *
                             std::max<double>(1.0, static_cast<double>(rows) / typical_rows);
  if (expected_ns > static_cast<double>(max_idle_forward_.count())) return {};
  for (const auto& instance : executors_) {
    if (instance->mu.TryLock()) return IdleClaim(instance.get());
  }
  return {};
}

void ServedModel::RunIdle(IdleClaim claim, std::unique_ptr<handlers::InferenceTask>& task) {
  // As the batcher does as a task leaves its queue.
  if (absl::Status live = task->Dequeue(std::chrono::steady_clock::now()); !live.ok()) {
    task->Fail(std::move(live));
    return;
  }
  std::vector<std::unique_ptr<handlers::InferenceTask>> batch;
  batch.push_back(std::move(task));
  metrics_->RecordIdleRun();
  Execute(*claim.instance_, batch);
  task = std::move(batch.front());
}

void ServedModel::Execute(IdleClaim::Instance& instance,
                          std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
  const auto start = std::chrono::steady_clock::now();
  int64_t rows = 0;
  for (const auto& task : batch) rows += task->request().rows;
  const handlers::Execution execution = instance.executor.Execute(batch);
  statistics_.RecordBatch(batch.size(), rows, execution);
  metrics_->RecordBatch(
      batch.size(), rows, execution.forward_passes,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (execution.forward_passes > 0) {
    const auto passes = static_cast<int64_t>(execution.forward_passes);
    Smooth(forward_ns_, (execution.input + execution.infer + execution.output).count() / passes);
    Smooth(forward_rows_, std::max<int64_t>(rows / passes, 1));
  }
  if (execution.out_of_memory > 0 || execution.device_faults > 0) {
    metrics_->RecordFaults(execution.out_of_memory, execution.device_faults);
  }
  if (!execution.device_lost.ok()) {
    if (execution.device_faults > 0) {
      spdlog::critical("model {}: version {}: instance {}: the device is lost: {}", name_, version_,
                       instance.index, std::string(execution.device_lost.message()));
    }
    if (on_device_lost_) on_device_lost_(name_, execution.device_lost);
  }
}

absl::StatusOr<double> ServedModel::WarmUp(size_t worker) {
  const auto start = std::chrono::steady_clock::now();
  const absl::Status warmed = instances_[worker]->handler().WarmUp(max_forward_rows_);
  if (!warmed.ok()) return warmed;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void ServedModel::Shutdown() {
  if (batcher_ != nullptr) batcher_->Shutdown();
  // No batch of this version runs any more: none adds an entry after this.
  if (cache_ != nullptr) cache_->Invalidate(cache_owner_);
  executors_.clear();
  instances_.clear();  // LoadedModel's destructor runs Cleanup
}

}  // namespace model_server::server

#include "server/served_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "handlers/signature.h"
#include "server/batched_call.h"

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

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(std::string name, int64_t version,
                                                                 Instances instances,
                                                                 const ServingOptions& options,
                                                                 WorkPool* codec_pool,
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
                                                     serving, codec_pool, metrics));
  serving.batching.events = &model->queue_events_;
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(
      serving.batching, workers,
      [served = model.get()](size_t worker,
                             std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
        served->RunBatch(worker, batch);
      });
  if (!batcher.ok()) return batcher.status();
  model->batcher_ = *std::move(batcher);
  return model;
}

ServedModel::ServedModel(std::string name, int64_t version, Instances instances,
                         const ServingOptions& options, WorkPool* codec_pool,
                         metrics::ModelMetrics* metrics)
    : name_(std::move(name)),
      version_(version),
      instances_(std::move(instances)),
      executors_([this] {
        std::vector<std::unique_ptr<handlers::BatchExecutor>> executors;
        for (auto& instance : instances_) {
          executors.push_back(std::make_unique<handlers::BatchExecutor>(instance->handler()));
        }
        return executors;
      }()),
      signature_(instances_[0]->signature()),
      times_(TotalTimes(instances_)),
      max_rows_per_request_(options.max_rows_per_request),
      codec_pool_(codec_pool),
      metrics_(metrics),
      queue_events_(metrics),
      cache_(options.cache),
      cache_owner_(next_cache_owner.fetch_add(1, std::memory_order_relaxed)) {}

ServedModel::~ServedModel() { Shutdown(); }

void ServedModel::RunBatch(size_t worker,
                           std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
  const auto start = std::chrono::steady_clock::now();
  int64_t rows = 0;
  for (const auto& task : batch) rows += task->request().rows;
  const handlers::Execution execution = executors_[worker]->Execute(batch);
  statistics_.RecordBatch(batch.size(), rows, execution);
  metrics_->RecordBatch(
      batch.size(), rows, execution.forward_passes,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  BatchedCall::ReplyAll(batch, version_, codec_pool_);
}

void ServedModel::Shutdown() {
  if (batcher_ != nullptr) batcher_->Shutdown();
  // No batch of this version runs any more: none adds an entry after this.
  if (cache_ != nullptr) cache_->Invalidate(cache_owner_);
  executors_.clear();
  instances_.clear();  // LoadedModel's destructor runs Cleanup
}

}  // namespace model_server::server

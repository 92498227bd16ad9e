#include "server/served_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "handlers/fault.h"
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
                         const ServingOptions& options, WorkPool* codec_pool,
                         metrics::ModelMetrics* metrics)
    : name_(std::move(name)),
      version_(version),
      instances_(std::move(instances)),
      executors_([this, &options] {
        std::vector<std::unique_ptr<handlers::BatchExecutor>> executors;
        for (auto& instance : instances_) {
          executors.push_back(std::make_unique<handlers::BatchExecutor>(
              instance->handler(), static_cast<int64_t>(options.batching.max_batch_rows)));
        }
        return executors;
      }()),
      signature_(instances_[0]->signature()),
      times_(TotalTimes(instances_)),
      max_rows_per_request_(options.max_rows_per_request),
      max_forward_rows_(executors_[0]->max_forward_rows()),
      on_device_lost_(options.on_device_lost),
      codec_pool_(codec_pool),
      metrics_(metrics) {}

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
  if (execution.out_of_memory > 0 || execution.device_faults > 0) {
    metrics_->RecordFaults(execution.out_of_memory, execution.device_faults);
  }
  BatchedCall::ReplyAll(batch, version_, codec_pool_);
  if (!execution.device_lost.ok()) {
    if (execution.device_faults > 0) {
      spdlog::critical("model {}: version {}: instance {}: the device is lost: {}", name_, version_,
                       worker, std::string(execution.device_lost.message()));
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
  executors_.clear();
  instances_.clear();  // LoadedModel's destructor runs Cleanup
}

}  // namespace model_server::server

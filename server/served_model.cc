#include "server/served_model.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/batched_call.h"

namespace model_server::server {
namespace {

bool SameSignature(const handlers::ModelSignature& a, const handlers::ModelSignature& b) {
  return a.num_inputs == b.num_inputs && a.num_outputs == b.num_outputs &&
         a.num_params == b.num_params && a.input_names == b.input_names &&
         a.output_names == b.output_names && a.default_params == b.default_params;
}

// Model names go into metric labels and OIP URLs: letters, digits, '_', '-', '.'.
bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!allowed) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(
    std::string name, std::vector<std::unique_ptr<handlers::LoadedModel>> instances,
    const batching::BatchingOptions& batching, WorkPool* codec_pool,
    metrics::ServerMetrics* metrics) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name \"", name, "\" must be 1 to 128 letters, digits, '_', '-' or '.'"));
  }
  if (instances.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, " has no instance to serve"));
  }
  for (const auto& instance : instances) {
    if (!SameSignature(instance->signature(), instances[0]->signature())) {
      return absl::InvalidArgumentError(
          absl::StrCat("instances of model ", name, " differ in their signatures"));
    }
  }
  auto first = std::make_shared<ModelVersion>();
  first->number = 1;
  handlers::InitializeTimes times;
  for (auto& instance : instances) {
    times.load_seconds += instance->handler().initialize_times().load_seconds;
    times.warmup_seconds += instance->handler().initialize_times().warmup_seconds;
    first->executors.push_back(std::make_unique<handlers::BatchExecutor>(instance->handler()));
    first->instances.push_back(std::move(instance));
  }
  const size_t workers = first->instances.size();
  metrics::ModelMetrics* model_metrics = metrics->AddModel(name);
  std::unique_ptr<ServedModel> model(
      new ServedModel(std::move(name), std::move(first), codec_pool, model_metrics));
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(
      batching, workers,
      [served = model.get()](size_t worker,
                             std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
        served->RunBatch(worker, batch);
      });
  if (!batcher.ok()) return batcher.status();
  model->batcher_ = *std::move(batcher);
  model_metrics->SetLoadSeconds(times.load_seconds);
  model_metrics->SetWarmupSeconds(times.warmup_seconds);
  model_metrics->SetVersion(1);
  model_metrics->SetSources([served = model.get()] { return served->QueuedRequests(); },
                            [served = model.get()]() -> size_t { return served->version() > 0; });
  return model;
}

ServedModel::ServedModel(std::string name, std::shared_ptr<ModelVersion> first,
                         WorkPool* codec_pool, metrics::ModelMetrics* metrics)
    : name_(std::move(name)),
      signature_(first->instances[0]->signature()),
      codec_pool_(codec_pool),
      metrics_(metrics),
      current_(std::move(first)) {}

ServedModel::~ServedModel() { Shutdown(); }

int64_t ServedModel::version() const {
  const std::shared_ptr<const ModelVersion> current = Current();
  return current != nullptr ? current->number : 0;
}

std::shared_ptr<const ModelVersion> ServedModel::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

void ServedModel::RunBatch(size_t worker,
                           std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
  // Held until the batch has replied: a swap releases this version only after that.
  const std::shared_ptr<const ModelVersion> version = Current();
  const auto start = std::chrono::steady_clock::now();
  size_t rows = 0;
  for (const auto& task : batch) rows += task->rows();
  const size_t forward_passes = version->executors[worker]->Execute(batch);
  metrics_->RecordBatch(
      batch.size(), rows, forward_passes,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  BatchedCall::ReplyAll(batch, version->number, codec_pool_);
}

void ServedModel::Shutdown() {
  metrics_->SetSources(nullptr, nullptr);  // scrapes may outlive this model
  if (batcher_ != nullptr) batcher_->Shutdown();
  std::lock_guard<std::mutex> lock(mu_);
  current_.reset();  // LoadedModel's destructor runs Cleanup
}

absl::StatusOr<ServedModel*> FindModel(const std::vector<std::unique_ptr<ServedModel>>& models,
                                       const std::string& name, const std::string& version) {
  for (const auto& model : models) {
    if (model->name() != name) continue;
    if (!version.empty() && version != std::to_string(model->version())) {
      return absl::InvalidArgumentError(absl::StrCat("model \"", name, "\" has no version \"",
                                                     version, "\"; it serves version ",
                                                     model->version()));
    }
    return model.get();
  }
  std::vector<std::string> names;
  for (const auto& model : models) names.push_back(absl::StrCat("\"", model->name(), "\""));
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown model \"", name, "\"; this server serves ", absl::StrJoin(names, ", ")));
}

}  // namespace model_server::server

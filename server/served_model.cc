#include "server/served_model.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"
#include "server/batched_call.h"

namespace model_server::server {
namespace {

// Model names go into metric labels and OIP URLs: letters, digits, '_', '-', '.'.
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!allowed) return false;
  }
  return true;
}

handlers::InitializeTimes TotalTimes(const Instances& instances) {
  handlers::InitializeTimes times;
  for (const auto& instance : instances) {
    times.load_seconds += instance->handler().initialize_times().load_seconds;
    times.warmup_seconds += instance->handler().initialize_times().warmup_seconds;
  }
  return times;
}

}  // namespace

bool ServedModel::FileIdentity::operator==(const FileIdentity& other) const {
  return device == other.device && inode == other.inode && size == other.size &&
         modified_ns == other.modified_ns;
}

ServedModel::FileIdentity ServedModel::Identify(const std::string& path) {
  struct stat status;
  if (stat(path.c_str(), &status) != 0) return {};
  return {status.st_dev, status.st_ino, status.st_size,
          int64_t{status.st_mtim.tv_sec} * 1000000000 + status.st_mtim.tv_nsec};
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(
    std::string name, Instances instances, ModelSource source, batching::BatchingOptions batching,
    int64_t max_rows_per_request, WorkPool* codec_pool, metrics::ServerMetrics* metrics) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name \"", name, "\" must be 1 to 128 letters, digits, '_', '-' or '.'"));
  }
  if (instances.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, " has no instance to serve"));
  }
  for (const auto& instance : instances) {
    if (!handlers::SignatureDifference(instances[0]->signature(), instance->signature()).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("instances of model ", name, " differ in their signatures"));
    }
  }
  const handlers::InitializeTimes times = TotalTimes(instances);
  const size_t workers = instances.size();
  // A batch holds no more than the model takes; a model without a batch dimension runs requests
  // alone.
  const handlers::ModelSignature& signature = instances[0]->signature();
  batching.max_batch_rows =
      signature.batches()
          ? std::min<size_t>(batching.max_batch_rows, signature.max_batch_size)
          : 1;
  metrics::ModelMetrics* model_metrics = metrics->AddModel(name);
  std::unique_ptr<ServedModel> model(new ServedModel(name,
                                                     MakeVersion(name, 1, std::move(instances)),
                                                     std::move(source), codec_pool, model_metrics));
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(
      batching, workers,
      [served = model.get()](size_t worker,
                             std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
        served->RunBatch(worker, batch);
      });
  if (!batcher.ok()) return batcher.status();
  model->batcher_ = *std::move(batcher);
  model->max_rows_per_request_ = max_rows_per_request;
  model_metrics->SetLoadSeconds(times.load_seconds);
  model_metrics->SetWarmupSeconds(times.warmup_seconds);
  model_metrics->SetVersion(1);
  model_metrics->SetSources([served = model.get()] { return served->QueuedRequests(); },
                            [served = model.get()] { return served->LoadedVersions(); });
  return model;
}

ServedModel::ServedModel(std::string name, std::shared_ptr<ModelVersion> first, ModelSource source,
                         WorkPool* codec_pool, metrics::ModelMetrics* metrics)
    : name_(std::move(name)),
      signature_(first->instances[0]->signature()),
      source_(std::move(source)),
      codec_pool_(codec_pool),
      metrics_(metrics),
      current_(std::move(first)),
      attempted_(source_.path.empty() ? FileIdentity() : Identify(source_.path)) {}

ServedModel::~ServedModel() { Shutdown(); }

std::shared_ptr<ModelVersion> ServedModel::MakeVersion(const std::string& model_name,
                                                       int64_t number, Instances instances) {
  auto* version = new ModelVersion;
  version->number = number;
  for (auto& instance : instances) {
    version->executors.push_back(std::make_unique<handlers::BatchExecutor>(instance->handler()));
    version->instances.push_back(std::move(instance));
  }
  return std::shared_ptr<ModelVersion>(version, [name = model_name](ModelVersion* released) {
    if (released->retired.load()) {
      spdlog::info("model {}: version {} released after its last batch", name, released->number);
    }
    delete released;  // LoadedModel's destructor runs Cleanup
  });
}

int64_t ServedModel::version() const {
  const std::shared_ptr<ModelVersion> current = Current();
  return current != nullptr ? current->number : 0;
}

size_t ServedModel::LoadedVersions() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t loaded = current_ != nullptr ? 1 : 0;
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const std::weak_ptr<ModelVersion>& v) { return v.expired(); }),
                 retired_.end());
  return loaded + retired_.size();
}

std::shared_ptr<ModelVersion> ServedModel::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

bool ServedModel::FileChanged() const {
  if (!reloadable()) return false;
  const FileIdentity now = Identify(source_.path);
  std::lock_guard<std::mutex> lock(identity_mu_);
  return !(now == attempted_);
}

absl::Status ServedModel::Reload() {
  if (!reloadable()) {
    return absl::FailedPreconditionError(absl::StrCat("model ", name_, " has no file to reload"));
  }
  std::lock_guard<std::mutex> reloading(reload_mu_);
  {
    // Before the load: a file that changes while it loads is loaded again.
    std::lock_guard<std::mutex> lock(identity_mu_);
    attempted_ = Identify(source_.path);
  }
  const std::shared_ptr<ModelVersion> serving_version = Current();
  if (serving_version == nullptr) return absl::FailedPreconditionError("the model is shut down");
  const int64_t serving = serving_version->number;
  const size_t workers = serving_version->instances.size();
  const auto refuse = [&](const std::string& why) {
    metrics_->RecordReload(false);
    spdlog::error("model {}: new version from {} refused: {}; version {} serves on", name_,
                  source_.path, why, serving);
    return absl::FailedPreconditionError(why);
  };
  absl::StatusOr<Instances> instances = source_.load();
  if (!instances.ok()) return refuse(std::string(instances.status().message()));
  if (instances->size() != workers) {  // the loader's contract, checked
    return refuse(absl::StrCat("the loader made ", instances->size(), " instances for ", workers,
                               " batch threads"));
  }
  for (const auto& instance : *instances) {
    const std::string difference = handlers::SignatureDifference(signature_, instance->signature());
    if (!difference.empty()) return refuse(absl::StrCat("its signature differs: ", difference));
  }
  const handlers::InitializeTimes times = TotalTimes(*instances);
  std::shared_ptr<ModelVersion> next = MakeVersion(name_, serving + 1, *std::move(instances));
  std::shared_ptr<ModelVersion> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous = std::move(current_);
    current_ = next;
    previous->retired.store(true);
    retired_.push_back(previous);
  }
  metrics_->SetVersion(next->number);
  metrics_->SetLoadSeconds(times.load_seconds);
  metrics_->SetWarmupSeconds(times.warmup_seconds);
  metrics_->RecordReload(true);
  spdlog::info(
      "model {}: version {} from {} serves new batches (loaded in {:.0f} ms, warmed up "
      "in {:.0f} ms); version {} finishes the batches it has",
      name_, next->number, source_.path, 1e3 * times.load_seconds, 1e3 * times.warmup_seconds,
      previous->number);
  return absl::OkStatus();  // `previous` goes here, or with its last batch
}

void ServedModel::RunBatch(size_t worker,
                           std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
  // Held until the batch has replied: a swap releases this version only after that.
  const std::shared_ptr<ModelVersion> version = Current();
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
  current_.reset();
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

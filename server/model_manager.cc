#include "server/model_manager.h"

#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"
#include "repository/model_config.h"
#include "server/batched_call.h"

namespace model_server::server {
namespace {

constexpr char kReady[] = "READY";
constexpr char kLoading[] = "LOADING";
constexpr char kUnloading[] = "UNLOADING";
constexpr char kUnavailable[] = "UNAVAILABLE";

// The configuration a version is served with: the catalog's, with inputs, outputs and
// max_batch_size from the signature when it declares none, and, for a model without a
// config.pbtxt, dynamic batching with the server's delay and its instance count.
inference::ModelConfig Settle(const repository::RepositoryModel& model,
                              const handlers::ModelSignature& signature, size_t instances,
                              const ServingOptions& defaults) {
  inference::ModelConfig config = model.config;
  if (config.input_size() == 0 && config.output_size() == 0) {
    repository::WriteSignature({signature.inputs, signature.outputs, signature.max_batch_size},
                               &config);
  }
  if (!model.has_config_file) {
    config.mutable_dynamic_batching()->set_max_queue_delay_microseconds(
        static_cast<uint64_t>(defaults.batching.max_queue_delay.count()));
    config.clear_instance_group();
    config.add_instance_group()->set_count(static_cast<int>(instances));
  }
  return config;
}

batching::QueuePolicy QueuePolicyFrom(const inference::ModelQueuePolicy& policy) {
  batching::QueuePolicy queue;
  queue.max_queue_size = policy.max_queue_size();
  queue.default_timeout = std::chrono::microseconds(policy.default_timeout_microseconds());
  queue.allow_timeout_override = policy.allow_timeout_override();
  queue.timeout_action = policy.timeout_action() == inference::ModelQueuePolicy::DELAY
                             ? batching::TimeoutAction::kDelay
                             : batching::TimeoutAction::kReject;
  return queue;
}

// How a version with `config` is served: Triton's dynamic batching when the configuration has
// it (its delay and preferred sizes, priority levels and queue policies, or a latency
// objective), one request per batch otherwise; requests of at most max_batch_size rows when the
// configuration comes from a config.pbtxt; the server's response cache when the configuration
// enables it. FAILED_PRECONDITION when it enables the cache and the server has none.
absl::StatusOr<ServingOptions> ServingFor(const inference::ModelConfig& config,
                                          bool has_config_file, const ServingOptions& defaults) {
  ServingOptions serving = defaults;
  serving.cache = nullptr;
  if (config.response_cache().enable()) {
    if (defaults.cache == nullptr) {
      return absl::FailedPreconditionError(
          "config field response_cache.enable is set but the server has no response cache "
          "(start it with --cache-config local,size=BYTES)");
    }
    serving.cache = defaults.cache;
  }
  batching::BatchingOptions& batching = serving.batching;
  if (config.max_batch_size() > 0) {
    batching.max_batch_rows =
        std::min<size_t>(batching.max_batch_rows, static_cast<size_t>(config.max_batch_size()));
  }
  if (config.has_dynamic_batching()) {
    const inference::ModelDynamicBatching& dynamic = config.dynamic_batching();
    batching.max_queue_delay = std::chrono::microseconds(dynamic.max_queue_delay_microseconds());
    std::set<size_t> preferred;
    for (const int64_t rows : dynamic.preferred_batch_size()) {
      if (rows > 0 && static_cast<size_t>(rows) <= batching.max_batch_rows) preferred.insert(rows);
    }
    batching.preferred_batch_rows.assign(preferred.begin(), preferred.end());
    batching::PriorityOptions& priorities = batching.priorities;
    priorities.levels = dynamic.priority_levels();
    priorities.default_level = dynamic.default_priority_level();
    priorities.default_policy = QueuePolicyFrom(dynamic.default_queue_policy());
    for (const auto& [level, policy] : dynamic.priority_queue_policy()) {
      priorities.level_policies[level] = QueuePolicyFrom(policy);
    }
    if (const std::optional<uint64_t> objective =
            repository::LatencyObjectiveMicroseconds(config)) {
      batching.latency_objective = std::chrono::microseconds(*objective);
    }
  } else {
    batching.max_batch_tasks = 1;
  }
  if (has_config_file) {
    serving.max_rows_per_request = std::max<int64_t>(config.max_batch_size(), 1);
  }
  return serving;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelManager>> ModelManager::Start(
    std::unique_ptr<ModelCatalog> catalog, ModelRegistry* registry, WorkPool* codec_pool,
    metrics::ServerMetrics* metrics, const ManagerOptions& options) {
  std::unique_ptr<ModelManager> manager(
      new ModelManager(std::move(catalog), registry, codec_pool, metrics, options));
  absl::StatusOr<std::vector<std::string>> names = manager->catalog_->Names();
  if (!names.ok()) return names.status();
  std::vector<std::string> startup = *names;
  if (options.mode == ControlMode::kExplicit) {
    const bool all = std::find(options.startup_models.begin(), options.startup_models.end(), "*") !=
                     options.startup_models.end();
    if (!all) startup = options.startup_models;
  }
  for (const std::string& name : startup) {
    // With exit_on_error, the caller reports the failure that stops the server.
    absl::Status loaded = manager->LoadModel(name, /*again=*/false, options.exit_on_error);
    if (!loaded.ok() && options.exit_on_error) return loaded;
  }
  manager->thread_ = std::thread([raw = manager.get()] { raw->Loop(); });
  return manager;
}

ModelManager::ModelManager(std::unique_ptr<ModelCatalog> catalog, ModelRegistry* registry,
                           WorkPool* codec_pool, metrics::ServerMetrics* metrics,
                           const ManagerOptions& options)
    : catalog_(std::move(catalog)),
      registry_(registry),
      codec_pool_(codec_pool),
      metrics_(metrics),
      options_(options) {}

ModelManager::~ModelManager() { Stop(); }

absl::Status ModelManager::LoadModel(const std::string& name, bool again, bool quiet) {
  absl::StatusOr<repository::RepositoryModel> model = catalog_->Read(name, again);
  Known& known = known_[name];
  if (!model.ok()) {
    // Tried again once its files change.
    known.fingerprint = catalog_->Fingerprint(name).value_or(0);
    const std::string reason(model.status().message());
    SetModelReason(name, reason);
    if (!quiet) spdlog::error("model {}: cannot load: {}", name, reason);
    return model.status();
  }
  SetModelReason(name, "");
  const bool config_changed = !known.read || !google::protobuf::util::MessageDifferencer::Equals(
                                                 known.config, model->config);
  const bool changed = config_changed || known.fingerprint != model->fingerprint;
  known.fingerprint = model->fingerprint;
  known.config = model->config;
  known.read = true;

  // Numbers and a signature, not the versions themselves: a version held here could not be
  // released (ModelRegistry::Remove waits until no one else holds it).
  std::vector<int64_t> serving;
  std::optional<handlers::ModelSignature> reference;
  for (const auto& version : registry_->Versions(name)) {
    serving.push_back(version->version());
    // Without a new configuration, a new version must take and give what the serving one does.
    if (!config_changed) reference = version->signature();
  }
  std::vector<std::string> failures;
  bool any_serves = false;
  for (const repository::VersionFile& file : model->versions) {
    const bool serves = std::find(serving.begin(), serving.end(), file.version) != serving.end();
    if (serves && !again && !changed) {
      any_serves = true;
      continue;
    }
    if (!serves) SetVersionState(name, file.version, kLoading);
    absl::Status loaded = LoadVersion(*model, file, reference ? &*reference : nullptr);
    if (!serving.empty()) metrics_->AddModel(name)->RecordReload(loaded.ok());
    if (loaded.ok()) {
      any_serves = true;
      SetVersionState(name, file.version, kReady);
      continue;
    }
    const std::string reason(loaded.message());
    failures.push_back(
        absl::StrCat("(", file.path.empty() ? "the built-in demo" : file.path, "): ", reason));
    if (quiet) {
      SetVersionState(name, file.version, kUnavailable, reason);
    } else if (serves) {
      any_serves = true;
      spdlog::error("model {}: new version {} from {} refused: {}; version {} serves on", name,
                    file.version, file.path, reason, file.version);
    } else if (!serving.empty()) {
      spdlog::error("model {}: new version {} from {} refused: {}; version {} serves on", name,
                    file.version, file.path, reason, serving.back());
      SetVersionState(name, file.version, kUnavailable, reason);
    } else {
      spdlog::error("model {}: version {} from {} cannot load: {}", name, file.version, file.path,
                    reason);
      SetVersionState(name, file.version, kUnavailable, reason);
    }
  }
  // The versions the policy no longer picks go once a picked one serves (else they serve on).
  if (any_serves) {
    for (const int64_t number : serving) {
      const bool picked = std::any_of(model->versions.begin(), model->versions.end(),
                                      [&](const auto& file) { return file.version == number; });
      if (picked) continue;
      SetVersionState(name, number, kUnloading);
      registry_->Remove(name, number);
      SetVersionState(name, number, kUnavailable, "unloaded");
    }
  }
  if (failures.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model \"", name, "\" ", absl::StrJoin(failures, "; ")));
}

absl::Status ModelManager::LoadVersion(const repository::RepositoryModel& model,
                                       const repository::VersionFile& file,
                                       const handlers::ModelSignature* reference) {
  absl::StatusOr<Instances> instances = catalog_->Load(model, file);
  if (!instances.ok()) return instances.status();
  if (instances->empty()) return absl::InternalError("the loader made no instance");
  const handlers::ModelSignature& signature = (*instances)[0]->signature();
  if (reference != nullptr) {
    const std::string difference = handlers::SignatureDifference(*reference, signature);
    if (!difference.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("its signature differs: ", difference));
    }
  }
  auto config = std::make_shared<const inference::ModelConfig>(
      Settle(model, signature, instances->size(), options_.serving));
  absl::StatusOr<ServingOptions> serving =
      ServingFor(*config, model.has_config_file, options_.serving);
  if (!serving.ok()) return serving.status();
  absl::StatusOr<std::unique_ptr<ServedModel>> served = ServedModel::Create(
      model.name, file.version, *std::move(instances), *serving,
      [pool = codec_pool_](const auto& batch, int64_t version) {
        BatchedCall::ReplyAll(batch, version, pool);
      },
      metrics_->AddModel(model.name));
  if (!served.ok()) return served.status();
  const handlers::InitializeTimes times = (*served)->initialize_times();
  registry_->Install(std::shared_ptr<ServedModel>(*std::move(served)), std::move(config));
  catalog_->Served(model.name, file.version);
  spdlog::info("model {}: version {} from {} serves (loaded in {:.0f} ms, warmed up in {:.0f} ms)",
               model.name, file.version, file.path.empty() ? "the built-in demo" : file.path,
               1e3 * times.load_seconds, 1e3 * times.warmup_seconds);
  return absl::OkStatus();
}

absl::Status ModelManager::UnloadModel(const std::string& name) {
  std::vector<int64_t> numbers;
  for (const auto& version : registry_->Versions(name)) numbers.push_back(version->version());
  for (const int64_t number : numbers) SetVersionState(name, number, kUnloading);
  registry_->Remove(name, std::nullopt);
  for (const int64_t number : numbers) SetVersionState(name, number, kUnavailable, "unloaded");
  known_.erase(name);
  spdlog::info("model {}: unloaded", name);
  return absl::OkStatus();
}

void ModelManager::Poll() {
  absl::StatusOr<std::vector<std::string>> names = catalog_->Names();
  if (!names.ok()) {
    spdlog::error("cannot read the model repository: {}", std::string(names.status().message()));
    return;
  }
  for (const std::string& name : *names) {
    const auto known = known_.find(name);
    if (known != known_.end()) {
      absl::StatusOr<uint64_t> fingerprint = catalog_->Fingerprint(name);
      if (fingerprint.ok() && *fingerprint == known->second.fingerprint) continue;
    }
    (void)LoadModel(name, /*again=*/false, /*quiet=*/false);  // logged, and in the index
  }
  std::vector<std::string> gone;
  for (const auto& [name, unused] : known_) {
    if (!std::binary_search(names->begin(), names->end(), name)) gone.push_back(name);
  }
  for (const std::string& name : gone) {
    (void)UnloadModel(name);
    base::MutexLock lock(states_mu_);
    states_.erase(name);
  }
}

void ModelManager::Load(const std::string& name, Done done) {
  if (options_.mode != ControlMode::kExplicit) {
    done(absl::FailedPreconditionError(
        "explicit model load and unload are not allowed: the server runs with "
        "--model-control-mode none or poll (use explicit)"));
    return;
  }
  Post(
      {[this, name] { return LoadModel(name, /*again=*/true, /*quiet=*/false); }, std::move(done)});
}

void ModelManager::Unload(const std::string& name, Done done) {
  if (options_.mode != ControlMode::kExplicit) {
    done(absl::FailedPreconditionError(
        "explicit model load and unload are not allowed: the server runs with "
        "--model-control-mode none or poll (use explicit)"));
    return;
  }
  Post({[this, name] { return UnloadModel(name); }, std::move(done)});
}

void ModelManager::RequestReload() {
  Post({[this] {
          for (const std::string& name : registry_->Names()) (void)LoadModel(name, true, false);
          return absl::OkStatus();
        },
        nullptr});
}

void ModelManager::Post(Job job) {
  bool queued = false;
  {
    base::MutexLock lock(mu_);
    if (!stopping_) {
      jobs_.push_back(std::move(job));
      queued = true;
    }
  }
  if (!queued && job.done) job.done(absl::UnavailableError("server is shutting down"));
  wake_.Signal();
}

void ModelManager::Loop() {
  const bool polls = options_.mode == ControlMode::kPoll && options_.poll_interval.count() > 0;
  auto next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
  base::MutexLock lock(mu_);
  while (!stopping_) {
    if (jobs_.empty()) {
      if (!polls) {
        wake_.Wait(mu_);
        continue;
      }
      if (wake_.WaitUntil(mu_, next_poll) || !jobs_.empty() || stopping_) continue;
      lock.Unlock();  // time to poll
      Poll();
      next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
      lock.Lock();
      continue;
    }
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.Unlock();
    absl::Status status = job.work();
    if (job.done) job.done(std::move(status));
    lock.Lock();
  }
  std::deque<Job> cancelled;
  cancelled.swap(jobs_);
  lock.Unlock();
  for (Job& job : cancelled) {
    if (job.done) job.done(absl::UnavailableError("server is shutting down"));
  }
}

void ModelManager::Stop() {
  {
    base::MutexLock lock(mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

std::vector<IndexEntry> ModelManager::Index(bool ready_only) const {
  std::vector<std::string> names = catalog_->Names().value_or(std::vector<std::string>());
  base::MutexLock lock(states_mu_);
  for (const auto& [name, state] : states_) {
    if (!std::binary_search(names.begin(), names.end(), name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::vector<IndexEntry> index;
  for (const std::string& name : names) {
    const auto found = states_.find(name);
    if (found == states_.end() ||
        (found->second.versions.empty() && found->second.reason.empty())) {
      if (!ready_only) index.push_back({name, "", "", ""});
      continue;
    }
    const ModelState& state = found->second;
    if (state.versions.empty()) {
      if (!ready_only) index.push_back({name, "", kUnavailable, state.reason});
      continue;
    }
    for (const auto& [version, version_state] : state.versions) {
      if (ready_only && version_state.state != kReady) continue;
      index.push_back({name, std::to_string(version), version_state.state, version_state.reason});
    }
  }
  return index;
}

void ModelManager::SetModelReason(const std::string& name, const std::string& reason) {
  base::MutexLock lock(states_mu_);
  states_[name].reason = reason;
}

void ModelManager::SetVersionState(const std::string& name, int64_t version, const char* state,
                                   const std::string& reason) {
  base::MutexLock lock(states_mu_);
  states_[name].versions[version] = {state, reason};
}

}  // namespace model_server::server

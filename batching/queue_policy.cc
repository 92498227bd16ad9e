#include "batching/queue_policy.h"

#include "absl/strings/str_cat.h"

namespace model_server::batching {
namespace {

absl::Status CheckPolicy(const QueuePolicy& policy, const std::string& what) {
  if (policy.default_timeout.count() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": default timeout must not be negative"));
  }
  return absl::OkStatus();
}

}  // namespace

std::chrono::microseconds EffectiveTimeout(const QueuePolicy& policy,
                                           std::chrono::microseconds requested) {
  const std::chrono::microseconds none{0};
  if (!policy.allow_timeout_override || requested <= none) return policy.default_timeout;
  if (policy.default_timeout == none || requested < policy.default_timeout) return requested;
  return policy.default_timeout;
}

bool MayReject(const PriorityOptions& options) {
  const auto rejects = [](const QueuePolicy& policy) {
    return policy.timeout_action == TimeoutAction::kReject &&
           (policy.default_timeout.count() > 0 || policy.allow_timeout_override);
  };
  if (rejects(options.default_policy)) return true;
  for (const auto& [level, policy] : options.level_policies) {
    if (rejects(policy)) return true;
  }
  return false;
}

absl::Status ValidatePriorityOptions(const PriorityOptions& options) {
  if (options.levels > kMaxPriorityLevels) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority_levels ", options.levels, " is over ", kMaxPriorityLevels));
  }
  if (options.levels == 0) {
    if (options.default_level != 0) {
      return absl::InvalidArgumentError(absl::StrCat("default_priority_level ",
                                                     options.default_level,
                                                     " needs priority_levels (there are none)"));
    }
    if (!options.level_policies.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("priority_queue_policy names level ",
                                                     options.level_policies.begin()->first,
                                                     " but there are no priority_levels"));
    }
  } else {
    if (options.default_level < 1 || options.default_level > options.levels) {
      return absl::InvalidArgumentError(
          absl::StrCat("default_priority_level ", options.default_level,
                       " is outside the priority levels 1..", options.levels));
    }
    for (const auto& [level, policy] : options.level_policies) {
      if (level < 1 || level > options.levels) {
        return absl::InvalidArgumentError(absl::StrCat("priority_queue_policy names level ", level,
                                                       ", outside the priority levels 1..",
                                                       options.levels));
      }
    }
  }
  if (absl::Status valid = CheckPolicy(options.default_policy, "default_queue_policy");
      !valid.ok()) {
    return valid;
  }
  for (const auto& [level, policy] : options.level_policies) {
    if (absl::Status valid = CheckPolicy(policy, absl::StrCat("priority_queue_policy ", level));
        !valid.ok()) {
      return valid;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> LevelOf(const PriorityOptions& options, uint64_t priority) {
  if (options.levels == 0) return size_t{0};
  if (priority == 0) return options.default_level;
  if (priority > options.levels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "priority ", priority, " is outside the model's priority levels 1..", options.levels,
        " (1 is served first; 0 or none takes the default level ", options.default_level, ")"));
  }
  return static_cast<size_t>(priority);
}

const QueuePolicy& PolicyOf(const PriorityOptions& options, size_t level) {
  const auto found = options.level_policies.find(level);
  return found == options.level_policies.end() ? options.default_policy : found->second;
}

}  // namespace model_server::batching

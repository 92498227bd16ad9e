#include "batching/batch_queue.h"

#include "absl/strings/str_cat.h"

namespace model_server::batching {

absl::Status ValidateBatchingOptions(const BatchingOptions& options) {
  if (options.max_batch_rows == 0) {
    return absl::InvalidArgumentError("max_batch_rows must be at least 1");
  }
  if (options.max_queue_rows < options.max_batch_rows) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_rows (", options.max_queue_rows,
                                                   ") must be at least max_batch_rows (",
                                                   options.max_batch_rows, ")"));
  }
  if (options.max_queue_delay.count() < 0) {
    return absl::InvalidArgumentError("max_queue_delay must not be negative");
  }
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock must be set");
  if (options.max_batch_tasks == 0) {
    return absl::InvalidArgumentError("max_batch_tasks must be at least 1");
  }
  for (size_t i = 0; i < options.preferred_batch_rows.size(); ++i) {
    const size_t rows = options.preferred_batch_rows[i];
    if (rows == 0 || rows > options.max_batch_rows ||
        (i > 0 && rows <= options.preferred_batch_rows[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("preferred batch sizes must ascend, each from 1 to max_batch_rows (",
                       options.max_batch_rows, "); ", rows, " does not"));
    }
  }
  if (options.latency_objective.count() < 0) {
    return absl::InvalidArgumentError("latency_objective must not be negative");
  }
  return ValidatePriorityOptions(options.priorities);
}

}  // namespace model_server::batching

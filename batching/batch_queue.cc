#include "batching/batch_queue.h"

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
  return absl::OkStatus();
}

}  // namespace model_server::batching

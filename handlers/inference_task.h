#pragma once

#include <cstdint>
#include <vector>

#include "batching/batch_task.h"
#include "handlers/model_handler.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// A request queued for the batcher, with its own completion. The transport implements it; the
// batcher and the executor never learn what completing does.
class InferenceTask : public batching::BatchTask {
 public:
  explicit InferenceTask(InferenceRequest request)
      : request_(std::move(request)), batch_key_(BatchKey(request_)) {}

  const InferenceRequest& request() const { return request_; }
  size_t rows() const final { return static_cast<size_t>(request_.rows); }
  absl::Span<const int64_t> batch_key() const final { return batch_key_; }

  // Gives the task rows [task_row, task_row + rows) of its outputs: rows [batch_row,
  // batch_row + rows) of each of `outputs` (the whole of each when the model does not batch),
  // which are only valid during the call. Called on a batch thread, in row order, until every
  // row is given: once for a request that fits a batch, once per forward pass for one larger
  // than the model's max_batch_size. Fail may still follow a call that did not give the last
  // rows, and then ends the task.
  virtual void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row,
                        int64_t task_row, int64_t rows) = 0;

 private:
  InferenceRequest request_;
  const Dims batch_key_;
};

}  // namespace model_server::handlers

#pragma once

#include <cstdint>

#include "batching/batch_task.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// A request queued for the batcher, with its own completion. The transport implements it; the
// batcher and the executor never learn what completing does.
class InferenceTask : public batching::BatchTask {
 public:
  explicit InferenceTask(InferenceRequest request) : request_(std::move(request)) {}

  const InferenceRequest& request() const { return request_; }
  size_t rows() const final { return static_cast<size_t>(request_.rows); }

  // Ends a task that ran: `outputs` points at this request's first output row; rows are
  // `stride` floats apart, and only valid during the call. Called once, on a batch thread, and
  // then Fail is not.
  virtual void Complete(const float* outputs, int64_t stride) = 0;

 private:
  InferenceRequest request_;
};

}  // namespace model_server::handlers

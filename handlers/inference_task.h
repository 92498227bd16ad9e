#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace handlers {

// A decoded, validated request: everything the batch thread needs, nothing it has to check.
struct InferenceRequest {
  int64_t rows = 0;
  std::vector<float> inputs;              // [rows, num_inputs], row-major
  std::vector<float> params;              // [num_params]: every row gets this vector
  std::vector<std::string> output_names;  // names of output columns 0..size()-1 in the reply
};

// A request queued for the batcher, with its own completion. The transport implements it; the
// batcher and the executor never learn what completing does.
class InferenceTask {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  explicit InferenceTask(InferenceRequest request) : request_(std::move(request)) {}
  virtual ~InferenceTask() = default;

  const InferenceRequest& request() const { return request_; }
  size_t rows() const { return static_cast<size_t>(request_.rows); }

  // Called once, on a batch thread, as the task leaves the batcher's queue. OK while the task is
  // still worth computing; DEADLINE_EXCEEDED or CANCELLED drops it.
  virtual absl::Status Dequeue(TimePoint now) = 0;

  // Exactly one of Complete or Fail is called, once, on a batch thread.
  // `outputs` points at this request's first output row; rows are `stride` floats apart, and
  // only valid during the call.
  virtual void Complete(const float* outputs, int64_t stride) = 0;
  virtual void Fail(absl::Status status) = 0;

 private:
  InferenceRequest request_;
};

}  // namespace handlers

#pragma once

#include <memory>
#include <vector>

#include "handlers/inference_task.h"
#include "handlers/model_handler.h"

namespace model_server::handlers {

// Turns a batch of tasks into one forward pass on a handler and fans the outputs back out.
// Owned by one batch thread; Execute is never called concurrently on one executor.
class BatchExecutor {
 public:
  explicit BatchExecutor(ModelHandler& handler) : handler_(handler) {}

  // Completes every task: each gets its rows of the batch's outputs or its own error. When the
  // batched forward fails, each task is run alone, so one bad request fails only itself.
  // Returns the number of forward passes run (1, or 1 + the batch's size after a failure).
  size_t Execute(std::vector<std::unique_ptr<InferenceTask>>& batch);

 private:
  // One forward over tasks[begin, end); on OK each of them has been completed.
  absl::Status Forward(const std::vector<std::unique_ptr<InferenceTask>>& tasks, size_t begin,
                       size_t end);

  ModelHandler& handler_;
};

}  // namespace model_server::handlers

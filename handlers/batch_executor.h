#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "handlers/inference_task.h"
#include "handlers/model_handler.h"

namespace model_server::handlers {

// What executing a batch took: its forward passes and the time spent gathering the inputs
// (compute_input), in the forward passes (compute_infer) and handing the outputs to the tasks
// (compute_output), summed over the passes.
struct Execution {
  size_t forward_passes = 0;
  std::chrono::nanoseconds input{0};
  std::chrono::nanoseconds infer{0};
  std::chrono::nanoseconds output{0};
};

// Turns a batch of tasks into one forward pass on a handler and fans the outputs back out.
// Owned by one batch thread; Execute is never called concurrently on one executor.
class BatchExecutor {
 public:
  explicit BatchExecutor(ModelHandler& handler) : handler_(handler) {}

  // Completes every task: each gets its rows of the batch's outputs or its own error. When the
  // batched forward fails, each task is run alone, so one bad request fails only itself. A
  // model that does not batch runs each task alone; a task larger than the model's
  // max_batch_size runs in pieces of at most that many rows, one forward each.
  Execution Execute(std::vector<std::unique_ptr<InferenceTask>>& batch);

 private:
  // Rows [first_row, first_row + rows) of a task.
  struct Piece {
    InferenceTask* task;
    int64_t first_row;
    int64_t rows;
  };

  // Runs one task alone: in pieces when it is larger than a batch may be; fails the task on
  // error.
  void ExecuteAlone(InferenceTask& task, Execution& execution);
  // One forward over `pieces`; on OK each of them has been given its rows.
  absl::Status Forward(const std::vector<Piece>& pieces, Execution& execution);

  ModelHandler& handler_;
};

}  // namespace model_server::handlers

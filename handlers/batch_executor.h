#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "handlers/fault.h"
#include "handlers/inference_task.h"
#include "handlers/model_handler.h"

namespace model_server::handlers {

// What executing a batch took: its forward passes and the time spent gathering the inputs
// (compute_input), in the forward passes (compute_infer) and handing the outputs to the tasks
// (compute_output), summed over the passes; and the faults (handlers/fault.h) they met.
struct Execution {
  size_t forward_passes = 0;
  std::chrono::nanoseconds input{0};
  std::chrono::nanoseconds infer{0};
  std::chrono::nanoseconds output{0};
  // Forward passes that ran out of memory (each made the executor split, or failed a request).
  size_t out_of_memory = 0;
  // Forward passes that found the device lost (the first ends the instance, see Execute).
  size_t device_faults = 0;
  // The device fault that ended this executor's instance (OK while it computes): set on the
  // batch that met it and on every batch after it.
  absl::Status device_lost;
};

// Turns a batch of tasks into forward passes on a handler and fans the outputs back out.
// Owned by one batch thread; Execute is never called concurrently on one executor.
class BatchExecutor {
 public:
  // Runs forward passes of at most `max_forward_rows` rows (capped at the model's
  // max_batch_size; 0: that size), which the handler's warm-up covered.
  explicit BatchExecutor(ModelHandler& handler, int64_t max_forward_rows = 0);

  // Completes every task: each gets its rows of the batch's outputs or its own error.
  //  - The tasks run in one forward pass when the model batches and each fits it (at most
  //    max_forward_rows rows); a larger task runs alone in pieces of at most that many rows, one
  //    forward each; a model that does not batch runs each task alone.
  //  - A forward that fails with the model's own error is rerun task by task, so one bad request
  //    fails only itself.
  //  - One that runs out of memory (Fault::kOutOfMemory) is split into two halves of its tasks,
  //    each run the same way: with one task that does not fit, a batch of N tasks takes at most
  //    2·log2(N) + 1 forward passes. A task that alone does not fit fails with
  //    RESOURCE_EXHAUSTED naming its rows.
  //  - Once a forward finds the device lost (Fault::kDeviceLost), no forward runs any more on
  //    this executor: that task and every later one fail with that status (UNAVAILABLE), and
  //    Execution::device_lost says so; the server then stops serving.
  Execution Execute(std::vector<std::unique_ptr<InferenceTask>>& batch);

  // The largest forward pass this executor runs.
  int64_t max_forward_rows() const { return max_forward_rows_; }

 private:
  // Rows [first_row, first_row + rows) of a task.
  struct Piece {
    InferenceTask* task;
    int64_t first_row;
    int64_t rows;
  };

  // Tasks that fit one forward together: one forward, then as Execute says on failure.
  void ExecuteTogether(absl::Span<InferenceTask* const> tasks, Execution& execution);
  // Runs one task alone: in pieces when it is larger than a forward may be; fails the task on
  // error.
  void ExecuteAlone(InferenceTask& task, Execution& execution);
  // One forward over `pieces`; on OK each of them has been given its rows. Counts the fault of a
  // failure; after a device fault runs nothing and returns that fault.
  absl::Status Forward(const std::vector<Piece>& pieces, Execution& execution);

  ModelHandler& handler_;
  const int64_t max_forward_rows_;
  absl::Status device_lost_;  // sticky: see Execute
};

}  // namespace model_server::handlers

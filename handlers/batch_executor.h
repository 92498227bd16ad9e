#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "inference_task.h"
#include "model_handler.h"

namespace handlers {

// Counters over the executor's lifetime; read from any thread.
struct ExecutorStats {
  std::atomic<uint64_t> forward_passes{0};    // every forward, retries included
  std::atomic<uint64_t> batched_requests{0};  // requests in batches cut by the batcher
  std::atomic<uint64_t> batches{0};           // batches cut by the batcher
  std::atomic<uint64_t> forward_rows{0};      // rows through forward passes, retries included
};

// Turns a batch of tasks into one forward pass on a handler and fans the outputs back out.
// Owned by one batch thread; Execute is never called concurrently on one executor.
class BatchExecutor {
 public:
  BatchExecutor(ModelHandler& handler, ExecutorStats& stats) : handler_(handler), stats_(stats) {}

  // Completes every task: each gets its rows of the batch's outputs or its own error. When the
  // batched forward fails, each task is run alone, so one bad request fails only itself.
  void Execute(std::vector<std::unique_ptr<InferenceTask>>& batch);

 private:
  // One forward over tasks[begin, end); on OK each of them has been completed.
  absl::Status Forward(const std::vector<std::unique_ptr<InferenceTask>>& tasks, size_t begin,
                       size_t end);

  ModelHandler& handler_;
  ExecutorStats& stats_;
};

}  // namespace handlers

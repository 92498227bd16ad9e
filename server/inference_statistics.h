#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>

#include "base/mutex.h"
#include "handlers/batch_executor.h"
#include "protos/triton_extensions.pb.h"

namespace model_server::server {

// One model version's inference statistics as Triton reports them (ModelStatistics): requests
// that succeeded or failed and how long they took from arrival, their time queued and their share
// of compute, inferences (rows) and executions (forward passes), response cache hits and misses,
// and the executions of each batch size. Record* are thread-safe and allocation-free but for the
// first batch of a new size.
class InferenceStatistics {
 public:
  using Duration = std::chrono::nanoseconds;

  // A request that got its outputs, `total` after it arrived, with `rows` inferences.
  void RecordSuccess(Duration total, int64_t rows);
  // A request that reached the model's queue and failed (its own error, dropped, cancelled).
  void RecordFailure(Duration total);
  // A request leaving the queue after `queued`.
  void RecordQueue(Duration queued);
  // A request answered from the response cache, `total` after it arrived, the lookup having
  // taken `lookup`: a success and a cache hit, but neither an inference nor an execution (as
  // Triton counts it).
  void RecordCacheHit(Duration total, Duration lookup);
  // A request computed and then cached: the lookup and the insertion took `duration`.
  void RecordCacheMiss(Duration duration);
  // A batch of `requests` requests and `rows` rows that took `execution`: each request is
  // charged the batch's compute times, as Triton does.
  void RecordBatch(size_t requests, int64_t rows, const handlers::Execution& execution);

  // Fills `out`'s counts, durations, last inference time and batch statistics.
  void Fill(inference::ModelStatistics* out) const;

 private:
  void MarkLastInference();

  struct Counter {
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> ns{0};
    void Add(uint64_t events, Duration duration);
    void Fill(inference::StatisticDuration* out) const;
  };
  struct BatchSize {
    uint64_t executions = 0;
    Duration input{0}, infer{0}, output{0};
  };

  Counter success_, fail_, queue_, compute_input_, compute_infer_, compute_output_, cache_hit_,
      cache_miss_;
  std::atomic<uint64_t> inference_count_{0};
  std::atomic<uint64_t> execution_count_{0};
  std::atomic<uint64_t> last_inference_ms_{0};
  mutable base::Mutex batches_mu_;
  std::map<int64_t, BatchSize> batches_ ABSL_GUARDED_BY(batches_mu_);  // by batch rows
};

}  // namespace model_server::server

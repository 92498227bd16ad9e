#include "server/inference_statistics.h"

namespace model_server::server {

void InferenceStatistics::Counter::Add(uint64_t events, Duration duration) {
  count.fetch_add(events, std::memory_order_relaxed);
  ns.fetch_add(static_cast<uint64_t>(duration.count()), std::memory_order_relaxed);
}

void InferenceStatistics::Counter::Fill(inference::StatisticDuration* out) const {
  out->set_count(count.load(std::memory_order_relaxed));
  out->set_ns(ns.load(std::memory_order_relaxed));
}

void InferenceStatistics::RecordSuccess(Duration total, int64_t rows) {
  success_.Add(1, total);
  inference_count_.fetch_add(static_cast<uint64_t>(rows), std::memory_order_relaxed);
  MarkLastInference();
}

void InferenceStatistics::RecordCacheHit(Duration total, Duration lookup) {
  success_.Add(1, total);
  cache_hit_.Add(1, lookup);
  MarkLastInference();
}

void InferenceStatistics::RecordCacheMiss(Duration duration) { cache_miss_.Add(1, duration); }

void InferenceStatistics::MarkLastInference() {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  last_inference_ms_.store(static_cast<uint64_t>(now.count()), std::memory_order_relaxed);
}

void InferenceStatistics::RecordFailure(Duration total) { fail_.Add(1, total); }

void InferenceStatistics::RecordQueue(Duration queued) { queue_.Add(1, queued); }

void InferenceStatistics::RecordBatch(size_t requests, int64_t rows,
                                      const handlers::Execution& execution) {
  execution_count_.fetch_add(execution.forward_passes, std::memory_order_relaxed);
  compute_input_.Add(requests, execution.input * requests);
  compute_infer_.Add(requests, execution.infer * requests);
  compute_output_.Add(requests, execution.output * requests);
  base::MutexLock lock(batches_mu_);
  BatchSize& size = batches_[rows];
  size.executions += execution.forward_passes;
  size.input += execution.input;
  size.infer += execution.infer;
  size.output += execution.output;
}

void InferenceStatistics::Fill(inference::ModelStatistics* out) const {
  out->set_last_inference(last_inference_ms_.load(std::memory_order_relaxed));
  out->set_inference_count(inference_count_.load(std::memory_order_relaxed));
  out->set_execution_count(execution_count_.load(std::memory_order_relaxed));
  inference::InferStatistics* stats = out->mutable_inference_stats();
  success_.Fill(stats->mutable_success());
  fail_.Fill(stats->mutable_fail());
  queue_.Fill(stats->mutable_queue());
  compute_input_.Fill(stats->mutable_compute_input());
  compute_infer_.Fill(stats->mutable_compute_infer());
  compute_output_.Fill(stats->mutable_compute_output());
  cache_hit_.Fill(stats->mutable_cache_hit());
  cache_miss_.Fill(stats->mutable_cache_miss());
  base::MutexLock lock(batches_mu_);
  for (const auto& [rows, size] : batches_) {
    inference::InferBatchStatistics* batch = out->add_batch_stats();
    batch->set_batch_size(static_cast<uint64_t>(rows));
    const uint64_t executions = size.executions;
    const auto fill = [executions](inference::StatisticDuration* duration, Duration total) {
      duration->set_count(executions);
      duration->set_ns(static_cast<uint64_t>(total.count()));
    };
    fill(batch->mutable_compute_input(), size.input);
    fill(batch->mutable_compute_infer(), size.infer);
    fill(batch->mutable_compute_output(), size.output);
  }
}

}  // namespace model_server::server

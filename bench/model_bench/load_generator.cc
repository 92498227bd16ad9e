#include "bench/model_bench/load_generator.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
#include <random>
#include <thread>

#include "absl/status/status.h"
#include "protos/model_interface.pb.h"

namespace model_server::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kEvaluateMethod[] = "/ModelService/EvaluateModel";

struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer reply;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  Clock::time_point intended;
  bool counted = false;
};

// State shared by the worker threads of one step.
struct Shared {
  const LoadOptions& options;
  Clock::time_point measure_start;
  Clock::time_point end;  // no call is sent at or after it
  std::atomic<int64_t> counted_sent{0};
  std::atomic<int64_t> completed{0};
  std::atomic<int> workers_running{0};
};

// One client worker: its completion queue, its share of the load, its own results. It runs on
// one thread (closed loop) or two (open loop: a pacer and a completer).
class Worker {
 public:
  Worker(Shared& shared, int index, int concurrency, double rate)
      : shared_(shared),
        options_(shared.options),
        concurrency_(concurrency),
        rate_(rate),
        random_(1234567 + index),
        next_channel_(index),
        next_payload_(index) {
    for (const auto& channel : options_.channels) {
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    for (const std::string& bytes : options_.payloads) {
      grpc::Slice slice(bytes);
      payloads_.emplace_back(&slice, 1);
    }
  }

  void Run() {
    if (rate_ > 0) {
      RunOpenLoop();
      return;
    }
    RunClosedLoop();
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  LoadResult& result() { return result_; }
  Clock::time_point last_completion() const { return last_completion_; }

 private:
  void RunClosedLoop() {
    for (int i = 0; i < concurrency_ && Send(Clock::now()); ++i) {
    }
    void* tag;
    bool ok;
    while (in_flight_ > 0 && cq_.Next(&tag, &ok)) {
      Complete(static_cast<Call*>(tag));
      if (sending_) Send(Clock::now());
    }
  }

  // A pacer (this thread) sends each call at its intended time with a precise sleep, while a
  // completer thread records completions: waiting on the completion queue with a deadline
  // instead would wake up to a millisecond late (gRPC timers have millisecond resolution).
  void RunOpenLoop() {
    std::thread completer([this] {
      void* tag;
      bool ok;
      while (cq_.Next(&tag, &ok)) Complete(static_cast<Call*>(tag));
    });
    for (Clock::time_point next = shared_.measure_start - options_.warmup + Gap();; next += Gap()) {
      std::this_thread::sleep_until(next);
      while (in_flight_.load() >= options_.max_in_flight) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (!Send(next)) break;
    }
    while (in_flight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cq_.Shutdown();
    completer.join();
  }

  Clock::duration Gap() {
    const double mean_s = 1.0 / rate_;
    const double gap_s =
        options_.poisson ? std::exponential_distribution<double>(rate_)(random_) : mean_s;
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap_s));
  }

  // Sends one call meant to leave at `intended`; false (and no more sending) once the step is
  // over.
  bool Send(Clock::time_point intended) {
    if (intended >= shared_.end) return sending_ = false;
    auto call = std::make_unique<Call>();
    call->intended = intended;
    call->counted = intended >= shared_.measure_start;
    if (call->counted && options_.max_requests > 0 &&
        shared_.counted_sent.fetch_add(1) >= options_.max_requests) {
      return sending_ = false;
    }
    call->context.set_deadline(std::chrono::system_clock::now() + options_.timeout);
    grpc::GenericStub& stub = *stubs_[next_channel_++ % stubs_.size()];
    const grpc::ByteBuffer& payload = payloads_[next_payload_++ % payloads_.size()];
    call->reader = stub.PrepareUnaryCall(&call->context, kEvaluateMethod, payload, &cq_);
    call->reader->StartCall();
    Call* raw = call.release();
    raw->reader->Finish(&raw->reply, &raw->status, raw);
    ++in_flight_;
    return true;
  }

  void Complete(Call* raw) {
    std::unique_ptr<Call> call(raw);
    --in_flight_;
    const Clock::time_point now = Clock::now();
    if (!call->counted) return;
    result_.latency.Record(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - call->intended).count());
    last_completion_ = now;
    shared_.completed.fetch_add(1, std::memory_order_relaxed);
    if (!call->status.ok()) {
      ++result_.errors[absl::StatusCodeToString(
          static_cast<absl::StatusCode>(call->status.error_code()))];
    } else if (options_.check && !CheckReply(&call->reply)) {
      ++result_.errors["BAD_RESPONSE"];
    } else {
      ++result_.ok;
    }
  }

  // Consumes `reply`.
  bool CheckReply(grpc::ByteBuffer* reply) {
    outCalc message;
    return grpc::SerializationTraits<outCalc>::Deserialize(reply, &message).ok() &&
           options_.check(message.response_bytes()).ok();
  }

  Shared& shared_;
  const LoadOptions& options_;
  const int concurrency_;
  const double rate_;
  std::mt19937_64 random_;
  size_t next_channel_;
  size_t next_payload_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<grpc::ByteBuffer> payloads_;
  grpc::CompletionQueue cq_;
  std::atomic<int> in_flight_{0};  // the pacer adds, the completer subtracts
  bool sending_ = true;
  LoadResult result_;
  Clock::time_point last_completion_{};
};

}  // namespace

int64_t LoadResult::error_count() const {
  int64_t total = 0;
  for (const auto& [name, count] : errors) total += count;
  return total;
}

LoadResult RunLoad(const LoadOptions& options, const ProgressCallback& progress) {
  const Clock::time_point start = Clock::now();
  Shared shared{options, start + options.warmup,
                options.max_requests > 0 ? Clock::time_point::max()
                                         : start + options.warmup + options.duration};
  const int threads = std::max(1, options.threads);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i) {
    const int concurrency = options.concurrency / threads + (i < options.concurrency % threads);
    workers.push_back(std::make_unique<Worker>(shared, i, concurrency, options.rate / threads));
  }
  shared.workers_running = threads;
  std::vector<std::thread> running;
  for (auto& worker : workers) {
    running.emplace_back([&shared, &worker] {
      worker->Run();
      shared.workers_running.fetch_sub(1);
    });
  }
  while (shared.workers_running.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (!progress) continue;
    const int64_t completed = shared.completed.load(std::memory_order_relaxed);
    const double fraction =
        options.max_requests > 0
            ? static_cast<double>(completed) / options.max_requests
            : std::chrono::duration<double>(Clock::now() - start) /
                  std::chrono::duration<double>(options.warmup + options.duration);
    progress(std::min(fraction, 1.0), completed);
  }
  for (std::thread& thread : running) thread.join();

  LoadResult total;
  Clock::time_point last = shared.measure_start;
  for (auto& worker : workers) {
    LoadResult& part = worker->result();
    total.latency.Merge(part.latency);
    total.ok += part.ok;
    for (const auto& [name, count] : part.errors) total.errors[name] += count;
    last = std::max(last, worker->last_completion());
  }
  total.elapsed_s = std::chrono::duration<double>(last - shared.measure_start).count();
  return total;
}

}  // namespace model_server::bench

#include "bench/model_bench/load_generator.h"

#include <grpcpp/generic/generic_stub.h>

#include <algorithm>
#include <random>
#include <thread>

#include "absl/status/status.h"

namespace model_server::bench {
namespace {

using Clock = std::chrono::steady_clock;

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
  Worker(Shared& shared, int index, int concurrency, double rate, double off_rate)
      : shared_(shared),
        options_(shared.options),
        concurrency_(concurrency),
        rate_(rate),
        off_rate_(off_rate),
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
    const Clock::time_point start = shared_.measure_start - options_.warmup;
    for (Clock::time_point next = NextArrival(start);; next = NextArrival(next)) {
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

  Clock::duration Gap(double rate) {
    const double mean_s = 1.0 / rate;
    const double gap_s =
        options_.poisson ? std::exponential_distribution<double>(rate)(random_) : mean_s;
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap_s));
  }

  // The arrival after one at `after`: at the rate of the phase it falls in. An arrival that
  // would cross into the next phase is drawn again from the phase's start at that phase's rate
  // (for Poisson arrivals the process stays exact: its gaps have no memory).
  Clock::time_point NextArrival(Clock::time_point after) {
    if (options_.burst_on.count() <= 0) return after + Gap(rate_);
    while (true) {
      const Phase phase = PhaseAt(after);
      const double rate = phase.burst ? rate_ : off_rate_;
      if (rate > 0) {
        const Clock::time_point next = after + Gap(rate);
        if (next < phase.end) return next;
      }
      after = phase.end;
      if (after >= shared_.end) return after;  // Send stops there
    }
  }

  struct Phase {
    bool burst;
    Clock::time_point end;
    Clock::duration since_burst;  // after a burst: how long since it ended
  };
  Phase PhaseAt(Clock::time_point at) const {
    const Clock::time_point origin = shared_.measure_start - options_.warmup;
    const Clock::duration period = options_.burst_on + options_.burst_off;
    const Clock::duration offset = (at - origin) % period;
    const Clock::time_point period_start = at - offset;
    if (offset < options_.burst_on) return {true, period_start + options_.burst_on, {}};
    return {false, period_start + period, offset - options_.burst_on};
  }

  BurstPhase PhaseOf(Clock::time_point at) const {
    const Phase phase = PhaseAt(at);
    if (phase.burst) return BurstPhase::kBurst;
    return phase.since_burst < std::chrono::seconds(1) ? BurstPhase::kFirstSecond
                                                       : BurstPhase::kLater;
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
    call->reader = stub.PrepareUnaryCall(&call->context, options_.method, payload, &cq_);
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
    const int64_t latency =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - call->intended).count();
    result_.latency.Record(latency);
    const size_t phase =
        options_.burst_on.count() > 0 ? static_cast<size_t>(PhaseOf(call->intended)) : kBurstPhases;
    if (phase < kBurstPhases) {
      result_.phase_latency[phase].Record(latency);
      if (call->status.ok()) ++result_.phase_ok[phase];
    }
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

  bool CheckReply(grpc::ByteBuffer* reply) {
    std::vector<grpc::Slice> slices;
    if (!reply->Dump(&slices).ok()) return false;
    std::string message;
    for (const grpc::Slice& slice : slices) {
      message.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    return options_.check(message).ok();
  }

  Shared& shared_;
  const LoadOptions& options_;
  const int concurrency_;
  const double rate_;
  const double off_rate_;  // between bursts
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

const char* BurstPhaseName(BurstPhase phase) {
  switch (phase) {
    case BurstPhase::kBurst:
      return "burst";
    case BurstPhase::kFirstSecond:
      return "after_burst_first_1s";
    case BurstPhase::kLater:
      return "after_burst_later";
  }
  return "unknown";
}

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
    workers.push_back(std::make_unique<Worker>(shared, i, concurrency, options.rate / threads,
                                               options.burst_off_rate / threads));
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
    for (size_t phase = 0; phase < kBurstPhases; ++phase) {
      total.phase_latency[phase].Merge(part.phase_latency[phase]);
      total.phase_ok[phase] += part.phase_ok[phase];
    }
    for (const auto& [name, count] : part.errors) total.errors[name] += count;
    last = std::max(last, worker->last_completion());
  }
  total.elapsed_s = std::chrono::duration<double>(last - shared.measure_start).count();
  return total;
}

}  // namespace model_server::bench

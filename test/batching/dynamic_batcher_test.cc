#include "batching/dynamic_batcher.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "test/batching/fake_clock.h"
#include "test/wait.h"

namespace model_server::batching {
namespace {

using namespace std::chrono_literals;

struct FakeTask final : BatchTask {
  size_t rows_ = 1;
  int id = 0;
  std::atomic<bool> cancelled{false};
  std::promise<absl::Status>* done = nullptr;

  size_t rows() const override { return rows_; }
  absl::Status Dequeue(TimePoint) override {
    return cancelled ? absl::CancelledError("client cancelled") : absl::OkStatus();
  }
  void Fail(absl::Status status) override { done->set_value(std::move(status)); }
};

// Runs batches and records their task ids (and, with a clock, when each ran); can hold the
// batch thread until released.
class Recorder {
 public:
  explicit Recorder(Clock* clock = nullptr) : clock_(clock) {}

  void Process(std::vector<std::unique_ptr<FakeTask>>& batch) {
    std::unique_lock<std::mutex> lock(mu_);
    std::vector<int> ids;
    for (auto& task : batch) ids.push_back(task->id);
    batches_.push_back(ids);
    if (clock_ != nullptr) times_.push_back(clock_->Now());
    changed_.notify_all();
    changed_.wait(lock, [this] { return !hold_; });
    lock.unlock();
    for (auto& task : batch) task->done->set_value(absl::OkStatus());
  }
  void Hold(bool hold) {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = hold;
    changed_.notify_all();
  }
  void WaitForBatches(size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    REQUIRE(changed_.wait_for(lock, 10s, [&] { return batches_.size() >= count; }));
  }
  std::vector<std::vector<int>> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::vector<TimePoint> times() {
    std::lock_guard<std::mutex> lock(mu_);
    return times_;
  }

 private:
  Clock* const clock_;
  std::mutex mu_;
  std::condition_variable changed_;
  bool hold_ = false;
  std::vector<std::vector<int>> batches_;
  std::vector<TimePoint> times_;
};

std::unique_ptr<DynamicBatcher<FakeTask>> MakeBatcher(Recorder& recorder,
                                                      BatchingOptions options = {}) {
  auto batcher = DynamicBatcher<FakeTask>::Create(
      options, 1, [&recorder](size_t, std::vector<std::unique_ptr<FakeTask>>& batch) {
        recorder.Process(batch);
      });
  REQUIRE(batcher.ok());
  return *std::move(batcher);
}

absl::Status Enqueue(DynamicBatcher<FakeTask>& batcher, int id, std::promise<absl::Status>& done,
                     size_t rows = 1) {
  auto task = std::make_unique<FakeTask>();
  task->id = id;
  task->rows_ = rows;
  task->done = &done;
  return batcher.Enqueue(task);
}

TEST_CASE("a lone request runs at once and a busy batcher batches what queued meanwhile",
          "[dynamic_batcher]") {
  Recorder recorder;
  auto batcher = MakeBatcher(recorder);
  std::vector<std::promise<absl::Status>> done(6);
  recorder.Hold(true);
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  recorder.WaitForBatches(1);  // request 0 runs alone; the batch thread is now busy
  for (int id = 1; id < 6; ++id) REQUIRE(Enqueue(*batcher, id, done[id]).ok());
  recorder.Hold(false);
  recorder.WaitForBatches(2);
  for (auto& promise : done) CHECK(promise.get_future().get().ok());
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0}, {1, 2, 3, 4, 5}});
}

TEST_CASE("the delay cut waits for the oldest request's delay on the real clock",
          "[dynamic_batcher]") {
  Recorder recorder;
  auto batcher = MakeBatcher(recorder, {.max_batch_rows = 100, .max_queue_delay = 100ms});
  std::vector<std::promise<absl::Status>> done(2);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  REQUIRE(Enqueue(*batcher, 1, done[1]).ok());
  CHECK(done[0].get_future().get().ok());
  CHECK(std::chrono::steady_clock::now() - start >= 100ms);
  // The batch thread may still be inside done[1].set_value: wait for it, since `done` is
  // destroyed before the batcher joins its thread.
  CHECK(done[1].get_future().get().ok());
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0, 1}});
}

TEST_CASE("the delay cut runs when the clock reaches the oldest request's delay, not before",
          "[dynamic_batcher]") {
  FakeClock clock;
  Recorder recorder(&clock);
  auto batcher =
      MakeBatcher(recorder, {.max_batch_rows = 100, .max_queue_delay = 100ms, .clock = &clock});
  std::vector<std::promise<absl::Status>> done(2);
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() >= 1; }));  // waits for the delay
  REQUIRE(Enqueue(*batcher, 1, done[1]).ok());
  // A request joining the queue does not end the oldest one's wait: the thread waits again.
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() >= 2; }));
  const size_t waits = clock.waits();
  clock.Advance(99ms);
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() > waits; }));  // woke, waits again
  CHECK(recorder.batches().empty());
  clock.Advance(1ms);
  CHECK(done[0].get_future().get().ok());
  CHECK(done[1].get_future().get().ok());
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0, 1}});
  CHECK(recorder.times() == std::vector<TimePoint>{TimePoint{} + 100ms});
}

TEST_CASE("the batcher reports the tasks waiting in its queue", "[dynamic_batcher]") {
  Recorder recorder;
  auto batcher = MakeBatcher(recorder);
  std::vector<std::promise<absl::Status>> done(4);
  CHECK(batcher->NumEnqueuedTasks() == 0);
  recorder.Hold(true);
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  recorder.WaitForBatches(1);  // task 0 runs (held): it has left the queue
  CHECK(batcher->NumEnqueuedTasks() == 0);
  for (int id = 1; id < 4; ++id) REQUIRE(Enqueue(*batcher, id, done[id]).ok());
  CHECK(batcher->NumEnqueuedTasks() == 3);
  recorder.Hold(false);
  for (auto& promise : done) CHECK(promise.get_future().get().ok());
  CHECK(batcher->NumEnqueuedTasks() == 0);
}

TEST_CASE("cancelled requests are failed, not run", "[dynamic_batcher]") {
  Recorder recorder;
  auto batcher = MakeBatcher(recorder);
  std::vector<std::promise<absl::Status>> done(3);
  recorder.Hold(true);
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  recorder.WaitForBatches(1);
  auto cancelled = std::make_unique<FakeTask>();
  cancelled->id = 1;
  cancelled->done = &done[1];
  cancelled->cancelled = true;
  REQUIRE(batcher->Enqueue(cancelled).ok());
  REQUIRE(Enqueue(*batcher, 2, done[2]).ok());
  recorder.Hold(false);
  CHECK(done[1].get_future().get().code() == absl::StatusCode::kCancelled);
  CHECK(done[2].get_future().get().ok());
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0}, {2}});
}

TEST_CASE("a full queue rejects at once; shutdown runs what is queued and refuses more",
          "[dynamic_batcher]") {
  // A fake clock that never moves and an hour's delay: the 3 queued rows (of 4 per batch) can
  // only run because Shutdown flushes them.
  FakeClock clock;
  Recorder recorder(&clock);
  auto batcher = MakeBatcher(
      recorder, {.max_batch_rows = 4, .max_queue_delay = 1h, .max_queue_rows = 4, .clock = &clock});
  std::vector<std::promise<absl::Status>> done(4);
  REQUIRE(Enqueue(*batcher, 0, done[0], 4).ok());  // a full batch: runs at once
  REQUIRE(done[0].get_future().get().ok());
  REQUIRE(Enqueue(*batcher, 1, done[1], 3).ok());
  CHECK(Enqueue(*batcher, 2, done[2], 2).code() == absl::StatusCode::kResourceExhausted);
  // The batch thread waits for task 1's delay, which the clock never reaches.
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() >= 1; }));
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0}});
  std::thread stopper([&] { batcher->Shutdown(); });
  std::future<absl::Status> flushed = done[1].get_future();
  const bool ran = flushed.wait_for(10s) == std::future_status::ready;
  // Without the flush the batch thread never ends: end its wait so the test can fail cleanly.
  if (!ran) clock.Advance(1h);
  stopper.join();
  REQUIRE(ran);
  CHECK(flushed.get().ok());
  CHECK(Enqueue(*batcher, 3, done[3]).code() == absl::StatusCode::kUnavailable);
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0}, {1}});
  CHECK(recorder.times() == std::vector<TimePoint>{TimePoint{}, TimePoint{}});  // no time passed
}

TEST_CASE("a REJECT timeout fails a waiting task when the clock reaches it, before the delay",
          "[dynamic_batcher]") {
  FakeClock clock;
  Recorder recorder(&clock);
  BatchingOptions options{.max_batch_rows = 100, .max_queue_delay = 1h, .clock = &clock};
  options.priorities.default_policy.default_timeout = 100ms;
  auto batcher = MakeBatcher(recorder, options);
  std::vector<std::promise<absl::Status>> done(1);
  std::future<absl::Status> rejected = done[0].get_future();
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() >= 1; }));
  clock.Advance(99ms);
  CHECK(rejected.wait_for(50ms) == std::future_status::timeout);
  clock.Advance(1ms);
  REQUIRE(rejected.wait_for(10s) == std::future_status::ready);
  const absl::Status status = rejected.get();
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StartsWith(status.message(), "request timeout expired"));
  CHECK(recorder.batches().empty());
  CHECK(batcher->NumEnqueuedTasks() == 0);
}

TEST_CASE("on the real clock the batch thread wakes for a REJECT timeout, not the delay",
          "[dynamic_batcher]") {
  Recorder recorder;
  BatchingOptions options{.max_batch_rows = 100, .max_queue_delay = 1h};
  options.priorities.default_policy.default_timeout = 20ms;
  auto batcher = MakeBatcher(recorder, options);
  std::vector<std::promise<absl::Status>> done(1);
  std::future<absl::Status> rejected = done[0].get_future();
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  REQUIRE(rejected.wait_for(10s) == std::future_status::ready);
  CHECK(rejected.get().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("a REJECT timeout fails a waiting task while every batch thread computes",
          "[dynamic_batcher]") {
  FakeClock clock;
  Recorder recorder(&clock);
  BatchingOptions options{.max_batch_rows = 1, .clock = &clock};
  options.priorities.default_policy.default_timeout = 100ms;
  auto batcher = MakeBatcher(recorder, options);
  std::vector<std::promise<absl::Status>> done(2);
  recorder.Hold(true);
  REQUIRE(Enqueue(*batcher, 0, done[0]).ok());
  recorder.WaitForBatches(1);  // the only batch thread is busy with task 0
  std::future<absl::Status> rejected = done[1].get_future();
  REQUIRE(Enqueue(*batcher, 1, done[1]).ok());
  REQUIRE(testing_support::WaitFor([&] { return clock.waits() >= 1; }));  // the timeout thread
  clock.Advance(100ms);
  REQUIRE(rejected.wait_for(10s) == std::future_status::ready);
  CHECK(rejected.get().code() == absl::StatusCode::kUnavailable);
  CHECK(recorder.batches() == std::vector<std::vector<int>>{{0}});
  recorder.Hold(false);
  CHECK(done[0].get_future().get().ok());
}

TEST_CASE("each batch thread runs the start hook before it takes a batch, and runs its batches",
          "[dynamic_batcher]") {
  std::mutex mu;
  std::map<size_t, std::thread::id> started;  // worker -> thread
  std::map<size_t, std::thread::id> ran;
  std::condition_variable changed;
  bool started_first = true;  // every batch ran on a thread whose hook had run
  auto batcher = DynamicBatcher<FakeTask>::Create(
      {}, 2,
      [&](size_t worker, std::vector<std::unique_ptr<FakeTask>>& batch) {
        {
          // Checked on the test's thread below: Catch's assertions are not thread-safe.
          std::lock_guard<std::mutex> lock(mu);
          if (started.count(worker) != 1) started_first = false;
          ran[worker] = std::this_thread::get_id();
        }
        for (auto& task : batch) task->done->set_value(absl::OkStatus());
      },
      [&](size_t worker) {
        std::lock_guard<std::mutex> lock(mu);
        started[worker] = std::this_thread::get_id();
        changed.notify_all();
      });
  REQUIRE(batcher.ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(changed.wait_for(lock, 10s, [&] { return started.size() == 2; }));
    CHECK(started[0] != started[1]);
    CHECK(started[0] != std::this_thread::get_id());
  }
  std::vector<std::promise<absl::Status>> done(8);
  for (int id = 0; id < 8; ++id) REQUIRE(Enqueue(**batcher, id, done[id]).ok());
  for (auto& promise : done) CHECK(promise.get_future().get().ok());
  std::lock_guard<std::mutex> lock(mu);
  CHECK(started_first);
  for (const auto& [worker, thread] : ran) CHECK(thread == started[worker]);
}

TEST_CASE("bad options are refused by the factory", "[dynamic_batcher]") {
  auto process = [](size_t, std::vector<std::unique_ptr<FakeTask>>&) {};
  CHECK(DynamicBatcher<FakeTask>::Create({.max_batch_rows = 0}, 1, process).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(DynamicBatcher<FakeTask>::Create({}, 0, process).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace model_server::batching

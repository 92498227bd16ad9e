// The latency objective: AIMD on the batch cap and the delay, and a lone request after a quiet
// spell never held. Time is passed in (a fake clock).

#include "batching/latency_objective.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "batching/batch_queue.h"

namespace model_server::batching {
namespace {

using namespace std::chrono_literals;
using Duration = LatencyObjective::Duration;

const TimePoint kStart{};

TEST_CASE("the cap falls multiplicatively when a forward exceeds half the objective",
          "[latency_objective]") {
  LatencyObjective aimd(10ms, 64);
  CHECK(aimd.batch_cap() == 64);
  aimd.OnBatch(64, 0ms, 6ms);  // over the 5 ms budget
  CHECK(aimd.batch_cap() == 57);
  aimd.OnBatch(20, 0ms, 6ms);  // a smaller batch over budget: 90 % of what it ran
  CHECK(aimd.batch_cap() == 18);
  for (int i = 0; i < 10; ++i) aimd.OnBatch(1, 0ms, 6ms);
  CHECK(aimd.batch_cap() == 1);  // never below one row
}

TEST_CASE("the cap rises additively after full batches within budget, up to the maximum",
          "[latency_objective]") {
  LatencyObjective aimd(10ms, 64);  // step: 64 / 32 = 2 rows
  aimd.OnBatch(40, 0ms, 6ms);
  REQUIRE(aimd.batch_cap() == 36);
  aimd.OnBatch(10, 0ms, 1ms);  // not full: no change
  CHECK(aimd.batch_cap() == 36);
  aimd.OnBatch(36, 0ms, 1ms);
  CHECK(aimd.batch_cap() == 38);
  for (int i = 0; i < 100; ++i) aimd.OnBatch(aimd.batch_cap(), 0ms, 1ms);
  CHECK(aimd.batch_cap() == 64);
}

TEST_CASE("the delay grows within the slack while latency is low and halves above the objective",
          "[latency_objective]") {
  LatencyObjective aimd(10ms, 64);
  CHECK(aimd.delay() == 0ms);
  aimd.OnBatch(4, 1ms, 1ms);  // 2 ms < 5 ms: + 0.5 ms
  CHECK(aimd.delay() == 500us);
  for (int i = 0; i < 100; ++i) aimd.OnBatch(4, 1ms, 1ms);
  // Bounded by the slack: the 5 ms budget less the mean forward time.
  CHECK(aimd.delay() == 4ms);
  aimd.OnBatch(4, 10ms, 1ms);  // 11 ms > 10 ms
  CHECK(aimd.delay() == 2ms);
  aimd.OnBatch(4, 4ms, 1ms);  // between half the objective and the objective: kept
  CHECK(aimd.delay() == 2ms);
}

TEST_CASE("a partial batch is held only while requests come faster than the delay",
          "[latency_objective]") {
  LatencyObjective aimd(10ms, 64);
  for (int i = 0; i < 8; ++i) aimd.OnBatch(4, 0ms, 1ms);
  REQUIRE(aimd.delay() == 4ms);
  CHECK_FALSE(aimd.ArrivalsExpected());  // no arrival seen yet
  TimePoint now = kStart;
  for (int i = 0; i < 20; ++i) {
    aimd.OnArrival(now);
    now += 1ms;
  }
  CHECK(aimd.ArrivalsExpected());
  aimd.OnArrival(now + 50ms);  // after a quiet spell
  CHECK_FALSE(aimd.ArrivalsExpected());
}

struct FakeTask final : BatchTask {
  int id = 0;
  size_t rows() const override { return 1; }
  absl::Status Dequeue(TimePoint) override { return absl::OkStatus(); }
  void Fail(absl::Status) override {}
};

TEST_CASE(
    "under a latency objective a lone request after a quiet spell is never held, and "
    "busy traffic is",
    "[latency_objective]") {
  BatchQueue<FakeTask> queue(
      {.max_batch_rows = 64, .max_queue_delay = 1h, .latency_objective = 10ms});
  // The objective replaces the fixed delay: a lone request runs at once.
  auto task = std::make_unique<FakeTask>();
  REQUIRE(queue.Push(task, kStart).ok());
  CHECK(queue.ReadyAt() == kStart);
  Cut<FakeTask> cut = queue.Pop(kStart, false);
  REQUIRE(cut.batch.size() == 1);
  // Batches that ran fast let the delay grow ...
  for (int i = 0; i < 8; ++i) queue.RecordBatch(2, 0ms, 1ms);
  REQUIRE(queue.Delay() == 0ms);  // ... but no traffic yet: nothing is held
  // Requests 1 ms apart: after a few of them a partial batch waits for more rows.
  TimePoint now = kStart + 1s;
  for (int i = 0; i < 12; ++i) {
    auto next = std::make_unique<FakeTask>();
    next->id = i;
    REQUIRE(queue.Push(next, now).ok());
    now += 1ms;
  }
  CHECK(queue.Delay() == 4ms);
  CHECK(queue.ReadyAt() == kStart + 1s + 4ms);
  CHECK(queue.Pop(kStart + 1s + 3ms, false).batch.empty());
  CHECK(queue.Pop(kStart + 1s + 4ms, false).batch.size() == 12);
  // A lone request a second later is not held.
  auto lone = std::make_unique<FakeTask>();
  REQUIRE(queue.Push(lone, kStart + 3s).ok());
  CHECK(queue.ReadyAt() == kStart + 3s);
}

TEST_CASE("under a latency objective the batch cap moves the cut", "[latency_objective]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10, .latency_objective = 10ms});
  for (int i = 0; i < 10; ++i) {
    auto task = std::make_unique<FakeTask>();
    REQUIRE(queue.Push(task, kStart).ok());
  }
  queue.RecordBatch(10, 0ms, 8ms);  // too slow: the cap falls to 9
  CHECK(queue.BatchCap() == 9);
  CHECK(queue.Pop(kStart, false).batch.size() == 9);
}

}  // namespace
}  // namespace model_server::batching

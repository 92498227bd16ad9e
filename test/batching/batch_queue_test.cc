#include "batching/batch_queue.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <vector>

namespace model_server::batching {
namespace {

using std::chrono::microseconds;

struct FakeTask final : BatchTask {
  size_t rows_ = 0;
  int id = 0;
  absl::Status liveness = absl::OkStatus();
  std::vector<int64_t> key;

  size_t rows() const override { return rows_; }
  absl::Span<const int64_t> batch_key() const override { return key; }
  absl::Status Dequeue(TimePoint) override { return liveness; }
  void Fail(absl::Status) override {}
};

std::unique_ptr<FakeTask> MakeTask(size_t rows, int id) {
  auto task = std::make_unique<FakeTask>();
  task->rows_ = rows;
  task->id = id;
  return task;
}

void Push(BatchQueue<FakeTask>& queue, size_t rows, int id, TimePoint now,
          std::vector<int64_t> key = {}) {
  std::unique_ptr<FakeTask> task = MakeTask(rows, id);
  task->key = std::move(key);
  REQUIRE(queue.Push(task, now).ok());
}

std::vector<int> Ids(const Cut<FakeTask>& cut) {
  std::vector<int> ids;
  for (const auto& task : cut.batch) ids.push_back(task->id);
  return ids;
}

const TimePoint kStart{};  // the fake clock: tests pass time in

TEST_CASE("a batch closes when its rows reach max_batch_rows", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10, .max_queue_delay = microseconds(1000)});
  Push(queue, 4, 1, kStart);
  Push(queue, 4, 2, kStart);
  Push(queue, 4, 3, kStart);
  // 12 rows queued >= 10: ready now, without waiting for the delay.
  REQUIRE(queue.ReadyAt() == kStart);
  Cut<FakeTask> first = queue.Pop(kStart, false);
  CHECK(Ids(first) == std::vector<int>{1, 2});
  CHECK(queue.queued_rows() == 4);
  // The remaining 4 rows wait for the delay.
  CHECK(queue.ReadyAt() == kStart + microseconds(1000));
  CHECK(queue.Pop(kStart + microseconds(999), false).batch.empty());
  CHECK(Ids(queue.Pop(kStart + microseconds(1000), false)) == std::vector<int>{3});
  CHECK(queue.empty());
}

TEST_CASE("a batch holds only tasks whose batch key equals its first task's", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10, .max_queue_delay = microseconds(0)});
  Push(queue, 1, 1, kStart, {3, 32, 32});
  Push(queue, 1, 2, kStart, {3, 32, 32});
  Push(queue, 1, 3, kStart, {3, 64, 64});  // another image size: the batch closes before it
  Push(queue, 1, 4, kStart, {3, 32, 32});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1, 2});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{3});  // order kept, nothing skipped
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{4});
  CHECK(queue.empty());
}

TEST_CASE("max_batch_tasks 1 runs every task alone, at once", "[batch_queue]") {
  BatchQueue<FakeTask> queue(
      {.max_batch_rows = 10, .max_queue_delay = microseconds(1000), .max_batch_tasks = 1});
  Push(queue, 2, 1, kStart);
  Push(queue, 3, 2, kStart);
  CHECK(queue.ReadyAt() == kStart);  // a full batch: no waiting
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{2});
}

TEST_CASE("a preferred batch size cuts at once, at the largest one the queue fills",
          "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 16,
                              .max_queue_delay = microseconds(1000),
                              .preferred_batch_rows = {4, 8}});
  Push(queue, 1, 1, kStart);
  Push(queue, 2, 2, kStart);
  CHECK(queue.ReadyAt() == kStart + microseconds(1000));  // 3 rows fill no preferred size
  Push(queue, 2, 3, kStart);
  CHECK(queue.ReadyAt() == kStart);                                // 5 rows fill 4
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1, 2});  // 3 rows: 4 would not fit
  for (int id = 4; id < 12; ++id) Push(queue, 1, id, kStart);
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{3, 4, 5, 6, 7, 8, 9});  // 8 rows
}

TEST_CASE("preferred batch sizes and max_batch_tasks are validated", "[batch_queue]") {
  BatchingOptions options;
  options.max_batch_rows = 8;
  options.preferred_batch_rows = {4, 2};
  CHECK(ValidateBatchingOptions(options).code() == absl::StatusCode::kInvalidArgument);
  options.preferred_batch_rows = {4, 16};
  CHECK(ValidateBatchingOptions(options).code() == absl::StatusCode::kInvalidArgument);
  options.preferred_batch_rows = {2, 8};
  CHECK(ValidateBatchingOptions(options).ok());
  options.max_batch_tasks = 0;
  CHECK(ValidateBatchingOptions(options).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a batch closes when its oldest task has waited max_queue_delay", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 100, .max_queue_delay = microseconds(500)});
  Push(queue, 3, 1, kStart);
  Push(queue, 3, 2, kStart + microseconds(400));
  CHECK(queue.ReadyAt() == kStart + microseconds(500));
  CHECK(queue.Pop(kStart + microseconds(499), false).batch.empty());
  CHECK(Ids(queue.Pop(kStart + microseconds(500), false)) == std::vector<int>{1, 2});
}

TEST_CASE("with no delay a batch is whatever is queued", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 100});
  CHECK_FALSE(queue.ReadyAt().has_value());
  for (int id = 1; id <= 5; ++id) Push(queue, 7, id, kStart);
  CHECK(queue.ReadyAt() == kStart);
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("flush cuts at once, before the delay", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 100, .max_queue_delay = microseconds(500)});
  Push(queue, 3, 1, kStart);
  CHECK(queue.Pop(kStart, false).batch.empty());
  CHECK(Ids(queue.Pop(kStart, true)) == std::vector<int>{1});
}

TEST_CASE("the queue is bounded by rows and leaves a rejected task with the caller",
          "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10, .max_queue_rows = 10});
  Push(queue, 6, 1, kStart);
  std::unique_ptr<FakeTask> task = MakeTask(6, 2);
  const absl::Status pushed = queue.Push(task, kStart);
  CHECK(pushed.code() == absl::StatusCode::kResourceExhausted);
  REQUIRE(task != nullptr);
  CHECK(task->id == 2);
  CHECK(queue.queued_rows() == 6);
  // Once rows leave the queue, it takes tasks again.
  queue.Pop(kStart, false);
  CHECK(queue.Push(task, kStart).ok());
}

TEST_CASE("tasks whose deadline passed are dropped, not batched", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10});
  Push(queue, 4, 1, kStart);
  std::unique_ptr<FakeTask> expired = MakeTask(4, 2);
  expired->liveness = absl::DeadlineExceededError("deadline passed");
  REQUIRE(queue.Push(expired, kStart).ok());
  Push(queue, 4, 3, kStart);
  Push(queue, 4, 4, kStart);
  Cut<FakeTask> cut = queue.Pop(kStart, false);
  // The dropped task's rows do not count, so 1 and 3 fill the batch to 8 rows.
  CHECK(Ids(cut) == std::vector<int>{1, 3});
  REQUIRE(cut.dropped.size() == 1);
  CHECK(cut.dropped[0].first->id == 2);
  CHECK(cut.dropped[0].second.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{4});
}

TEST_CASE("a task larger than max_batch_rows runs as a batch of its own", "[batch_queue]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 10});
  Push(queue, 3, 1, kStart);
  Push(queue, 25, 2, kStart);
  Push(queue, 3, 3, kStart);
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{2});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{3});
}

TEST_CASE("batching options are validated", "[batch_queue]") {
  CHECK(ValidateBatchingOptions({}).ok());
  CHECK_FALSE(ValidateBatchingOptions({.max_batch_rows = 0}).ok());
  CHECK_FALSE(ValidateBatchingOptions({.max_batch_rows = 100, .max_queue_rows = 10}).ok());
  CHECK_FALSE(ValidateBatchingOptions({.max_queue_delay = microseconds(-1)}).ok());
  CHECK_FALSE(ValidateBatchingOptions({.clock = nullptr}).ok());
}

}  // namespace
}  // namespace model_server::batching

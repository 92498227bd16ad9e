// Priority levels and queue policies: the order batches are filled in, each level's bound, the
// two timeout actions and the timeout override rules. Time is passed in (a fake clock).

#include "batching/queue_policy.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "batching/batch_queue.h"

namespace model_server::batching {
namespace {

using std::chrono::microseconds;

struct FakeTask final : BatchTask {
  size_t rows_ = 1;
  int id = 0;
  uint64_t priority_ = 0;
  microseconds timeout_{0};

  size_t rows() const override { return rows_; }
  uint64_t priority() const override { return priority_; }
  microseconds timeout() const override { return timeout_; }
  absl::Status Dequeue(TimePoint) override { return absl::OkStatus(); }
  void Fail(absl::Status) override {}
};

std::unique_ptr<FakeTask> MakeTask(int id, uint64_t priority, microseconds timeout = {}) {
  auto task = std::make_unique<FakeTask>();
  task->id = id;
  task->priority_ = priority;
  task->timeout_ = timeout;
  return task;
}

// Records what the queue tells its events, as "refused <level> <why>" and "delayed <level>".
class Events final : public QueueEvents {
 public:
  void Refused(size_t level, Refusal why) override {
    const char* name = why == Refusal::kMaxQueueRows   ? "rows"
                       : why == Refusal::kMaxQueueSize ? "size"
                                                       : "timeout";
    seen.push_back(absl::StrCat("refused ", level, " ", name));
  }
  void Delayed(size_t level) override { seen.push_back(absl::StrCat("delayed ", level)); }
  std::vector<std::string> seen;
};

const TimePoint kStart{};

absl::Status Push(BatchQueue<FakeTask>& queue, int id, uint64_t priority, TimePoint now = kStart,
                  microseconds timeout = {}) {
  std::unique_ptr<FakeTask> task = MakeTask(id, priority, timeout);
  return queue.Push(task, now);
}

std::vector<int> Ids(const Cut<FakeTask>& cut) {
  std::vector<int> ids;
  for (const auto& task : cut.batch) ids.push_back(task->id);
  return ids;
}

std::vector<int> DroppedIds(const Cut<FakeTask>& cut) {
  std::vector<int> ids;
  for (const auto& [task, status] : cut.dropped) ids.push_back(task->id);
  return ids;
}

PriorityOptions ThreeLevels() {
  PriorityOptions priorities;
  priorities.levels = 3;
  priorities.default_level = 2;
  return priorities;
}

TEST_CASE("a batch is filled from the highest level first, each level in arrival order",
          "[queue_policy]") {
  BatchQueue<FakeTask> queue({.max_batch_rows = 4, .priorities = ThreeLevels()});
  REQUIRE(Push(queue, 1, 3).ok());
  REQUIRE(Push(queue, 2, 0).ok());  // the default level, 2
  REQUIRE(Push(queue, 3, 3).ok());
  REQUIRE(Push(queue, 4, 1).ok());
  REQUIRE(Push(queue, 5, 2).ok());
  REQUIRE(Push(queue, 6, 1).ok());
  CHECK(queue.SizePerLevel() == std::vector<std::pair<size_t, size_t>>{{1, 2}, {2, 2}, {3, 2}});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{4, 6, 2, 5});
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{1, 3});
  CHECK(queue.empty());
}

TEST_CASE("a priority outside the levels is refused; without levels any priority is one queue",
          "[queue_policy]") {
  BatchQueue<FakeTask> levels({.priorities = ThreeLevels()});
  const absl::Status outside = Push(levels, 1, 4);
  CHECK(outside.code() == absl::StatusCode::kInvalidArgument);
  CHECK(outside.message() ==
        "priority 4 is outside the model's priority levels 1..3 (1 is served first; 0 or none "
        "takes the default level 2)");
  CHECK(levels.empty());

  BatchQueue<FakeTask> one({.max_batch_rows = 8});
  REQUIRE(Push(one, 1, 7).ok());
  REQUIRE(Push(one, 2, 1).ok());
  CHECK(one.SizePerLevel() == std::vector<std::pair<size_t, size_t>>{{0, 2}});
  CHECK(Ids(one.Pop(kStart, false)) == std::vector<int>{1, 2});  // arrival order
}

TEST_CASE("a full level refuses at once while another level still accepts", "[queue_policy]") {
  Events events;
  PriorityOptions priorities = ThreeLevels();
  priorities.level_policies[2].max_queue_size = 2;
  BatchQueue<FakeTask> queue({.max_batch_rows = 8, .priorities = priorities, .events = &events});
  REQUIRE(Push(queue, 1, 2).ok());
  REQUIRE(Push(queue, 2, 0).ok());  // default level 2: full now
  std::unique_ptr<FakeTask> third = MakeTask(3, 2);
  const absl::Status full = queue.Push(third, kStart);
  CHECK(full.code() == absl::StatusCode::kUnavailable);
  CHECK(full.message() ==
        "exceeds maximum queue size: priority level 2 holds 2 of 2 requests; retry later");
  REQUIRE(third != nullptr);  // left with the caller
  CHECK(Push(queue, 4, 1).ok());
  CHECK(Push(queue, 5, 3).ok());  // the default policy: no bound
  CHECK(events.seen == std::vector<std::string>{"refused 2 size"});
  // Once a task of level 2 leaves, it takes one again.
  CHECK(Ids(queue.Pop(kStart, false)) == std::vector<int>{4, 1, 2, 5});
  CHECK(queue.Push(third, kStart).ok());
}

TEST_CASE("the queue's row bound holds across levels and is told apart from a level's",
          "[queue_policy]") {
  Events events;
  BatchQueue<FakeTask> queue(
      {.max_batch_rows = 2, .max_queue_rows = 2, .priorities = ThreeLevels(), .events = &events});
  REQUIRE(Push(queue, 1, 3).ok());
  REQUIRE(Push(queue, 2, 3).ok());
  CHECK(Push(queue, 3, 1).code() == absl::StatusCode::kResourceExhausted);
  CHECK(events.seen == std::vector<std::string>{"refused 1 rows"});
}

TEST_CASE("REJECT fails a task whose timeout passed in the queue; others run", "[queue_policy]") {
  Events events;
  PriorityOptions priorities = ThreeLevels();
  priorities.level_policies[1].default_timeout = microseconds(100);
  BatchQueue<FakeTask> queue({.max_batch_rows = 8,
                              .max_queue_delay = microseconds(1000),
                              .priorities = priorities,
                              .events = &events});
  REQUIRE(Push(queue, 1, 1).ok());
  REQUIRE(Push(queue, 2, 2).ok());
  REQUIRE(Push(queue, 3, 1, kStart + microseconds(50)).ok());
  // The batcher wakes when the first timeout passes, before the delay.
  CHECK(queue.ReadyAt() == kStart + microseconds(100));
  Cut<FakeTask> first = queue.Pop(kStart + microseconds(99), false);
  CHECK(first.batch.empty());
  CHECK(first.dropped.empty());
  Cut<FakeTask> rejected = queue.Pop(kStart + microseconds(100), false);
  CHECK(rejected.batch.empty());  // the delay has not passed: only the rejection
  REQUIRE(DroppedIds(rejected) == std::vector<int>{1});
  CHECK(rejected.dropped[0].second.code() == absl::StatusCode::kUnavailable);
  CHECK(rejected.dropped[0].second.message() ==
        "request timeout expired: it waited in the queue longer than its timeout");
  CHECK(queue.queued_rows() == 2);
  CHECK(queue.ReadyAt() == kStart + microseconds(150));
  CHECK(DroppedIds(queue.Pop(kStart + microseconds(150), false)) == std::vector<int>{3});
  // Level 2 has no timeout: it waits for the delay and runs.
  CHECK(Ids(queue.Pop(kStart + microseconds(1000), false)) == std::vector<int>{2});
  CHECK(events.seen == std::vector<std::string>{"refused 1 timeout", "refused 1 timeout"});
}

TEST_CASE("DELAY moves a task whose timeout passed behind its level's others, not failing it",
          "[queue_policy]") {
  Events events;
  PriorityOptions priorities = ThreeLevels();
  QueuePolicy& delay = priorities.level_policies[2];
  delay.timeout_action = TimeoutAction::kDelay;
  delay.allow_timeout_override = true;
  BatchQueue<FakeTask> queue({.max_batch_rows = 1,
                              .max_queue_delay = microseconds(0),
                              .priorities = priorities,
                              .events = &events});
  REQUIRE(Push(queue, 1, 2, kStart, microseconds(10)).ok());  // its own timeout: 10 us
  REQUIRE(Push(queue, 2, 2).ok());
  REQUIRE(Push(queue, 3, 2).ok());
  REQUIRE(Push(queue, 4, 3).ok());
  CHECK(queue.ReadyAt() == kStart);  // DELAY needs no wake-up of its own
  Cut<FakeTask> cut = queue.Pop(kStart + microseconds(10), false);
  CHECK(cut.dropped.empty());
  CHECK(Ids(cut) == std::vector<int>{2});
  CHECK(events.seen == std::vector<std::string>{"delayed 2"});
  CHECK(Ids(queue.Pop(kStart + microseconds(10), false)) == std::vector<int>{3});
  // Behind its level's others, still ahead of the lower level.
  CHECK(Ids(queue.Pop(kStart + microseconds(10), false)) == std::vector<int>{1});
  CHECK(Ids(queue.Pop(kStart + microseconds(10), false)) == std::vector<int>{4});
  CHECK(events.seen.size() == 1);  // a delayed task has no timeout any more
}

TEST_CASE("a task's own timeout only shortens its level's, and only where allowed",
          "[queue_policy]") {
  const microseconds none{0};
  QueuePolicy policy;
  policy.default_timeout = microseconds(100);
  // Not allowed: the level's timeout, whatever the task asks.
  CHECK(EffectiveTimeout(policy, microseconds(10)) == microseconds(100));
  CHECK(EffectiveTimeout(policy, none) == microseconds(100));
  policy.allow_timeout_override = true;
  CHECK(EffectiveTimeout(policy, microseconds(10)) == microseconds(10));    // shorter: taken
  CHECK(EffectiveTimeout(policy, microseconds(500)) == microseconds(100));  // never longer
  CHECK(EffectiveTimeout(policy, none) == microseconds(100));
  policy.default_timeout = none;  // no timeout: any of the task's own is shorter
  CHECK(EffectiveTimeout(policy, microseconds(500)) == microseconds(500));
  CHECK(EffectiveTimeout(policy, none) == none);
  policy.allow_timeout_override = false;
  CHECK(EffectiveTimeout(policy, microseconds(500)) == none);
}

TEST_CASE("allow_timeout_override false ignores a task's timeout in the queue", "[queue_policy]") {
  PriorityOptions priorities;
  priorities.default_policy.default_timeout = microseconds(0);  // no timeout
  BatchQueue<FakeTask> queue(
      {.max_batch_rows = 8, .max_queue_delay = microseconds(1000), .priorities = priorities});
  REQUIRE(Push(queue, 1, 0, kStart, microseconds(10)).ok());
  CHECK(queue.ReadyAt() == kStart + microseconds(1000));  // no rejection pending
  Cut<FakeTask> cut = queue.Pop(kStart + microseconds(1000), false);
  CHECK(cut.dropped.empty());
  CHECK(Ids(cut) == std::vector<int>{1});
}

TEST_CASE("priority options are validated, naming the field", "[queue_policy]") {
  PriorityOptions options;
  CHECK(ValidatePriorityOptions(options).ok());
  options.default_level = 1;
  CHECK(ValidatePriorityOptions(options).message() ==
        "default_priority_level 1 needs priority_levels (there are none)");
  options = ThreeLevels();
  CHECK(ValidatePriorityOptions(options).ok());
  options.default_level = 4;
  CHECK(ValidatePriorityOptions(options).message() ==
        "default_priority_level 4 is outside the priority levels 1..3");
  options.default_level = 0;
  CHECK(ValidatePriorityOptions(options).code() == absl::StatusCode::kInvalidArgument);
  options = ThreeLevels();
  options.level_policies[4] = {};
  CHECK(ValidatePriorityOptions(options).message() ==
        "priority_queue_policy names level 4, outside the priority levels 1..3");
  options = ThreeLevels();
  options.levels = kMaxPriorityLevels + 1;
  CHECK(ValidatePriorityOptions(options).message() == "priority_levels 65 is over 64");
  options = ThreeLevels();
  options.level_policies[3].default_timeout = microseconds(-1);
  CHECK(ValidatePriorityOptions(options).message() ==
        "priority_queue_policy 3: default timeout must not be negative");
  BatchingOptions batching;
  batching.priorities.levels = 2;  // default level 0: refused through the batching options too
  CHECK(ValidateBatchingOptions(batching).code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace model_server::batching

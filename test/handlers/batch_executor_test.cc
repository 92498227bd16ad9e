#include "handlers/batch_executor.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <optional>

#include "test/fake_handler.h"

namespace model_server::handlers {
namespace {

using testing_support::FakeHandler;
using testing_support::kPoison;

// Records its outcome: its rows of output column 0, or its error.
class RecordingTask final : public InferenceTask {
 public:
  RecordingTask(std::vector<float> x_1, std::vector<float> params)
      : InferenceTask(MakeRequest(x_1, std::move(params))) {}

  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }
  void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row, int64_t task_row,
                int64_t rows) override {
    CHECK(task_row == given_rows_);  // in row order
    if (!outputs_) outputs_.emplace();
    const float* y = reinterpret_cast<const float*>(outputs[0].data);
    for (int64_t row = 0; row < rows; ++row) outputs_->push_back(y[(batch_row + row) * 2]);
    given_rows_ += rows;
    ++completions_;
  }
  void Fail(absl::Status status) override { error_ = std::move(status); }

  // Its outputs once it has them all.
  std::optional<std::vector<float>> outputs() const {
    return given_rows_ == request().rows ? outputs_ : std::nullopt;
  }
  const absl::Status& error() const { return error_; }
  int completions() const { return completions_; }

 private:
  // Rows (x_1, 1, 1): y_1 = p0 * (x_1 + 2) + p1. Two params: one vector for every row.
  static InferenceRequest MakeRequest(const std::vector<float>& x_1, std::vector<float> params) {
    InferenceRequest request;
    request.rows = static_cast<int64_t>(x_1.size());
    request.inputs.resize(2);
    InputTensor& x = request.inputs[0];
    x.shape = {request.rows, 3};
    float* to = reinterpret_cast<float*>(x.Allocate(x_1.size() * 3 * sizeof(float)));
    for (float value : x_1) {
      *to++ = value;
      *to++ = 1;
      *to++ = 1;
    }
    InputTensor& p = request.inputs[1];
    p.broadcast = params.size() == 2;
    p.shape = {p.broadcast ? 1 : request.rows, 2};
    std::memcpy(p.Allocate(params.size() * sizeof(float)), params.data(),
                params.size() * sizeof(float));
    return request;
  }

  std::optional<std::vector<float>> outputs_;
  int64_t given_rows_ = 0;
  int completions_ = 0;
  absl::Status error_;
};

struct Batch {
  std::vector<std::unique_ptr<InferenceTask>> tasks;
  std::vector<RecordingTask*> views;

  void Add(std::vector<float> x_1, std::vector<float> params) {
    auto task = std::make_unique<RecordingTask>(std::move(x_1), std::move(params));
    views.push_back(task.get());
    tasks.push_back(std::move(task));
  }
};

TEST_CASE("a batch runs as one forward pass and each task gets its own rows", "[executor]") {
  FakeHandler handler;
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1, 2}, {1, 0});
  batch.Add({3}, {2, 10});
  batch.Add({4, 5, 6}, {0, -1});
  CHECK(executor.Execute(batch.tasks).forward_passes == 1);  // forward passes
  CHECK(handler.batch_rows() == std::vector<int64_t>{6});
  REQUIRE(batch.views[0]->outputs().has_value());
  CHECK(*batch.views[0]->outputs() == std::vector<float>{3, 4});
  CHECK(*batch.views[1]->outputs() == std::vector<float>{20});
  CHECK(*batch.views[2]->outputs() == std::vector<float>{-1, -1, -1});
}

TEST_CASE("requests with a vector per row share a batch with requests with one vector",
          "[executor]") {
  FakeHandler handler;
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1, 2}, {1, 0});                 // one vector for both rows
  batch.Add({3, 4, 5}, {1, 0, 2, 0, 3, 1});  // a vector per row
  batch.Add({6}, {0, 7});                    // one row: either reading
  CHECK(executor.Execute(batch.tasks).forward_passes == 1);
  CHECK(handler.batch_rows() == std::vector<int64_t>{6});
  CHECK(*batch.views[0]->outputs() == std::vector<float>{3, 4});
  CHECK(*batch.views[1]->outputs() == std::vector<float>{5, 12, 22});
  CHECK(*batch.views[2]->outputs() == std::vector<float>{7});
}

TEST_CASE("a request that breaks the forward pass fails alone", "[executor]") {
  FakeHandler handler;
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1}, {1, 0});
  batch.Add({2, kPoison}, {1, 0});
  batch.Add({3}, {1, 1});
  CHECK(executor.Execute(batch.tasks).forward_passes == 4);
  // One batched forward, then one per request.
  CHECK(handler.batch_rows() == std::vector<int64_t>{4, 1, 2, 1});
  CHECK(*batch.views[0]->outputs() == std::vector<float>{3});
  CHECK_FALSE(batch.views[1]->outputs().has_value());
  CHECK(batch.views[1]->error().code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(batch.views[1]->error().message()), Catch::Contains("poison row"));
  CHECK(*batch.views[2]->outputs() == std::vector<float>{6});
}

TEST_CASE("a model that fails every call fails every request with its error", "[executor]") {
  FakeHandler handler;
  handler.FailEveryCall();
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1}, {1, 0});
  batch.Add({2}, {1, 0});
  const size_t forward_passes = executor.Execute(batch.tasks).forward_passes;
  for (RecordingTask* task : batch.views) {
    CHECK_FALSE(task->outputs().has_value());
    CHECK_THAT(std::string(task->error().message()), Catch::Contains("always broken"));
  }
  // One batched forward, then one per request.
  CHECK(forward_passes == 3);
}

TEST_CASE("a request larger than a batch runs in pieces of at most max_batch_size rows",
          "[executor]") {
  FakeHandler handler(/*offset=*/0, /*max_batch_size=*/4);
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {1, 0});
  CHECK(executor.Execute(batch.tasks).forward_passes == 3);
  CHECK(handler.batch_rows() == std::vector<int64_t>{4, 4, 2});
  CHECK(batch.views[0]->completions() == 3);
  CHECK(*batch.views[0]->outputs() ==
        std::vector<float>{3, 4, 5, 6, 7, 8, 9, 10, 11, 12});  // equal to the unsplit forward
}

TEST_CASE("a piece that fails fails its request once, after the pieces before it", "[executor]") {
  FakeHandler handler(/*offset=*/0, /*max_batch_size=*/2);
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1, 2, kPoison, 4, 5}, {1, 0});
  CHECK(executor.Execute(batch.tasks).forward_passes == 2);  // the failed piece ends the request
  CHECK(handler.batch_rows() == std::vector<int64_t>{2, 2});
  CHECK_FALSE(batch.views[0]->outputs().has_value());
  CHECK_THAT(std::string(batch.views[0]->error().message()), Catch::Contains("poison row"));
}

TEST_CASE("a model without a batch dimension runs each request alone", "[executor]") {
  FakeHandler handler(/*offset=*/0, /*max_batch_size=*/0);
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1}, {1, 0});
  batch.Add({2}, {2, 1});
  CHECK(executor.Execute(batch.tasks).forward_passes == 2);
  CHECK(handler.batch_rows() == std::vector<int64_t>{1, 1});
  CHECK(*batch.views[0]->outputs() == std::vector<float>{3});
  CHECK(*batch.views[1]->outputs() == std::vector<float>{9});
}

TEST_CASE("a request larger than a forward may be runs in pieces the warm-up covered",
          "[executor]") {
  // The model takes batches of 4096 rows; the server's batches (and its warm-up) stop at 4.
  FakeHandler handler;
  BatchExecutor executor(handler, /*max_forward_rows=*/4);
  CHECK(executor.max_forward_rows() == 4);
  Batch batch;
  batch.Add({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {2, 1});
  batch.Add({-1}, {1, 0});
  CHECK(executor.Execute(batch.tasks).forward_passes == 4);  // 4 + 4 + 2 rows, then 1
  CHECK(handler.batch_rows() == std::vector<int64_t>{4, 4, 2, 1});

  // Equal to the unsplit forward of the same rows.
  FakeHandler whole_handler;
  BatchExecutor whole(whole_handler);
  Batch unsplit;
  unsplit.Add({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {2, 1});
  CHECK(whole.Execute(unsplit.tasks).forward_passes == 1);
  REQUIRE(unsplit.views[0]->outputs().has_value());
  REQUIRE(batch.views[0]->outputs().has_value());
  CHECK(*batch.views[0]->outputs() == *unsplit.views[0]->outputs());
  CHECK(*batch.views[1]->outputs() == std::vector<float>{1});
  // A cap above the model's own size is the model's.
  CHECK(BatchExecutor(handler, 1 << 20).max_forward_rows() == 4096);
}

TEST_CASE(
    "a batch that runs out of memory is split in halves; only the request that alone does "
    "not fit fails",
    "[executor]") {
  FakeHandler handler;
  handler.control()->OutOfMemoryAbove(50);
  BatchExecutor executor(handler);
  Batch batch;
  constexpr int kTasks = 16;
  for (int i = 0; i < kTasks - 1; ++i) batch.Add({static_cast<float>(i)}, {1, 0});
  batch.Add(std::vector<float>(100, 1.0f), {1, 0});  // 100 rows: never fits
  const Execution execution = executor.Execute(batch.tasks);
  // Not one forward per request (16 + 1): log N. Each level of halving runs the half without the
  // large request (which fits) and splits the half with it again.
  CHECK(execution.forward_passes <= 2 * std::log2(kTasks) + 1);
  CHECK(handler.batch_rows() == std::vector<int64_t>{115, 8, 107, 4, 103, 2, 101, 1, 100});
  CHECK(execution.out_of_memory == 5);
  CHECK(execution.device_lost.ok());
  for (int i = 0; i < kTasks - 1; ++i) {
    REQUIRE(batch.views[i]->outputs().has_value());
    CHECK(*batch.views[i]->outputs() == std::vector<float>{i + 2.0f});
  }
  const absl::Status& failed = batch.views[kTasks - 1]->error();
  CHECK_FALSE(batch.views[kTasks - 1]->outputs().has_value());
  CHECK(failed.code() == absl::StatusCode::kResourceExhausted);
  CHECK(FaultOf(failed) == Fault::kOutOfMemory);
  CHECK_THAT(std::string(failed.message()),
             Catch::StartsWith("out of memory computing this request's 100 rows alone: "));
  CHECK_THAT(std::string(failed.message()), Catch::Contains("CUDA out of memory"));
}

TEST_CASE("a batch too large as a whole is split until its halves fit; every request is answered",
          "[executor]") {
  FakeHandler handler;
  handler.control()->OutOfMemoryAbove(25);
  BatchExecutor executor(handler);
  Batch batch;
  for (int i = 0; i < 8; ++i) batch.Add(std::vector<float>(10, static_cast<float>(i)), {1, 0});
  const Execution execution = executor.Execute(batch.tasks);
  CHECK(handler.batch_rows() == std::vector<int64_t>{80, 40, 20, 20, 40, 20, 20});
  CHECK(execution.forward_passes == 7);
  CHECK(execution.out_of_memory == 3);
  for (int i = 0; i < 8; ++i) {
    REQUIRE(batch.views[i]->outputs().has_value());
    CHECK(*batch.views[i]->outputs() == std::vector<float>(10, i + 2.0f));
  }
}

TEST_CASE("a piece of a large request that runs out of memory fails the request, naming its rows",
          "[executor]") {
  FakeHandler handler(/*offset=*/0, /*max_batch_size=*/4);
  handler.control()->OutOfMemoryAbove(3);
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1, 2, 3, 4, 5, 6}, {1, 0});
  const Execution execution = executor.Execute(batch.tasks);
  CHECK(execution.forward_passes == 1);
  CHECK(execution.out_of_memory == 1);
  const absl::Status& failed = batch.views[0]->error();
  CHECK(failed.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(failed.message()),
             Catch::StartsWith("out of memory computing rows 0..3 of this request's 6 rows alone"));
}

TEST_CASE("after the device is lost no forward runs: the batch and every later one fail at once",
          "[executor]") {
  FakeHandler handler;
  handler.control()->LoseDeviceAtForward(2);
  BatchExecutor executor(handler);
  Batch first;
  first.Add({1}, {1, 0});
  const Execution ok = executor.Execute(first.tasks);
  CHECK(ok.device_lost.ok());
  CHECK(*first.views[0]->outputs() == std::vector<float>{3});

  Batch second;
  second.Add({1}, {1, 0});
  second.Add({2}, {1, 0});
  second.Add({3}, {1, 0});
  const Execution lost = executor.Execute(second.tasks);
  // No rerun request by request: the device answers nothing any more.
  CHECK(lost.forward_passes == 1);
  CHECK(lost.device_faults == 1);
  CHECK(FaultOf(lost.device_lost) == Fault::kDeviceLost);
  for (RecordingTask* task : second.views) {
    CHECK_FALSE(task->outputs().has_value());
    CHECK(task->error().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(task->error().message()), Catch::Contains("illegal memory access"));
  }

  Batch third;
  third.Add({4}, {1, 0});
  third.Add(std::vector<float>(5000, 1.0f), {1, 0});  // would run in pieces
  const Execution after = executor.Execute(third.tasks);
  CHECK(after.forward_passes == 0);
  CHECK(after.device_faults == 0);
  CHECK(FaultOf(after.device_lost) == Fault::kDeviceLost);
  CHECK(handler.batch_rows().size() == 2);
  for (RecordingTask* task : third.views) {
    CHECK(task->error().code() == absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace model_server::handlers

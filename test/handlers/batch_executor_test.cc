#include "handlers/batch_executor.h"

#include <catch2/catch.hpp>
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
  void Complete(const float* outputs, int64_t stride) override {
    outputs_.emplace();
    for (int64_t row = 0; row < request().rows; ++row) outputs_->push_back(outputs[row * stride]);
  }
  void Fail(absl::Status status) override { error_ = std::move(status); }

  const std::optional<std::vector<float>>& outputs() const { return outputs_; }
  const absl::Status& error() const { return error_; }

 private:
  // Rows (x_1, 1, 1): y_1 = p0 * (x_1 + 2) + p1.
  static InferenceRequest MakeRequest(const std::vector<float>& x_1, std::vector<float> params) {
    InferenceRequest request;
    request.rows = static_cast<int64_t>(x_1.size());
    for (float x : x_1) request.inputs.insert(request.inputs.end(), {x, 1, 1});
    request.params = std::move(params);
    request.output_names = {"y_1"};
    return request;
  }

  std::optional<std::vector<float>> outputs_;
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
  CHECK(executor.Execute(batch.tasks) == 1);  // forward passes
  CHECK(handler.batch_rows() == std::vector<int64_t>{6});
  REQUIRE(batch.views[0]->outputs().has_value());
  CHECK(*batch.views[0]->outputs() == std::vector<float>{3, 4});
  CHECK(*batch.views[1]->outputs() == std::vector<float>{20});
  CHECK(*batch.views[2]->outputs() == std::vector<float>{-1, -1, -1});
}

TEST_CASE("a request that breaks the forward pass fails alone", "[executor]") {
  FakeHandler handler;
  BatchExecutor executor(handler);
  Batch batch;
  batch.Add({1}, {1, 0});
  batch.Add({2, kPoison}, {1, 0});
  batch.Add({3}, {1, 1});
  CHECK(executor.Execute(batch.tasks) == 4);
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
  const size_t forward_passes = executor.Execute(batch.tasks);
  for (RecordingTask* task : batch.views) {
    CHECK_FALSE(task->outputs().has_value());
    CHECK_THAT(std::string(task->error().message()), Catch::Contains("always broken"));
  }
  // One batched forward, then one per request.
  CHECK(forward_passes == 3);
}

}  // namespace
}  // namespace model_server::handlers

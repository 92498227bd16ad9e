// ServedModel's two ways to run a request: queued for a batch thread, or run at once on the
// caller's thread when the version is idle (ClaimIdle, RunIdle). A fake model, no gRPC.

#include "server/served_model.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "protos/triton_extensions.pb.h"
#include "test/fake_handler.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

using namespace std::chrono_literals;
using testing_support::FakeHandler;
using testing_support::FakeModelControl;
using testing_support::WaitFor;

// A request of `rows` rows x = (x_1, 0, 0), params (1, 0): FakeHandler answers y_1 = x_1.
class TestTask final : public handlers::InferenceTask {
 public:
  // What became of the task.
  struct Outcome {
    std::mutex mu;
    std::vector<float> y_1;              // guarded by mu
    std::optional<absl::Status> failed;  // guarded by mu
    bool completed = false;              // guarded by mu
    std::thread::id completed_on;        // guarded by mu
  };

  TestTask(int64_t rows, float x_1, std::shared_ptr<Outcome> outcome,
           absl::Status liveness = absl::OkStatus())
      : InferenceTask(Request(rows, x_1)),
        outcome_(std::move(outcome)),
        liveness_(std::move(liveness)) {}

  absl::Status Dequeue(batching::TimePoint /*now*/) override { return liveness_; }
  void Complete(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                int64_t task_row, int64_t rows) override {
    std::lock_guard<std::mutex> lock(outcome_->mu);
    const float* y = reinterpret_cast<const float*>(outputs[0].data);
    for (int64_t row = 0; row < rows; ++row) outcome_->y_1.push_back(y[(batch_row + row) * 2]);
    outcome_->completed = task_row + rows == request().rows;
    outcome_->completed_on = std::this_thread::get_id();
  }
  void Fail(absl::Status status) override {
    std::lock_guard<std::mutex> lock(outcome_->mu);
    outcome_->failed = std::move(status);
  }

 private:
  static handlers::InferenceRequest Request(int64_t rows, float x_1) {
    handlers::InferenceRequest request;
    request.rows = rows;
    request.inputs.resize(2);
    std::vector<float> x(rows * 3, 0.0f), params(rows * 2, 0.0f);
    for (int64_t row = 0; row < rows; ++row) {
      x[row * 3] = x_1;
      params[row * 2] = 1.0f;
    }
    request.inputs[0].shape = {rows, 3};
    std::memcpy(request.inputs[0].Allocate(x.size() * 4), x.data(), x.size() * 4);
    request.inputs[1].shape = {rows, 2};
    std::memcpy(request.inputs[1].Allocate(params.size() * 4), params.data(), params.size() * 4);
    return request;
  }

  const std::shared_ptr<Outcome> outcome_;
  const absl::Status liveness_;
};

// One version of a fake model with one instance, its batches counted.
class Served {
 public:
  explicit Served(ServingOptions options = {})
      : Served(std::make_unique<FakeHandler>(), std::move(options)) {}
  explicit Served(std::unique_ptr<FakeHandler> handler, ServingOptions options = {}) {
    control_ = handler->control();
    absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> loaded =
        handlers::LoadedModel::Load(std::move(handler));
    REQUIRE(loaded.ok());
    Instances instances;
    instances.push_back(*std::move(loaded));
    metrics::MetricsOptions metrics_options;
    metrics_options.address = "";
    metrics_ = *metrics::ServerMetrics::Start(metrics_options);
    absl::StatusOr<std::unique_ptr<ServedModel>> model = ServedModel::Create(
        "m", 1, std::move(instances), options,
        [this](const auto& batch, int64_t /*version*/) { batches_done_ += batch.size() > 0; },
        metrics_->AddModel("m"));
    REQUIRE(model.ok());
    model_ = *std::move(model);
  }
  ~Served() {
    control_->Hold(false);
    model_->Shutdown();
  }

  ServedModel& model() { return *model_; }
  FakeModelControl& control() { return *control_; }
  int batches_done() const { return batches_done_; }

  // Queues a task of `rows` rows; returns its outcome.
  std::shared_ptr<TestTask::Outcome> Enqueue(int64_t rows, float x_1) {
    auto outcome = std::make_shared<TestTask::Outcome>();
    std::unique_ptr<handlers::InferenceTask> task = std::make_unique<TestTask>(rows, x_1, outcome);
    REQUIRE(model_->Enqueue(task).ok());
    return outcome;
  }
  // Runs one batch of one row through the batcher, so that the version has measured a forward
  // pass.
  void Prime() {
    const auto outcome = Enqueue(1, 1);
    REQUIRE(WaitFor([&] { return batches_done_ == 1; }));
  }

 private:
  std::shared_ptr<FakeModelControl> control_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<ServedModel> model_;
  std::atomic<int> batches_done_{0};
};

bool Completed(TestTask::Outcome& outcome) {
  std::lock_guard<std::mutex> lock(outcome.mu);
  return outcome.completed;
}

TEST_CASE("a version runs nothing idle before it has measured a forward pass", "[served_model]") {
  Served served;
  CHECK_FALSE(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
  served.Prime();
  CHECK(served.model().MayRunIdle());
  CHECK(served.model().ClaimIdle(1));
}

TEST_CASE("max_idle_forward 0: nothing runs idle", "[served_model]") {
  ServingOptions options;
  options.max_idle_forward = 0us;
  Served served(options);
  served.Prime();
  CHECK_FALSE(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
}

TEST_CASE("a model with a batching delay runs nothing idle: its calls wait for batch-mates",
          "[served_model]") {
  ServingOptions options;
  options.batching.max_queue_delay = 1us;
  Served served(options);
  served.Prime();
  CHECK_FALSE(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
}

TEST_CASE("a thread-bound instance (a GPU's) runs nothing idle", "[served_model]") {
  auto handler = std::make_unique<FakeHandler>();
  handler->control()->BindToThread();
  Served served(std::move(handler));
  served.Prime();
  CHECK_FALSE(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
}

TEST_CASE("a request expected to take longer than max_idle_forward is not claimed",
          "[served_model]") {
  Served served;
  served.Prime();  // one row per forward pass so far
  CHECK(served.model().ClaimIdle(1));
  // At least proportionally longer than the measured passes: far beyond 500 us.
  CHECK_FALSE(served.model().ClaimIdle(int64_t{1} << 40));
}

TEST_CASE("an idle run computes the request on the caller's thread and counts it",
          "[served_model]") {
  Served served;
  served.Prime();
  auto outcome = std::make_shared<TestTask::Outcome>();
  std::unique_ptr<handlers::InferenceTask> task = std::make_unique<TestTask>(3, 7, outcome);
  ServedModel::IdleClaim claim = served.model().ClaimIdle(3);
  REQUIRE(claim);
  served.model().RunIdle(std::move(claim), task);
  CHECK(task != nullptr);  // handed back to the caller
  {
    std::lock_guard<std::mutex> lock(outcome->mu);
    CHECK(outcome->completed);
    CHECK(outcome->y_1 == std::vector<float>{7, 7, 7});
    CHECK(outcome->completed_on == std::this_thread::get_id());
    CHECK_FALSE(outcome->failed.has_value());
  }
  CHECK(served.control().batch_rows() == std::vector<int64_t>{1, 3});
  CHECK(served.batches_done() == 1);  // the idle run replies itself
  inference::ModelStatistics statistics;
  served.model().statistics().Fill(&statistics);
  CHECK(statistics.execution_count() == 2);
  CHECK(statistics.inference_stats().compute_infer().count() == 2);  // requests
  // The claim was let go: the instance is free again.
  CHECK(served.model().ClaimIdle(1));
}

TEST_CASE("an idle request no longer worth computing fails without a forward pass",
          "[served_model]") {
  Served served;
  served.Prime();
  auto outcome = std::make_shared<TestTask::Outcome>();
  std::unique_ptr<handlers::InferenceTask> task = std::make_unique<TestTask>(
      1, 1, outcome, absl::DeadlineExceededError("deadline passed while the request was queued"));
  ServedModel::IdleClaim claim = served.model().ClaimIdle(1);
  REQUIRE(claim);
  served.model().RunIdle(std::move(claim), task);
  {
    std::lock_guard<std::mutex> lock(outcome->mu);
    REQUIRE(outcome->failed.has_value());
    CHECK(outcome->failed->code() == absl::StatusCode::kDeadlineExceeded);
    CHECK_FALSE(outcome->completed);
  }
  CHECK(served.control().batch_rows() == std::vector<int64_t>{1});
}

TEST_CASE("an idle request that breaks its forward pass fails alone", "[served_model]") {
  Served served;
  served.Prime();
  auto outcome = std::make_shared<TestTask::Outcome>();
  std::unique_ptr<handlers::InferenceTask> task =
      std::make_unique<TestTask>(1, testing_support::kPoison, outcome);
  ServedModel::IdleClaim claim = served.model().ClaimIdle(1);
  REQUIRE(claim);
  served.model().RunIdle(std::move(claim), task);
  {
    std::lock_guard<std::mutex> lock(outcome->mu);
    REQUIRE(outcome->failed.has_value());
    CHECK(outcome->failed->code() == absl::StatusCode::kInternal);
  }
  // The version serves on, idle or batched.
  const auto next = served.Enqueue(1, 5);
  CHECK(WaitFor([&] { return Completed(*next); }));
}

TEST_CASE("nothing is claimed while a batch runs or a request is queued", "[served_model]") {
  Served served;
  served.Prime();
  served.control().Hold(true);
  const auto running = served.Enqueue(1, 1);
  REQUIRE(served.control().WaitForForwards(2));
  // The only instance is busy with a batch.
  CHECK(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
  const auto queued = served.Enqueue(1, 2);
  CHECK_FALSE(served.model().MayRunIdle());
  CHECK_FALSE(served.model().ClaimIdle(1));
  served.control().Hold(false);
  CHECK(WaitFor([&] { return Completed(*running) && Completed(*queued); }));
  CHECK(served.model().ClaimIdle(1));
}

TEST_CASE("a batch waits while an idle request holds the instance", "[served_model]") {
  Served served;
  served.Prime();
  served.control().Hold(true);
  auto idle_outcome = std::make_shared<TestTask::Outcome>();
  std::promise<bool> claimed;
  // Claimed, run and let go on one thread, as BatchedCall does: the instance's mutex is unlocked
  // by the thread that locked it.
  std::thread idle([&served, &idle_outcome, &claimed] {
    ServedModel::IdleClaim claim = served.model().ClaimIdle(1);
    claimed.set_value(static_cast<bool>(claim));
    if (!claim) return;
    std::unique_ptr<handlers::InferenceTask> task = std::make_unique<TestTask>(1, 3, idle_outcome);
    served.model().RunIdle(std::move(claim), task);
  });
  if (!claimed.get_future().get()) {
    idle.join();
    FAIL("the idle version refused the claim");
  }
  REQUIRE(served.control().WaitForForwards(2));  // the idle request, held in its forward pass
  const auto batched = served.Enqueue(1, 4);
  // The batch thread takes it from the queue, then waits for the instance.
  REQUIRE(WaitFor([&] { return served.model().QueuedRequests() == 0; }));
  std::this_thread::sleep_for(100ms);
  CHECK(served.control().batch_rows().size() == 2);
  served.control().Hold(false);
  idle.join();
  CHECK(WaitFor([&] { return Completed(*batched); }));
  CHECK(Completed(*idle_outcome));
  CHECK(served.control().batch_rows().size() == 3);
}

}  // namespace
}  // namespace model_server::server

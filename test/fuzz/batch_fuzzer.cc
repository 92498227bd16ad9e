// libFuzzer target: the whole path a batch of requests takes, without gRPC or torch.
//
// The input is split at newlines into up to kMaxPayloads payloads (one JSON request per line).
// Each is decoded against testing_support::FakeHandler's signature; the accepted ones become
// tasks, go through the batching policy (batching::BatchQueue, fake time) and each cut batch
// through handlers::BatchExecutor into the fake model. A first line "#N" sets max_batch_rows to
// N (1..64), so batches are cut at different places; otherwise every task shares one batch.
//
// Checks: every task is completed exactly once; a task with a poison row (x_1 == 666, which
// fails the fake model's forward) fails with INTERNAL and only such tasks fail; every completed
// task receives its own rows of the output with the fake model's values (so rows are neither
// shifted nor mixed between requests); each forward pass has the rows the executor assembled.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "batching/batch_queue.h"
#include "handlers/batch_executor.h"
#include "protocol/seed_json.h"
#include "test/fake_handler.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace batching = model_server::batching;
namespace handlers = model_server::handlers;
namespace protocol = model_server::protocol;
namespace testing_support = model_server::testing_support;
using handlers::InferenceRequest;
using handlers::InferenceTask;

constexpr size_t kMaxPayloads = 64;

// What happened to one task, kept outside the task (the executor owns and may drop the task).
struct Outcome {
  int completions = 0;
  int failures = 0;
  absl::StatusCode failure_code = absl::StatusCode::kOk;
};

bool SameFloat(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

class FuzzTask final : public InferenceTask {
 public:
  FuzzTask(InferenceRequest request, Outcome& outcome)
      : InferenceTask(std::move(request)), outcome_(outcome) {}

  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }

  void Complete(const float* outputs, int64_t stride) override {
    ++outcome_.completions;
    FUZZ_CHECK(stride == 2);  // FakeHandler's num_outputs
    const InferenceRequest& req = request();
    for (int64_t row = 0; row < req.rows; ++row) {
      const float* x = &req.inputs[row * 3];
      const float* p = req.params.data();
      // The fake model's formula, evaluated the same way: bit-identical unless rows moved.
      const float y_1 = p[0] * (x[0] + x[1] + x[2]) + p[1];
      FUZZ_CHECK(SameFloat(outputs[row * stride], y_1));
      FUZZ_CHECK(SameFloat(outputs[row * stride + 1], x[0]));
    }
    // The transport encodes straight from these rows; ASan checks the reads stay in bounds.
    protocol::EncodeResponse(req.output_names, outputs, req.rows, stride, &response_);
  }

  void Fail(absl::Status status) override {
    ++outcome_.failures;
    outcome_.failure_code = status.code();
  }

 private:
  Outcome& outcome_;
  std::string response_;
};

bool HasPoisonRow(const InferenceRequest& request) {
  for (int64_t row = 0; row < request.rows; ++row) {
    if (request.inputs[row * 3] == testing_support::kPoison) return true;
  }
  return false;
}

std::vector<std::string_view> SplitLines(std::string_view input) {
  std::vector<std::string_view> lines;
  while (!input.empty() && lines.size() < kMaxPayloads) {
    const size_t end = input.find('\n');
    lines.push_back(input.substr(0, end));
    if (end == std::string_view::npos) break;
    input.remove_prefix(end + 1);
  }
  return lines;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string_view> lines =
      SplitLines(std::string_view(reinterpret_cast<const char*>(data), size));

  batching::BatchingOptions options;
  options.max_batch_rows = 1 << 20;
  options.max_queue_rows = 1 << 20;
  if (!lines.empty() && lines[0].size() >= 2 && lines[0][0] == '#') {
    options.max_batch_rows =
        1 + std::strtoul(std::string(lines[0].substr(1, 2)).c_str(), nullptr, 10) % 64;
    lines.erase(lines.begin());
  }

  testing_support::FakeHandler handler;
  FUZZ_CHECK(handler.Initialize().ok());
  handlers::BatchExecutor executor(handler);
  batching::BatchQueue<InferenceTask> queue(options);
  const batching::TimePoint now{};

  std::vector<Outcome> outcomes(lines.size());
  std::vector<bool> poisoned(lines.size(), false);
  std::vector<bool> accepted(lines.size(), false);
  size_t queued_rows = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<InferenceRequest> request =
        protocol::DecodeRequest(lines[i], handler.signature());
    if (!request.ok()) continue;
    FUZZ_CHECK(request->rows >= 1);
    FUZZ_CHECK(request->inputs.size() == static_cast<size_t>(request->rows * 3));
    FUZZ_CHECK(request->params.size() == 2);
    poisoned[i] = HasPoisonRow(*request);
    queued_rows += request->rows;
    std::unique_ptr<InferenceTask> task =
        std::make_unique<FuzzTask>(*std::move(request), outcomes[i]);
    FUZZ_CHECK(queue.Push(task, now).ok());
    FUZZ_CHECK(task == nullptr);
    accepted[i] = true;
  }
  FUZZ_CHECK(queue.queued_rows() == queued_rows);

  // Cut and run batches until the queue is empty; record what each forward pass should see.
  std::vector<int64_t> expected_forward_rows;
  size_t forward_passes = 0;
  while (!queue.empty()) {
    batching::Cut<InferenceTask> cut = queue.Pop(now, /*flush=*/false);
    FUZZ_CHECK(cut.dropped.empty());
    FUZZ_CHECK(!cut.batch.empty());
    int64_t batch_rows = 0;
    bool any_poison = false;
    for (const std::unique_ptr<InferenceTask>& task : cut.batch) {
      batch_rows += task->request().rows;
      any_poison = any_poison || HasPoisonRow(task->request());
    }
    // Batches stay within max_batch_rows unless one task alone is larger.
    FUZZ_CHECK(cut.batch.size() == 1 || batch_rows <= static_cast<int64_t>(options.max_batch_rows));
    expected_forward_rows.push_back(batch_rows);
    if (any_poison && cut.batch.size() > 1) {
      for (const std::unique_ptr<InferenceTask>& task : cut.batch) {
        expected_forward_rows.push_back(task->request().rows);
      }
    }
    forward_passes += executor.Execute(cut.batch);
  }

  for (size_t i = 0; i < lines.size(); ++i) {
    const Outcome& outcome = outcomes[i];
    if (!accepted[i]) {
      FUZZ_CHECK(outcome.completions == 0 && outcome.failures == 0);
    } else if (poisoned[i]) {
      FUZZ_CHECK(outcome.completions == 0 && outcome.failures == 1);
      FUZZ_CHECK(outcome.failure_code == absl::StatusCode::kInternal);
    } else {
      FUZZ_CHECK(outcome.completions == 1 && outcome.failures == 0);
    }
  }
  FUZZ_CHECK(handler.batch_rows() == expected_forward_rows);
  FUZZ_CHECK(forward_passes == expected_forward_rows.size());
  return 0;
}

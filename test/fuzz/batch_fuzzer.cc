// libFuzzer target: the whole path a batch of requests takes, without gRPC or torch.
//
// The input is split at newlines into up to kMaxPayloads payloads (one JSON request per line).
// Each is decoded against testing_support::FakeHandler's signature; the accepted ones become
// tasks, go through the batching policy (batching::BatchQueue, fake time) and each cut batch
// through handlers::BatchExecutor into the fake model. A first line "#N" sets the model's
// max_batch_size to N (1..64), "#N/M" sets it to M (1..64) and the server's max_batch_rows to N;
// the queue cuts batches at the smaller of the two, as the server does, so batches are cut at
// different places and a request larger than the model's max_batch_size runs in pieces. Without
// such a line both are 4096 and every task shares one batch.
//
// Checks: every task ends exactly once: with all its rows, or with one failure; a task with a
// poison row (x_1 == 666, which fails the fake model's forward) fails with INTERNAL, after
// receiving exactly the pieces before the one holding its first poison row, and only such tasks
// fail; each task receives its rows in order, each of them its own row of the output with the
// fake model's values for its own x and parameters, bit for bit (so rows are neither shifted nor
// mixed between requests or pieces), and in as many calls as pieces it ran in; its response
// encodes; each forward pass has the rows the executor assembled (the batch; after a poisoned
// batch each task alone; a task larger than max_batch_size in pieces, up to its first poisoned
// piece).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
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
using handlers::OutputTensor;

constexpr size_t kMaxPayloads = 64;

// What happened to one task, kept outside the task (the executor owns and may drop the task).
struct Outcome {
  int completions = 0;
  int64_t rows_given = 0;
  int failures = 0;
  absl::StatusCode failure_code = absl::StatusCode::kOk;
};

bool SameFloat(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

const float* Floats(const handlers::InputTensor& tensor) {
  return reinterpret_cast<const float*>(tensor.data.data());
}

class FuzzTask final : public InferenceTask {
 public:
  FuzzTask(protocol::SeedRequest decoded, Outcome& outcome)
      : InferenceTask(std::move(decoded.request)),
        output_names_(std::move(decoded.output_names)),
        outcome_(outcome) {}

  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }

  void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row, int64_t task_row,
                int64_t rows) override {
    const InferenceRequest& req = request();
    ++outcome_.completions;
    FUZZ_CHECK(outcome_.failures == 0);
    FUZZ_CHECK(task_row == outcome_.rows_given);  // in row order, nothing skipped or repeated
    FUZZ_CHECK(rows >= 1 && task_row + rows <= req.rows);
    FUZZ_CHECK(outputs.size() == 1);  // FakeHandler's y
    const OutputTensor& y = outputs[0];
    FUZZ_CHECK(y.type == handlers::DataType::kFp32);
    FUZZ_CHECK(y.shape.size() == 2 && y.shape[1] == 2);
    FUZZ_CHECK(batch_row >= 0 && batch_row + rows <= y.shape[0]);
    // x [rows, 3] of the request's own; params one row [1, 2] for every row.
    FUZZ_CHECK(req.inputs.size() == 2 && req.inputs[1].broadcast);
    const float* p = Floats(req.inputs[1]);
    const float* out = reinterpret_cast<const float*>(y.data);
    for (int64_t row = 0; row < rows; ++row) {
      const float* x = Floats(req.inputs[0]) + (task_row + row) * 3;
      // The fake model's formula, evaluated the same way: bit-identical unless rows moved.
      const float y_1 = p[0] * (x[0] + x[1] + x[2]) + p[1];
      const float* got = out + (batch_row + row) * 2;
      FUZZ_CHECK(SameFloat(got[0], y_1));
      FUZZ_CHECK(SameFloat(got[1], x[0]));
      gathered_.insert(gathered_.end(), got, got + 2);
    }
    outcome_.rows_given += rows;
    if (outcome_.rows_given == req.rows) {
      // The transport encodes the rows it gathered; ASan checks the reads stay in bounds.
      protocol::EncodeResponse(output_names_, gathered_.data(), req.rows, 2, &response_);
    }
  }

  void Fail(absl::Status status) override {
    ++outcome_.failures;
    outcome_.failure_code = status.code();
  }

 private:
  const std::vector<std::string> output_names_;
  Outcome& outcome_;
  std::vector<float> gathered_;
  std::string response_;
};

// The first row with x_1 == kPoison.
std::optional<int64_t> FirstPoisonRow(const InferenceRequest& request) {
  for (int64_t row = 0; row < request.rows; ++row) {
    if (Floats(request.inputs[0])[row * 3] == testing_support::kPoison) return row;
  }
  return std::nullopt;
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

// 1..64 from the digits (up to two) at the front of `text`, which moves past them; 0 and none
// read as 1.
int64_t SizeFrom(std::string_view& text) {
  int64_t size = 0;
  for (int digits = 0; digits < 2 && !text.empty() && text[0] >= '0' && text[0] <= '9'; ++digits) {
    size = size * 10 + (text[0] - '0');
    text.remove_prefix(1);
  }
  return std::clamp<int64_t>(size, 1, 64);
}

// What the executor should do with one task's rows when it runs alone: its forward passes (in
// pieces of at most `max_batch_size`, up to the first one holding a poison row) and the calls
// and rows it should receive.
struct Expected {
  int completions = 0;
  int64_t rows_given = 0;
  bool fails = false;
};

void RunAlone(const InferenceRequest& request, int64_t max_batch_size,
              std::vector<int64_t>& forward_rows, Expected& expected) {
  const std::optional<int64_t> poison = FirstPoisonRow(request);
  for (int64_t first = 0; first < request.rows; first += max_batch_size) {
    const int64_t rows = std::min(max_batch_size, request.rows - first);
    forward_rows.push_back(rows);
    if (poison && *poison < first + rows) {
      expected.fails = true;
      return;
    }
    ++expected.completions;
    expected.rows_given += rows;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string_view> lines =
      SplitLines(std::string_view(reinterpret_cast<const char*>(data), size));

  batching::BatchingOptions options;
  options.max_batch_rows = 4096;
  options.max_queue_rows = 1 << 20;
  int64_t max_batch_size = 4096;
  if (!lines.empty() && lines[0].size() >= 2 && lines[0][0] == '#') {
    std::string_view header = lines[0].substr(1);
    const int64_t server_rows = SizeFrom(header);
    max_batch_size = server_rows;
    if (!header.empty() && header[0] == '/') {
      header.remove_prefix(1);
      max_batch_size = SizeFrom(header);
    }
    options.max_batch_rows = static_cast<size_t>(std::min(server_rows, max_batch_size));
    lines.erase(lines.begin());
  }

  testing_support::FakeHandler handler(0, max_batch_size);
  FUZZ_CHECK(handler.Initialize().ok());
  handlers::BatchExecutor executor(handler);
  batching::BatchQueue<InferenceTask> queue(options);
  const batching::TimePoint now{};

  std::vector<Outcome> outcomes(lines.size());
  std::vector<Expected> expected(lines.size());
  std::vector<bool> accepted(lines.size(), false);
  // Which line each queued task came from, by the task's address.
  std::vector<std::pair<const InferenceTask*, size_t>> line_of;
  size_t queued_rows = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<protocol::SeedRequest> decoded =
        protocol::DecodeRequest(lines[i], handler.signature());
    if (!decoded.ok()) continue;
    const InferenceRequest& request = decoded->request;
    FUZZ_CHECK(request.rows >= 1);
    FUZZ_CHECK(request.inputs.size() == 2);
    FUZZ_CHECK(request.inputs[0].data.size() == request.rows * 3 * sizeof(float));
    FUZZ_CHECK(request.inputs[1].data.size() == 2 * sizeof(float));
    queued_rows += request.rows;
    std::unique_ptr<InferenceTask> task =
        std::make_unique<FuzzTask>(*std::move(decoded), outcomes[i]);
    line_of.emplace_back(task.get(), i);
    FUZZ_CHECK(queue.Push(task, now).ok());
    FUZZ_CHECK(task == nullptr);
    accepted[i] = true;
  }
  FUZZ_CHECK(queue.queued_rows() == queued_rows);
  const auto line = [&](const InferenceTask* task) {
    for (const auto& [address, index] : line_of) {
      if (address == task) return index;
    }
    FUZZ_CHECK(false);
    return size_t{0};
  };

  // Cut and run batches until the queue is empty; record what each forward pass should see and
  // what each task should receive.
  std::vector<int64_t> expected_forward_rows;
  size_t forward_passes = 0;
  while (!queue.empty()) {
    batching::Cut<InferenceTask> cut = queue.Pop(now, /*flush=*/false);
    FUZZ_CHECK(cut.dropped.empty());
    FUZZ_CHECK(!cut.batch.empty());
    int64_t batch_rows = 0;
    bool any_poison = false;
    bool all_fit = true;
    for (const std::unique_ptr<InferenceTask>& task : cut.batch) {
      batch_rows += task->request().rows;
      any_poison = any_poison || FirstPoisonRow(task->request()).has_value();
      all_fit = all_fit && task->request().rows <= max_batch_size;
    }
    // Batches stay within max_batch_rows unless one task alone is larger.
    FUZZ_CHECK(cut.batch.size() == 1 || batch_rows <= static_cast<int64_t>(options.max_batch_rows));
    if (cut.batch.size() > 1 && all_fit) {
      expected_forward_rows.push_back(batch_rows);
      for (const std::unique_ptr<InferenceTask>& task : cut.batch) {
        Expected& e = expected[line(task.get())];
        if (any_poison) {
          RunAlone(task->request(), max_batch_size, expected_forward_rows, e);
        } else {
          e.completions = 1;
          e.rows_given = task->request().rows;
        }
      }
    } else {
      for (const std::unique_ptr<InferenceTask>& task : cut.batch) {
        RunAlone(task->request(), max_batch_size, expected_forward_rows,
                 expected[line(task.get())]);
      }
    }
    forward_passes += executor.Execute(cut.batch).forward_passes;
  }

  for (size_t i = 0; i < lines.size(); ++i) {
    const Outcome& outcome = outcomes[i];
    if (!accepted[i]) {
      FUZZ_CHECK(outcome.completions == 0 && outcome.failures == 0);
      continue;
    }
    FUZZ_CHECK(outcome.completions == expected[i].completions);
    FUZZ_CHECK(outcome.rows_given == expected[i].rows_given);
    if (expected[i].fails) {
      FUZZ_CHECK(outcome.failures == 1);
      FUZZ_CHECK(outcome.failure_code == absl::StatusCode::kInternal);
    } else {
      FUZZ_CHECK(outcome.failures == 0);
    }
  }
  FUZZ_CHECK(handler.batch_rows() == expected_forward_rows);
  FUZZ_CHECK(forward_passes == expected_forward_rows.size());
  return 0;
}

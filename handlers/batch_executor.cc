#include "handlers/batch_executor.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace model_server::handlers {
namespace {

// Bytes of one row of `shape` (all dimensions but the first) of `type`.
size_t RowBytes(const Dims& shape, DataType type) {
  size_t bytes = ElementSize(type);
  for (size_t i = 1; i < shape.size(); ++i) bytes *= static_cast<size_t>(shape[i]);
  return bytes;
}

int64_t ForwardRows(const ModelHandler& handler, int64_t max_forward_rows) {
  const int64_t model_max = handler.signature().max_batch_size;
  if (max_forward_rows <= 0) return model_max;
  return model_max > 0 ? std::min(max_forward_rows, model_max) : 0;
}

}  // namespace

BatchExecutor::BatchExecutor(ModelHandler& handler, int64_t max_forward_rows)
    : handler_(handler), max_forward_rows_(ForwardRows(handler, max_forward_rows)) {}

Execution BatchExecutor::Execute(std::vector<std::unique_ptr<InferenceTask>>& batch) {
  const ModelSignature& signature = handler_.signature();
  const auto fits = [&](const std::unique_ptr<InferenceTask>& task) {
    return task->request().rows <= max_forward_rows_;
  };
  Execution execution;
  if (batch.size() == 1 || !signature.batches() || !std::all_of(batch.begin(), batch.end(), fits)) {
    // The batcher cuts a larger task as a batch of its own, and batches of one for a model that
    // does not batch; running each alone keeps the contract if it did not.
    for (const auto& task : batch) ExecuteAlone(*task, execution);
  } else {
    std::vector<InferenceTask*> tasks;
    tasks.reserve(batch.size());
    for (const auto& task : batch) tasks.push_back(task.get());
    ExecuteTogether(tasks, execution);
  }
  execution.device_lost = device_lost_;
  return execution;
}

void BatchExecutor::ExecuteTogether(absl::Span<InferenceTask* const> tasks, Execution& execution) {
  if (tasks.size() == 1) {
    ExecuteAlone(*tasks[0], execution);
    return;
  }
  std::vector<Piece> pieces;
  pieces.reserve(tasks.size());
  for (InferenceTask* task : tasks) pieces.push_back({task, 0, task->request().rows});
  const absl::Status ran = Forward(pieces, execution);
  if (ran.ok()) return;
  switch (FaultOf(ran)) {
    case Fault::kDeviceLost:
      for (InferenceTask* task : tasks) task->Fail(ran);
      return;
    case Fault::kOutOfMemory: {
      // Smaller forwards may fit: halves, so that one task too large alone costs log N passes.
      const size_t half = tasks.size() / 2;
      ExecuteTogether(tasks.subspan(0, half), execution);
      ExecuteTogether(tasks.subspan(half), execution);
      return;
    }
    case Fault::kNone:
      // Some request broke the shared forward pass: rerun each alone so only the culprit fails.
      for (InferenceTask* task : tasks) ExecuteAlone(*task, execution);
      return;
  }
}

void BatchExecutor::ExecuteAlone(InferenceTask& task, Execution& execution) {
  const int64_t rows = task.request().rows;
  const int64_t step =
      handler_.signature().batches() ? std::max<int64_t>(max_forward_rows_, 1) : rows;
  for (int64_t first = 0; first < rows; first += step) {
    const int64_t piece_rows = std::min(step, rows - first);
    absl::Status ran = Forward({{&task, first, piece_rows}}, execution);
    if (ran.ok()) continue;
    if (FaultOf(ran) == Fault::kOutOfMemory) {
      ran = WithContext(
          ran,
          piece_rows == rows
              ? absl::StrCat("out of memory computing this request's ", rows, " rows alone: ")
              : absl::StrCat("out of memory computing rows ", first, "..", first + piece_rows - 1,
                             " of this request's ", rows, " rows alone: "));
    }
    task.Fail(std::move(ran));
    return;
  }
}

absl::Status BatchExecutor::Forward(const std::vector<Piece>& pieces, Execution& execution) {
  if (!device_lost_.ok()) return device_lost_;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  ++execution.forward_passes;
  const ModelSignature& signature = handler_.signature();
  const bool batches = signature.batches();
  int64_t total_rows = 0;
  for (const Piece& piece : pieces) total_rows += piece.rows;

  // Every task of a batch has the same shapes past the batch dimension (its batch key).
  const std::vector<InputTensor>& first = pieces.front().task->request().inputs;
  std::vector<Dims> shapes;
  shapes.reserve(first.size());
  for (const InputTensor& input : first) {
    shapes.push_back(input.shape);
    if (batches) shapes.back()[0] = total_rows;
  }
  const std::vector<char*> buffers = handler_.PrepareBatch(shapes);
  for (size_t input = 0; input < shapes.size(); ++input) {
    const size_t row_bytes = batches ? RowBytes(shapes[input], signature.inputs[input].type) : 0;
    // An input of no elements has nothing to copy, and its buffer may be null (an empty tensor's).
    if ((batches ? row_bytes : first[input].data.size()) == 0) continue;
    char* to = buffers[input];
    for (const Piece& piece : pieces) {
      const InputTensor& tensor = piece.task->request().inputs[input];
      if (!batches) {
        std::memcpy(to, tensor.data.data(), tensor.data.size());
      } else if (!tensor.broadcast) {
        const size_t bytes = piece.rows * row_bytes;
        std::memcpy(to, tensor.data.data() + piece.first_row * row_bytes, bytes);
        to += bytes;
      } else {
        for (int64_t row = 0; row < piece.rows; ++row, to += row_bytes) {
          std::memcpy(to, tensor.data.data(), row_bytes);
        }
      }
    }
  }

  const Clock::time_point gathered = Clock::now();
  execution.input += gathered - start;
  absl::StatusOr<const std::vector<OutputTensor>*> outputs = handler_.Run();
  const Clock::time_point ran = Clock::now();
  execution.infer += ran - gathered;
  if (!outputs.ok()) {
    switch (FaultOf(outputs.status())) {
      case Fault::kOutOfMemory:
        ++execution.out_of_memory;
        break;
      case Fault::kDeviceLost:
        ++execution.device_faults;
        device_lost_ = outputs.status();
        break;
      case Fault::kNone:
        break;
    }
    return outputs.status();
  }
  if ((*outputs)->size() != signature.outputs.size()) {
    return absl::InternalError(absl::StrCat("model gave ", (*outputs)->size(),
                                            " outputs; expected ", signature.outputs.size()));
  }
  for (size_t output = 0; batches && output < signature.outputs.size(); ++output) {
    const Dims& shape = (**outputs)[output].shape;
    if (shape.empty() || shape[0] != total_rows) {
      return absl::InternalError(absl::StrCat("model output \"", signature.outputs[output].name,
                                              "\" has shape ", DimsText(shape), " for a batch of ",
                                              total_rows, " rows"));
    }
  }
  int64_t batch_row = 0;
  for (const Piece& piece : pieces) {
    piece.task->Complete(**outputs, batch_row, piece.first_row, piece.rows);
    batch_row += piece.rows;
  }
  execution.output += Clock::now() - ran;
  return absl::OkStatus();
}

}  // namespace model_server::handlers

#include "handlers/batch_executor.h"

#include <algorithm>
#include <cstring>

namespace model_server::handlers {

size_t BatchExecutor::Execute(std::vector<std::unique_ptr<InferenceTask>>& batch) {
  absl::Status batched = Forward(batch, 0, batch.size());
  if (batched.ok()) return 1;
  if (batch.size() == 1) {
    batch[0]->Fail(std::move(batched));
    return 1;
  }
  // Some request broke the shared forward pass: rerun each alone so only the culprit fails.
  for (size_t i = 0; i < batch.size(); ++i) {
    if (absl::Status alone = Forward(batch, i, i + 1); !alone.ok()) {
      batch[i]->Fail(std::move(alone));
    }
  }
  return 1 + batch.size();
}

absl::Status BatchExecutor::Forward(const std::vector<std::unique_ptr<InferenceTask>>& tasks,
                                    size_t begin, size_t end) {
  const ModelSignature& signature = handler_.signature();
  const int64_t num_params = signature.num_params;
  int64_t total_rows = 0;
  for (size_t i = begin; i < end; ++i) total_rows += tasks[i]->request().rows;

  BatchBuffers buffers = handler_.PrepareBatch(total_rows);
  float* inputs = buffers.inputs;
  float* params = buffers.params;
  for (size_t i = begin; i < end; ++i) {
    const InferenceRequest& request = tasks[i]->request();
    std::memcpy(inputs, request.inputs.data(), request.inputs.size() * sizeof(float));
    inputs += request.inputs.size();
    if (num_params == 0) continue;
    for (int64_t row = 0; row < request.rows; ++row) {
      std::copy_n(request.params.data(), num_params, params);
      params += num_params;
    }
  }

  absl::StatusOr<const float*> outputs = handler_.Run();
  if (!outputs.ok()) return outputs.status();

  const int64_t stride = signature.num_outputs;
  const float* row_outputs = *outputs;
  for (size_t i = begin; i < end; ++i) {
    tasks[i]->Complete(row_outputs, stride);
    row_outputs += tasks[i]->request().rows * stride;
  }
  return absl::OkStatus();
}

}  // namespace model_server::handlers

#pragma once

// Include after torch's headers (and #undef CHECK, which torch defines through glog).
#include <catch2/catch.hpp>
#include <vector>

#include "handlers/model_handler.h"

namespace model_server::handlers {

// Runs rows through the handler; inputs [rows, num_inputs], params one vector for every row.
inline std::vector<float> RunRows(ModelHandler& handler, const std::vector<float>& inputs,
                                  const std::vector<float>& params) {
  const ModelSignature& signature = handler.signature();
  const int64_t rows = static_cast<int64_t>(inputs.size()) / signature.num_inputs;
  BatchBuffers buffers = handler.PrepareBatch(rows);
  std::copy(inputs.begin(), inputs.end(), buffers.inputs);
  for (int64_t row = 0; row < rows && signature.num_params > 0; ++row) {
    std::copy(params.begin(), params.end(), buffers.params + row * signature.num_params);
  }
  absl::StatusOr<const float*> outputs = handler.Run();
  REQUIRE(outputs.ok());
  return std::vector<float>(*outputs, *outputs + rows * signature.num_outputs);
}

}  // namespace model_server::handlers

#pragma once

// Include after torch's headers (and #undef CHECK, which torch defines through glog).
#include <catch2/catch.hpp>
#include <vector>

#include "handlers/model_handler.h"

namespace model_server::handlers {

// Runs rows through a handler of a model the seed can call: inputs [rows, num_inputs] go to its
// columns input, params (one vector for every row) to its params input; returns its seed
// output, [rows, num_outputs].
inline std::vector<float> RunRows(ModelHandler& handler, const std::vector<float>& inputs,
                                  const std::vector<float>& params) {
  const ModelSignature& signature = handler.signature();
  REQUIRE(signature.seed.has_value());
  const SeedSignature& seed = *signature.seed;
  const int64_t rows = static_cast<int64_t>(inputs.size()) / seed.num_inputs;
  std::vector<Dims> shapes(signature.inputs.size());
  shapes[seed.columns_input] = {rows, seed.num_inputs};
  if (seed.params_input) shapes[*seed.params_input] = {rows, seed.num_params};
  const std::vector<char*> buffers = handler.PrepareBatch(shapes);
  std::copy(inputs.begin(), inputs.end(), reinterpret_cast<float*>(buffers[seed.columns_input]));
  for (int64_t row = 0; row < rows && seed.params_input; ++row) {
    std::copy(params.begin(), params.end(),
              reinterpret_cast<float*>(buffers[*seed.params_input]) + row * seed.num_params);
  }
  absl::StatusOr<const std::vector<OutputTensor>*> outputs = handler.Run();
  REQUIRE(outputs.ok());
  const float* y = reinterpret_cast<const float*>((**outputs)[seed.output].data);
  return std::vector<float>(y, y + rows * seed.num_outputs);
}

}  // namespace model_server::handlers

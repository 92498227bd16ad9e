#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace model_server::handlers {

// What a loaded model takes and gives, as request decoders need to know it.
struct ModelSignature {
  // The model's own input_var_order; used when a request names none. May be empty.
  std::vector<std::string> input_names;
  // The model's own output_var_order; used when a request names none. May be empty.
  std::vector<std::string> output_names;
  // Columns of the input tensor [rows, num_inputs].
  int64_t num_inputs = 0;
  // Columns of the output tensor [rows, num_outputs].
  int64_t num_outputs = 0;
  // Length of the tunable parameter vector; 0 when forward takes the input tensor only.
  int64_t num_params = 0;
  // Used for requests without tunableParams; empty when such requests must be refused.
  std::vector<float> default_params;
};

// A decoded, validated request: everything the batch thread needs, nothing it has to check.
struct InferenceRequest {
  int64_t rows = 0;
  std::vector<float> inputs;              // [rows, num_inputs], row-major
  std::vector<float> params;              // [num_params]: every row gets this vector
  std::vector<std::string> output_names;  // names of output columns 0..size()-1 in the reply
};

}  // namespace model_server::handlers

#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::fuzz {

// A request as the seed's decoder gave it before general tensors (issue 22): rows of
// seed.num_inputs floats, one parameter vector, the names of the output columns.
struct DomRequest {
  int64_t rows = 0;
  std::vector<float> inputs;  // rows * num_inputs, row-major
  std::vector<float> params;  // num_params (the request's or the model's defaults)
  std::vector<std::string> output_names;
};

// The request decoder the server used before issue 11 (simdjson DOM): the differential fuzzer's
// oracle for protocol::DecodeRequest. Same checks, strict JSON (no NaN or Infinity).
absl::StatusOr<DomRequest> DomDecodeRequest(std::string_view payload,
                                            const handlers::SeedSignature& signature,
                                            int64_t max_rows = std::numeric_limits<int64_t>::max());

}  // namespace model_server::fuzz

#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::fuzz {

// The request decoder the server used before issue 11 (simdjson DOM): the differential fuzzer's
// oracle for protocol::DecodeRequest. Same contract, strict JSON (no NaN or Infinity).
absl::StatusOr<handlers::InferenceRequest> DomDecodeRequest(
    std::string_view payload, const handlers::ModelSignature& signature,
    int64_t max_rows = std::numeric_limits<int64_t>::max());

}  // namespace model_server::fuzz

#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference_task.h"
#include "model_handler.h"

namespace handlers {

// Deepest JSON nesting a request may have; deeper documents are refused, never recursed into.
inline constexpr size_t kMaxJsonDepth = 32;

// Decodes the seed's request JSON:
//   {"analyticSettings": {"modelParams": {"input_var_order": [...], "output_var_order": [...]},
//                         "tunableParams": {"bias_weight_array": [...]}},
//    "inputs": {"x_1": [...], ...}}
// and checks it against the model. Errors are INVALID_ARGUMENT naming the problem. Unknown keys
// are ignored. A request of more than `max_rows` rows is refused. Thread-safe (each thread keeps
// its own parser).
absl::StatusOr<InferenceRequest> DecodeRequest(
    std::string_view payload, const ModelSignature& signature,
    int64_t max_rows = std::numeric_limits<int64_t>::max());

// Writes {"prediction": {"<name>": [...], ...}} for output columns 0..names.size()-1 of `rows`
// rows that are `stride` floats apart. Replaces `out`'s contents, reusing its capacity.
void EncodeResponse(const std::vector<std::string>& output_names, const float* outputs,
                    int64_t rows, int64_t stride, std::string* out);

}  // namespace handlers

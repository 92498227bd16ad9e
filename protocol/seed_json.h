#pragma once

// The seed's JSON payloads, both directions, for every party: the server decodes requests and
// encodes responses; clients, the load generator and the tests encode requests and decode
// responses. One escaper and one number writer serve all of them, so no two writers drift.
//
// Request:  {"analyticSettings": {"modelParams": {"input_var_order": [...],
//                                                 "output_var_order": [...]},
//                                 "tunableParams": {"bias_weight_array": [...]}},
//            "inputs": {"x_1": [...], ...}}
// Response: {"prediction": {"y_1": [...], ...}}
// Numbers are JSON numbers, plus NaN, Infinity and -Infinity as Python's json writes and reads
// them.

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::protocol {

// Deepest JSON nesting a request may have; deeper documents are refused, never recursed into.
inline constexpr size_t kMaxJsonDepth = 32;

// Named columns of numbers, in order: a request's "inputs" or a response's "prediction".
using Columns = std::vector<std::pair<std::string, std::vector<double>>>;

// --- Server side ---

// A decoded request: the tensors for the batch, and the names of the output columns the reply
// carries (columns 0..output_names.size()-1 of the model's seed output).
struct SeedRequest {
  handlers::InferenceRequest request;
  std::vector<std::string> output_names;
};

// Decodes a request and checks it against the model's seed mapping (signature.seed, which must
// be set): the columns go into the seed's columns input, the tunable parameters (or the model's
// defaults) into its params input as one row for all rows, and every other input takes its
// default. Errors are INVALID_ARGUMENT naming the problem. Unknown keys are ignored. A request of
// more than `max_rows` rows is refused. Thread-safe (each thread keeps its own parser).
absl::StatusOr<SeedRequest> DecodeRequest(std::string_view payload,
                                          const handlers::ModelSignature& signature,
                                          int64_t max_rows = std::numeric_limits<int64_t>::max());

// Writes the response for output columns 0..names.size()-1 of `rows` rows that are `stride`
// floats apart, each value as the shortest text that reads back as the same float. Replaces
// `out`'s contents, reusing its capacity.
void EncodeResponse(const std::vector<std::string>& output_names, const float* outputs,
                    int64_t rows, int64_t stride, std::string* out);

// --- Client side ---

// The request for `inputs` (input_var_order is their names, in order) and `params`
// (tunableParams; empty omits it); `output_names` empty omits output_var_order.
std::string EncodeRequest(const Columns& inputs, const std::vector<double>& params,
                          const std::vector<std::string>& output_names);

// Reads a response. INVALID_ARGUMENT when the bytes are not JSON of that shape or the columns
// differ in length.
absl::StatusOr<Columns> DecodeResponse(std::string_view bytes);

// Rows of a request: the length of its first "inputs" column. INVALID_ARGUMENT when the bytes
// are not a request of the seed's shape.
absl::StatusOr<size_t> RequestRows(std::string_view request_json);

// --- Pieces of the above, for writers of JSON in the same dialect ---

// `text` as a JSON string, quoted and escaped.
void AppendJsonString(std::string_view text, std::string* out);
// The shortest text that reads back as `value`; NaN, Infinity, -Infinity for non-finite values.
void AppendJsonNumber(double value, std::string* out);
void AppendJsonNumber(float value, std::string* out);

}  // namespace model_server::protocol

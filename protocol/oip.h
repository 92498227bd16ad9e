#pragma once

// The Open Inference Protocol's tensors (protos/grpc_predict_v2.proto), both directions, for
// every party: the server decodes ModelInferRequest into an InferenceRequest and encodes
// ModelInferResponse; clients, model_bench, the tests and the fuzzers build requests and read
// responses.
//
// A model in OIP terms (its signature's num_inputs, num_params, num_outputs):
//   input  "x"      FP32 [n, num_inputs]
//   input  "params" FP32 [n, num_params] or [1, num_params] (every row gets it); only for models
//                   that take parameters; optional when the model has default_params
//   output "y"      FP32 [n, num_outputs]
// Tensor data comes either in raw_input_contents (little-endian, one entry per input) or in each
// input's contents.fp32_contents. The reply carries y in raw_output_contents unless the request
// asks for typed contents: the bool parameter "binary_data_output" = false on the request, or
// "binary_data" = false on its requested output "y" (Triton's names for the same choice).

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"
#include "protos/grpc_predict_v2.pb.h"

namespace model_server::protocol::oip {

inline constexpr char kInput[] = "x";
inline constexpr char kParams[] = "params";
inline constexpr char kOutput[] = "y";
inline constexpr char kFp32[] = "FP32";

// --- Server side ---

// A decoded ModelInferRequest: the rows for the batch and how the reply must carry y.
struct DecodedInfer {
  // Its output_names stay empty: the reply carries every output column, as y.
  handlers::InferenceRequest request;
  // raw_output_contents (true) or contents.fp32_contents (false).
  bool raw_output = true;
};

// Decodes the tensors of `request` (model_name and model_version are the caller's to route) and
// checks them against the model. Errors are INVALID_ARGUMENT naming the problem: an unknown,
// repeated or missing input, a datatype other than FP32, a wrong shape, raw contents whose size
// does not match the shape, contents in the wrong field or in both forms, an unknown requested
// output, more than `max_rows` rows. Thread-safe.
absl::StatusOr<DecodedInfer> DecodeInferRequest(
    const inference::ModelInferRequest& request, const handlers::ModelSignature& signature,
    int64_t max_rows = std::numeric_limits<int64_t>::max());

// What a reply says besides y.
struct InferReplyHeader {
  std::string_view model_name;
  std::string_view model_version;
  std::string_view id;  // the request's, echoed
};

// Fills `response` (cleared first, its memory reused) with y: `rows` rows of `columns` floats,
// row-major at `outputs`, in raw_output_contents or contents.fp32_contents.
void EncodeInferResponse(const InferReplyHeader& header, const float* outputs, int64_t rows,
                         int64_t columns, bool raw_output, inference::ModelInferResponse* response);

// --- Client side ---

struct Fp32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

// A request for `model_name` with `inputs`, their data in raw_input_contents (`raw`) or in
// contents.fp32_contents.
inference::ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                                const std::vector<Fp32Tensor>& inputs, bool raw);

// The output `name` of a response, from whichever form it came in. INVALID_ARGUMENT when it is
// missing, not FP32, or its data does not match its shape.
absl::StatusOr<Fp32Tensor> DecodeOutput(const inference::ModelInferResponse& response,
                                        const std::string& name = kOutput);

}  // namespace model_server::protocol::oip

#pragma once

// The Open Inference Protocol's tensors (protos/grpc_predict_v2.proto), both directions, for
// every party: the server decodes ModelInferRequest into an InferenceRequest and encodes
// ModelInferResponse; clients, model_bench, the tests and the fuzzers build requests and read
// responses.
//
// A model in OIP terms is its signature: named inputs and outputs of a datatype (FP32, INT64,
// ...) and shape ([n, dims...] when it batches: n rows, at most its max_batch_size). Tensor data
// comes either in raw_input_contents (little-endian, one entry per input: the fast path, the only
// one for FP16 and BF16) or in each input's typed contents (fp32_contents, int64_contents,
// int_contents for INT8/16/32, uint_contents for UINT8, bool_contents, fp64_contents). An
// optional input may be left out and takes its default; the seed mapping's parameter input may
// also come as one row [1, P] for all rows. The reply carries the requested outputs (all of them
// when the request names none) in raw_output_contents, unless the request asks for typed
// contents: the bool parameter "binary_data_output" = false on the request, or "binary_data" =
// false on every output it names (Triton's names for the same choice). The request parameters
// "priority" and "timeout" (Triton's schedule-policy extension) are decoded for the batcher.

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"
#include "protos/grpc_predict_v2.pb.h"

namespace model_server::protocol::oip {

// The tensor names of a model that describes itself with the seed's attributes.
inline constexpr char kInput[] = "x";
inline constexpr char kParams[] = "params";
inline constexpr char kOutput[] = "y";
inline constexpr char kFp32[] = "FP32";

// --- Server side ---

// A decoded ModelInferRequest: the tensors for the batch and what the reply carries.
struct DecodedInfer {
  handlers::InferenceRequest request;
  // The signature's outputs the reply carries, by index, in the order the request names them
  // (all, in the signature's order, when it names none).
  std::vector<size_t> outputs;
  // raw_output_contents (true) or typed contents (false).
  bool raw_output = true;
  // Triton's schedule-policy parameters: "priority" (1 is served first; 0 when not given: the
  // model's default level) and "timeout" (microseconds in the queue; 0 when not given), each an
  // int64_param or uint64_param >= 0.
  uint64_t priority = 0;
  std::chrono::microseconds timeout{0};
  // The request's other parameters (all but priority, timeout and binary_data_output, which
  // change neither the model's inputs nor its answer), each as key, type and value, in key
  // order: what a response cache key holds of them (empty when there are none).
  std::string cache_parameters;
};

// Decodes the tensors of `request` (model_name and model_version are the caller's to route) and
// checks them against the model. Raw input data is not copied: the request must outlive the
// decoded request. Errors are INVALID_ARGUMENT naming the problem: an unknown, repeated or
// missing input, a datatype or shape the model does not take, inputs whose rows differ, more
// rows than `max_rows`, raw contents whose size does not match the shape, contents in the wrong
// field or in both forms, BOOL values other than 0 and 1, an unknown or repeated output, typed
// contents asked for an FP16 or BF16 output, outputs asking for different forms, a priority or
// timeout that is not an integer >= 0. Thread-safe.
absl::StatusOr<DecodedInfer> DecodeInferRequest(
    const inference::ModelInferRequest& request, const handlers::ModelSignature& signature,
    int64_t max_rows = std::numeric_limits<int64_t>::max());

// What a reply says besides its outputs.
struct InferReplyHeader {
  std::string_view model_name;
  std::string_view model_version;
  std::string_view id;  // the request's, echoed
};

// One output of a reply: its name, type, shape and elements (row-major, little-endian).
struct ReplyTensor {
  std::string name;  // its own: the reply may outlive the model version that named it
  handlers::DataType type = handlers::DataType::kFp32;
  handlers::Dims shape;
  std::string data;
};

// Fills `response` (cleared first, its memory reused) with `outputs`, in raw_output_contents
// or typed contents (moving their data out).
void EncodeInferResponse(const InferReplyHeader& header, std::vector<ReplyTensor>& outputs,
                         bool raw_output, inference::ModelInferResponse* response);

// --- Client side ---

// A tensor of any datatype: its elements row-major and little-endian in `data`.
struct Tensor {
  std::string name;
  handlers::DataType type = handlers::DataType::kFp32;
  std::vector<int64_t> shape;
  std::string data;
};

struct Fp32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

// A request for `model_name` with `inputs`, their data in raw_input_contents (`raw`) or in
// typed contents (not for FP16 or BF16).
inference::ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                                const std::vector<Tensor>& inputs, bool raw);
inference::ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                                const std::vector<Fp32Tensor>& inputs, bool raw);

// The output `name` of a response, from whichever form it came in. INVALID_ARGUMENT when it is
// missing, of an unknown datatype, or its data does not match its shape.
absl::StatusOr<Tensor> DecodeTensor(const inference::ModelInferResponse& response,
                                    const std::string& name);
// The same for an FP32 output (INVALID_ARGUMENT when it is another datatype).
absl::StatusOr<Fp32Tensor> DecodeOutput(const inference::ModelInferResponse& response,
                                        const std::string& name = kOutput);

}  // namespace model_server::protocol::oip

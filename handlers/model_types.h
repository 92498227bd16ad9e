#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "handlers/tensor.h"

namespace model_server::handlers {

// How the seed's JSON (ModelService.EvaluateModel) maps onto a model's tensors: named float
// columns in, named float columns out, with an optional tunable parameter vector per request.
struct SeedSignature {
  // The model's input holding the columns: FP32, [rows, num_inputs]. Index into
  // ModelSignature::inputs.
  size_t columns_input = 0;
  // The model's input holding the parameter vectors, FP32 [rows, num_params]; nullopt when the
  // model takes none.
  std::optional<size_t> params_input;
  // The model's output holding the output columns, FP32 [rows, num_outputs].
  size_t output = 0;
  // The model's own input_var_order; used when a request names none. May be empty.
  std::vector<std::string> input_names;
  // The model's own output_var_order; used when a request names none. May be empty.
  std::vector<std::string> output_names;
  int64_t num_inputs = 0;
  int64_t num_outputs = 0;
  // Length of the tunable parameter vector; 0 when the model takes none.
  int64_t num_params = 0;
  // Used for requests without tunableParams; empty when such requests must be refused.
  std::vector<float> default_params;
};

// What a loaded model takes and gives: the one description that load-time checks, ModelMetadata,
// ModelConfig, request validation and the seed protocol's mapping all read.
struct ModelSignature {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  // Rows a batch may hold at most; 0: the model takes no batch dimension, so every request runs
  // alone with the shapes it gives.
  int64_t max_batch_size = 0;
  // How the seed's JSON maps onto the tensors; nullopt: EvaluateModel cannot call this model.
  std::optional<SeedSignature> seed;

  bool batches() const { return max_batch_size > 0; }
};

// One input of a request, checked against its TensorSpec.
struct InputTensor {
  // As sent: [rows, dims...] when the model batches (or [1, dims...] when `broadcast`), else the
  // full shape.
  Dims shape;
  // One row given for all of the request's rows (the seed's single parameter vector, an OIP
  // "params" of one row); only for models that batch.
  bool broadcast = false;
  // The elements, row-major and little-endian: in `owned`, or in memory that outlives the
  // request (the gRPC message the request was decoded from).
  std::string_view data;
  std::unique_ptr<char[]> owned;

  // Makes `owned` room for `bytes` bytes (uninitialised) and points `data` at it.
  char* Allocate(size_t bytes) {
    owned.reset(new char[bytes == 0 ? 1 : bytes]);
    data = std::string_view(owned.get(), bytes);
    return owned.get();
  }
};

// A decoded, validated request: everything the batch thread needs, nothing it has to check.
struct InferenceRequest {
  // Rows it adds to a batch: the first dimension of its inputs when the model batches, else 1.
  int64_t rows = 0;
  // One per input of the model's signature, in its order; optional inputs left out hold their
  // default.
  std::vector<InputTensor> inputs;
};

// The dimensions after the batch dimension of each input, one list after another, with -1
// between inputs: requests whose keys differ cannot share a batch.
inline Dims BatchKey(const InferenceRequest& request) {
  Dims key;
  for (const InputTensor& input : request.inputs) {
    key.insert(key.end(), input.shape.begin() + (input.shape.empty() ? 0 : 1), input.shape.end());
    key.push_back(-1);
  }
  return key;
}

}  // namespace model_server::handlers

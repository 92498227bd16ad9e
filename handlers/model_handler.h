#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace handlers {

// What a loaded model takes and gives, as the request decoder needs to know it.
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

// How long Initialize took, for operators.
struct InitializeTimes {
  double load_seconds = 0;    // reading the model into memory
  double warmup_seconds = 0;  // warm-up forward passes
};

// Where the batch thread writes a batch's rows; owned by the handler and reused across batches.
struct BatchBuffers {
  float* inputs = nullptr;  // [rows, num_inputs], row-major
  float* params = nullptr;  // [rows, num_params], row-major; null when num_params == 0
};

// One model kind, with the seed's three constructs: Initialize, Run, Cleanup.
// Initialize and Cleanup are called once each, from the main thread; PrepareBatch and Run only
// from the one batch thread that owns this instance, never concurrently.
class ModelHandler {
 public:
  virtual ~ModelHandler() = default;

  // Loads the model into memory and warms it up. Errors name the problem (missing file, wrong
  // forward signature, ...); nothing else may be called after a failure.
  virtual absl::Status Initialize() = 0;

  // Valid once Initialize has succeeded.
  virtual const ModelSignature& signature() const = 0;
  virtual InitializeTimes initialize_times() const = 0;

  // Buffers for a batch of `rows` rows (rows >= 1), valid until the next PrepareBatch.
  virtual BatchBuffers PrepareBatch(int64_t rows) = 0;

  // The forward pass over the buffers of the last PrepareBatch. On OK, points at the outputs,
  // [rows, num_outputs] row-major, valid until the next PrepareBatch. Errors are the model's
  // (INTERNAL, with its message); the handler stays usable.
  virtual absl::StatusOr<const float*> Run() = 0;

  // Releases the model; nothing may be called afterwards.
  virtual void Cleanup() = 0;
};

}  // namespace handlers

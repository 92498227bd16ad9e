#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

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

// One model kind, with the seed's three constructs: Initialize, Run, Cleanup. LoadedModel calls
// Initialize and Cleanup; PrepareBatch and Run are called only from the one batch thread that
// owns this instance, never concurrently.
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

// A handler between Initialize and Cleanup: Load initializes it and the destructor cleans it up,
// so one object owns the handler's life.
class LoadedModel {
 public:
  // Initializes `handler`; its error (see ModelHandler::Initialize) if that fails.
  static absl::StatusOr<std::unique_ptr<LoadedModel>> Load(std::unique_ptr<ModelHandler> handler);

  ~LoadedModel() { handler_->Cleanup(); }
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  ModelHandler& handler() { return *handler_; }
  const ModelSignature& signature() const { return handler_->signature(); }

 private:
  explicit LoadedModel(std::unique_ptr<ModelHandler> handler) : handler_(std::move(handler)) {}

  const std::unique_ptr<ModelHandler> handler_;
};

}  // namespace model_server::handlers

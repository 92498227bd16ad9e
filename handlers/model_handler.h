#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// How long Initialize took, for operators.
struct InitializeTimes {
  double load_seconds = 0;    // reading the model into memory
  double warmup_seconds = 0;  // forward passes Initialize ran (checks, probes) and WarmUp's
};

// One output of a batch, in host memory.
struct OutputTensor {
  DataType type = DataType::kFp32;
  Dims shape;                  // [rows, dims...] when the model batches, else the full shape
  const char* data = nullptr;  // row-major, little-endian
};

// One model kind, with the seed's three constructs: Initialize, Run, Cleanup. LoadedModel calls
// Initialize and Cleanup; PrepareBatch and Run are called only from the one batch thread that
// owns this instance, never concurrently.
class ModelHandler {
 public:
  virtual ~ModelHandler() = default;

  // Loads the model into memory and warms it up. Errors name the problem (missing file, forward
  // that does not match the signature, ...); nothing else may be called after a failure.
  virtual absl::Status Initialize() = 0;

  // Runs the forward passes that make the first real batches as fast as later ones (every batch
  // size the executor will run, up to `max_rows`; 0 for a model that does not batch), on the
  // calling thread: the batch thread that runs this instance from then on, so per-thread state
  // (a GPU library's handle and workspace) is made here, not in a user's request. Called once,
  // after Initialize and before the first PrepareBatch of a real batch; the server says SERVING
  // only after every instance's WarmUp has returned OK. Errors name the forward that failed.
  virtual absl::Status WarmUp(int64_t /*max_rows*/) { return absl::OkStatus(); }

  // True when forward passes must stay on the thread that ran WarmUp (a GPU instance: its
  // library handles and workspace are that thread's, and a forward there must not hold up a
  // completion-queue thread); the server then never runs a request on the thread that received
  // it. False: any thread may run a forward pass, one at a time.
  virtual bool ThreadBound() const { return false; }

  // Valid once Initialize has succeeded; fixed from then on.
  virtual const ModelSignature& signature() const = 0;
  virtual InitializeTimes initialize_times() const = 0;

  // Host buffers for a batch, one per input of the signature, in its order, where the batch
  // thread writes that input's elements (its type, row-major): `shapes[i]` is input i's shape
  // ([rows, dims...] when the model batches); null may stand for an input of no elements. Valid
  // until the next PrepareBatch.
  virtual std::vector<char*> PrepareBatch(const std::vector<Dims>& shapes) = 0;

  // The forward pass over the buffers of the last PrepareBatch. On OK, the outputs, one per
  // output of the signature, in its order, of the signature's types, with [rows, ...] first
  // when the model batches; valid until the next PrepareBatch. Errors are the model's
  // (INTERNAL, with its message), and the handler stays usable; or classed (handlers/fault.h):
  // Fault::kOutOfMemory (RESOURCE_EXHAUSTED; usable, a smaller batch may fit) or
  // Fault::kDeviceLost (UNAVAILABLE; nothing will compute any more).
  virtual absl::StatusOr<const std::vector<OutputTensor>*> Run() = 0;

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

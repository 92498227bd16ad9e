#pragma once

// The TorchScript handler. This header stays free of torch includes so that the server and the
// tests that use it compile without libtorch headers.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "handlers/model_handler.h"

namespace model_server::handlers {

struct TorchHandlerOptions {
  // TorchScript file to load; empty serves the built-in demo model.
  std::string model_path;
  // Hidden layer width of the demo model (ignored with model_path).
  int64_t demo_hidden = 32;
  // cpu, cuda, cuda:N, or auto (the first GPU when libtorch sees one, else cpu).
  std::string device = "auto";
  // fp32, fp16 or bf16: the dtype the model computes in; the wire stays float32.
  std::string precision = "fp32";
  // torch intra-op threads (process-wide); 0 leaves libtorch's default.
  int torch_threads = 1;
  // Largest batch the batcher produces; warm-up runs batch sizes up to it.
  int64_t max_batch_rows = 4096;
};

// A handler that serves a TorchScript module whose forward takes (x) or (x, params):
// x [rows, num_inputs] and params [rows, num_params] float tensors, returning [rows, outputs]
// (or [rows] for one output). Optional module attributes describe it: input_var_order and
// output_var_order (List[str]), default_params (List[float]), num_inputs and num_params (int).
// Initialize fails with a clear message when the file is missing or corrupt, forward has
// another signature, or the warm-up forward fails.
std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options);

// Writes the demo model as a TorchScript file (loadable by PyTorch >= 1.13): an MLP over
// x_1..x_3 whose final layer takes its 4 weights and bias from the tunable vector
// (index 0 = bias, 1..4 = weights), giving y_1.
absl::Status ExportDemoModel(const std::string& path, int64_t hidden);

}  // namespace model_server::handlers

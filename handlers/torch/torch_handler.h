#pragma once

// The TorchScript handler. This header stays free of torch includes so that the server and the
// tests that use it compile without libtorch headers.

#include <cstdint>
#include <memory>
#include <optional>
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
  // fp32, fp16 or bf16: the dtype the model computes in (floating-point inputs are cast to it,
  // outputs back to their declared types); fp32 leaves the model as it was saved.
  std::string precision = "fp32";
  // torch intra-op threads (process-wide); 0 leaves libtorch's default.
  int torch_threads = 1;
  // The largest batch of a model whose signature is read from the file (its max_batch_size);
  // warm-up runs batch sizes up to the signature's max_batch_size.
  int64_t max_batch_rows = 4096;
  // Whether forward runs with the TorchScript graph executor's optimizations (profiling,
  // fusion); false is the PyTorch backend's DISABLE_OPTIMIZED_EXECUTION: true.
  bool optimized_execution = true;
  // Whether forward runs under c10::InferenceMode (true) or only torch::NoGradGuard (the PyTorch
  // backend's INFERENCE_MODE: false). The answers are the same.
  bool inference_mode = true;
  // The model's inputs, outputs and batching as its configuration declares them (config.pbtxt);
  // nullopt: read them from the file (see MakeTorchHandler).
  std::optional<ModelSignature> signature;
};

// A handler that serves a TorchScript module.
//
// With a declared signature, inputs bind to forward's arguments by Triton's PyTorch convention:
// the argument of that name, else a name ending in "__<i>" (INPUT__0, ...) is argument i; where
// some name is neither, every input binds by its place in the declaration (Triton's third rule).
// Forward may return a tensor (one output), a tuple or list of tensors (outputs by their
// "__<i>" index, else in declared order) or a dict of tensors (by name). Initialize checks the
// declaration against a warm-up forward and fails naming the input or output that differs.
//
// Without one, the signature is read from the file: a model that describes itself for the seed
// protocol with module attributes (input_var_order / output_var_order: List[str], default_params:
// List[float], num_inputs / num_params: int) takes x [rows, num_inputs] (and params
// [rows, num_params] when forward takes two arguments) as FP32 and gives y; any other model's
// inputs are its forward's arguments, with types and sizes read from the first layer each one
// reaches (linear, matmul/addmm, conv1d/2d/3d, embedding), outputs OUTPUT__<i> as the warm-up
// gives them, batching up to max_batch_rows.
//
// Initialize fails with a clear message when the file is missing or corrupt, forward does not
// match, or the warm-up forward fails.
std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options);

// Writes the demo model as a TorchScript file (loadable by PyTorch >= 1.13): an MLP over
// x_1..x_3 whose final layer takes its 4 weights and bias from the tunable vector
// (index 0 = bias, 1..4 = weights), giving y_1.
absl::Status ExportDemoModel(const std::string& path, int64_t hidden);

}  // namespace model_server::handlers

#pragma once

// The TorchScript handler. This header stays free of torch includes so that the server and the
// tests that use it compile without libtorch headers.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "handlers/model_handler.h"

namespace model_server::handlers {

// What the instances of one model version share (see TorchHandlerOptions::share). Opaque.
class TorchVersionShare;
// A share for the instances of one version; each instance holds it until its Cleanup.
std::shared_ptr<TorchVersionShare> MakeTorchVersionShare();

struct TorchHandlerOptions {
  // TorchScript file to load; empty serves the built-in demo model.
  std::string model_path;
  // Hidden layer width of the demo model (ignored with model_path).
  int64_t demo_hidden = 32;
  // cpu, cuda, cuda:N, or auto (the first GPU when libtorch sees one, else cpu).
  std::string device = "auto";
  // fp32, tf32, fp16 or bf16: the dtype the model computes in (floating-point inputs are cast to
  // it, outputs back to their declared types); fp32 leaves the model as it was saved. tf32 keeps
  // float32 tensors and lets a GPU's matmuls and convolutions use TF32 tensor cores (libtorch's
  // float32 matmul precision "high"): libtorch has this setting once per process, so the first
  // instance that asks for tf32 turns it on for every model of the process.
  std::string precision = "fp32";
  // torch intra-op threads (process-wide); 0 leaves libtorch's default.
  int torch_threads = 1;
  // The largest batch of a model whose signature is read from the file (its max_batch_size).
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
  // After the warm-up, capture a CUDA graph for each bucketed batch size (the powers of two below
  // the warm-up's largest batch, and that batch) on the instance's stream, and run each batch by
  // replaying the graph of the smallest bucket that holds it: its rows are copied into the
  // graph's input tensors, the rest zeroed, and only its rows of the outputs are answered (rows
  // must not depend on each other). Only on a GPU, for a model that batches and whose inputs
  // have fixed sizes past the batch dimension, with a libtorch built with CUDA; elsewhere, or
  // when a capture fails (logged: the model synchronises, ...), the instance runs eagerly.
  bool cuda_graphs = false;
  // Instances with the same key (one model's instance slot, across its versions) compute on the
  // same stream of their device, so the CUDA caching allocator, which reuses freed blocks only on
  // the stream that freed them, gives a new version the blocks the retired one freed. Empty: a
  // stream of its own from the device's pool.
  std::string stream_key;
  // Shared by the instances of one version (MakeTorchVersionShare): those on the same device and
  // precision use one copy of the weights, loaded once, unless forward sets attributes of the
  // module (then each instance loads its own); and when the last of them is released, the CUDA
  // caching allocator's unused blocks are returned to the driver, once. Null: a share of its own.
  std::shared_ptr<TorchVersionShare> share;
};

// A handler that serves a TorchScript module.
//
// With a declared signature, inputs bind to forward's arguments by Triton's PyTorch convention:
// the argument of that name, else a name ending in "__<i>" (INPUT__0, ...) is argument i; where
// some name is neither, every input binds by its place in the declaration (Triton's third rule).
// Forward may return a tensor (one output), a tuple or list of tensors (outputs by their
// "__<i>" index, else in declared order) or a dict of tensors (by name). Initialize checks the
// declaration against a forward and fails naming the input or output that differs.
//
// Without one, the signature is read from the file: a model that describes itself for the seed
// protocol with module attributes (input_var_order / output_var_order: List[str], default_params:
// List[float], num_inputs / num_params: int) takes x [rows, num_inputs] (and params
// [rows, num_params] when forward takes two arguments) as FP32 and gives y; any other model's
// inputs are its forward's arguments, with types and sizes read from the first layer each one
// reaches (linear, matmul/addmm, conv1d/2d/3d, embedding), outputs OUTPUT__<i> as a probe
// forward gives them, batching up to max_batch_rows.
//
// The module is read on the CPU, then its weights are moved to the device and cast to the
// precision once, on the instance's stream, which is synchronised before any forward. Every
// forward, its input copies and its output copies run on the instance's stream; the pinned host
// buffers PrepareBatch hands out are not handed out again before the copies out of them are
// done, whatever way Run returns. Errors of a forward are classified (handlers/torch/
// torch_faults.h): out of memory, a lost device, or the model's own.
//
// Initialize fails with a clear message when the file is missing or corrupt, forward does not
// match, or the checking forward fails; WarmUp (on the batch thread) when a warm-up forward fails.
std::unique_ptr<ModelHandler> MakeTorchHandler(const TorchHandlerOptions& options);

// Writes the demo model as a TorchScript file (loadable by PyTorch >= 1.13): an MLP over
// x_1..x_3 whose final layer takes its 4 weights and bias from the tunable vector
// (index 0 = bias, 1..4 = weights), giving y_1.
absl::Status ExportDemoModel(const std::string& path, int64_t hidden);

// What a TorchScript instance runs on, for tests and logs.
struct TorchInstanceInfo {
  std::string device;     // "cpu", "cuda:1"
  std::string precision;  // as asked: fp32, tf32, fp16, bf16
  // Its stream's id (0: the device's default stream), and the stream current during the last
  // forward (its id; -1 before any).
  int64_t stream_id = 0;
  int64_t last_forward_stream_id = -1;
  // The devices and dtypes of the module's parameters and buffers ("cuda:0", "Half").
  std::vector<std::string> weight_devices;
  std::vector<std::string> weight_dtypes;
  // The first parameter's storage: equal for instances that share their weights.
  const void* weights = nullptr;
  // Whether the weights came from the version's share loaded by another instance.
  bool weights_shared = false;
  // Batch sizes with a captured CUDA graph (empty: eager), and the replays so far.
  std::vector<int64_t> graph_buckets;
  int64_t graph_replays = 0;
};

// The info of `handler` when it is a TorchScript handler after Initialize; nullopt otherwise.
// Not concurrently with the handler's Run.
std::optional<TorchInstanceInfo> DescribeTorchInstance(const ModelHandler& handler);

// One GPU's memory, as libtorch's CUDA caching allocator counts it.
struct GpuMemory {
  int device = 0;
  int64_t allocated_bytes = 0;       // held by tensors now
  int64_t reserved_bytes = 0;        // held by the allocator: tensors' and its cache
  int64_t peak_allocated_bytes = 0;  // the most allocated_bytes since the process started
  int64_t alloc_retries = 0;         // allocations that freed the cache and retried
  int64_t ooms = 0;                  // allocations that failed even then
};

// Each visible GPU's memory; empty when this libtorch has no CUDA or sees no GPU. Any thread.
std::vector<GpuMemory> GpuMemoryStats();

// The GPUs libtorch sees (0 without CUDA).
int VisibleGpus();

// Whether this build's libtorch has CUDA.
bool CudaCompiled();

// How often a version's release has emptied the CUDA cache (once per version that used a GPU).
size_t CudaCacheReleases();

}  // namespace model_server::handlers

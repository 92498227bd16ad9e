#pragma once

// What the TorchScript handler needs of CUDA beyond libtorch's device-generic API: the caching
// allocator's statistics and cache, and CUDA graphs. Compiled from cuda_support_cuda.cc against a
// libtorch with CUDA, else from cuda_support_none.cc (CPU-only libtorch, e.g. Debian's), whose
// functions report no GPU and refuse to capture. Torch-specific: only this folder includes it.

#include <c10/core/Stream.h>

#include <functional>
#include <memory>
#include <vector>

#include "handlers/torch/torch_handler.h"

namespace model_server::handlers::cuda_support {

// Whether this build has CUDA (it may still see no GPU).
bool Compiled();

// Each visible GPU's caching-allocator statistics; empty without CUDA or GPUs.
std::vector<GpuMemory> MemoryStats();

// Returns the caching allocator's unused cached blocks (every device, every stream) to the
// driver. No-op without CUDA.
void EmptyCache();

// A CUDA graph: the kernels one call launched on a stream, replayed on that stream.
class Graph {
 public:
  virtual ~Graph() = default;
  // Launches the captured kernels again on the stream they were captured on, with the memory
  // they were captured with (the same tensors' storage).
  virtual void Replay() = 0;
};

// Captures the kernels `body` launches on `stream` (made current for the call; a non-default
// CUDA stream) into a graph; its memory comes from the private pool of `share_pool_with` when
// given, else a pool of its own. Other threads' CUDA calls go on meanwhile (thread-local capture
// mode). Throws (c10::Error, std::exception) when the build has no CUDA or the capture fails
// (`body` did something a graph cannot hold, e.g. a synchronisation).
std::unique_ptr<Graph> Capture(const c10::Stream& stream, Graph* share_pool_with,
                               const std::function<void()>& body);

}  // namespace model_server::handlers::cuda_support

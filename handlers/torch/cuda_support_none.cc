// cuda_support for a libtorch without CUDA: no GPU, nothing cached, no graphs.

#include <c10/util/Exception.h>

#include "handlers/torch/cuda_support.h"

namespace model_server::handlers::cuda_support {

bool Compiled() { return false; }

std::vector<GpuMemory> MemoryStats() { return {}; }

void EmptyCache() {}

std::unique_ptr<Graph> Capture(const c10::Stream&, Graph*, const std::function<void()>&) {
  TORCH_CHECK(false, "CUDA graphs need a libtorch built with CUDA");
  return nullptr;
}

}  // namespace model_server::handlers::cuda_support

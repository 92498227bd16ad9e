// cuda_support for a libtorch with CUDA (the PyPI wheel's; scripts/build_torch2.sh).

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "handlers/torch/cuda_support.h"

namespace model_server::handlers::cuda_support {
namespace {

class CudaGraph final : public Graph {
 public:
  void Replay() override { graph.replay(); }

  at::cuda::CUDAGraph graph;
};

}  // namespace

bool Compiled() { return true; }

std::vector<GpuMemory> MemoryStats() {
  std::vector<GpuMemory> devices;
  const int count = c10::cuda::device_count();
  for (int device = 0; device < count; ++device) {
    decltype(c10::cuda::CUDACachingAllocator::getDeviceStats(0)) stats;
    try {
      stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    } catch (const c10::Error&) {
      continue;  // the allocator has not been set up yet: nothing allocated, nothing to report
    }
    constexpr size_t kAggregate = 0;  // StatType::AGGREGATE: every pool
    GpuMemory memory;
    memory.device = device;
    memory.allocated_bytes = stats.allocated_bytes[kAggregate].current;
    memory.reserved_bytes = stats.reserved_bytes[kAggregate].current;
    memory.peak_allocated_bytes = stats.allocated_bytes[kAggregate].peak;
    memory.alloc_retries = stats.num_alloc_retries;
    memory.ooms = stats.num_ooms;
    devices.push_back(memory);
  }
  return devices;
}

void EmptyCache() { c10::cuda::CUDACachingAllocator::emptyCache(); }

std::unique_ptr<Graph> Capture(const c10::Stream& stream, Graph* share_pool_with,
                               const std::function<void()>& body) {
  auto captured = std::make_unique<CudaGraph>();
  const c10::cuda::CUDAStreamGuard guard(c10::cuda::CUDAStream(stream));
  // {0, 0}: a new private pool (the pool id type's namespace moved across libtorch versions).
  using PoolId = decltype(captured->graph.pool());
  const PoolId pool = share_pool_with != nullptr
                          ? static_cast<CudaGraph*>(share_pool_with)->graph.pool()
                          : PoolId{0, 0};
  captured->graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
  try {
    body();
  } catch (...) {
    try {
      captured->graph.capture_end();  // ends the stream's capture mode; the graph is dropped
    } catch (...) {
    }
    throw;
  }
  captured->graph.capture_end();
  return captured;
}

}  // namespace model_server::handlers::cuda_support

#include "handlers/torch/torch_faults.h"

#include <c10/util/Exception.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "handlers/torch/torch_signature.h"

// libtorch 2.8 added c10::AcceleratorError, thrown for CUDA runtime errors with their code.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
#define MODEL_SERVER_HAS_ACCELERATOR_ERROR 1
#else
#define MODEL_SERVER_HAS_ACCELERATOR_ERROR 0
#endif

namespace model_server::handlers {
namespace {

// CUDA runtime errors after which "the process must be terminated and relaunched"
// (driver_types.h), with cudaGetErrorString's text for those that have a stable one.
struct StickyError {
  int32_t code;
  const char* text;  // null: known by its code only
};
constexpr StickyError kStickyErrors[] = {
    {214, "uncorrectable ECC error encountered"},                     // cudaErrorECCUncorrectable
    {226, nullptr},                                                   // cudaErrorContained
    {700, "an illegal memory access was encountered"},                // cudaErrorIllegalAddress
    {702, "the launch timed out and was terminated"},                 // cudaErrorLaunchTimeout
    {710, "device-side assert triggered"},                            // cudaErrorAssert
    {714, "hardware stack error"},                                    // cudaErrorHardwareStackError
    {715, "an illegal instruction was encountered"},                  // cudaErrorIllegalInstruction
    {716, "misaligned address"},                                      // cudaErrorMisalignedAddress
    {717, "operation not supported on global/shared address space"},  // ...InvalidAddressSpace
    {718, "invalid program counter"},                                 // cudaErrorInvalidPc
    {719, "unspecified launch failure"},                              // cudaErrorLaunchFailure
    {721, nullptr},                                                   // cudaErrorTensorMemoryLeak
    {810, nullptr},  // cudaErrorMpsClientTerminated
    {911, nullptr},  // cudaErrorExternalDevice
};
constexpr int32_t kCudaErrorMemoryAllocation = 2;

constexpr const char* kOutOfMemoryTexts[] = {
    "CUDA out of memory",                          // the caching allocator
    "CUDA error: out of memory",                   // cudaErrorMemoryAllocation elsewhere
    "CUBLAS_STATUS_ALLOC_FAILED",                  // cuBLAS's workspace or handle
    "CUDNN_STATUS_ALLOC_FAILED",                   // cuDNN's
    "DefaultCPUAllocator: can't allocate memory",  // the CPU allocator
    "DefaultCPUAllocator: not enough memory",      // its older text
};

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// The line of `text` holding `part`, else the message's summary.
std::string LineWith(const std::string& text, absl::string_view part) {
  const size_t at = text.find(part.data(), 0, part.size());
  if (at == std::string::npos) return Summary(text.c_str());
  const size_t newline = text.rfind('\n', at);
  const size_t begin = newline == std::string::npos ? 0 : newline + 1;
  const size_t end = text.find('\n', at);
  return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// What in `text` says its class, or "" for none.
absl::string_view Marker(absl::string_view text, Fault* fault) {
  for (const char* marker : kOutOfMemoryTexts) {
    if (Contains(text, marker)) {
      *fault = Fault::kOutOfMemory;
      return marker;
    }
  }
  for (const StickyError& sticky : kStickyErrors) {
    if (sticky.text == nullptr) continue;
    const size_t at = text.find(sticky.text);
    // As c10's CUDA checks write it: "CUDA error: <cudaGetErrorString>".
    if (at != absl::string_view::npos && at >= 12 &&
        text.substr(at - 12, 12) == absl::string_view("CUDA error: ")) {
      *fault = Fault::kDeviceLost;
      return sticky.text;
    }
  }
  *fault = Fault::kNone;
  return "";
}

std::string MessageOf(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    return c10_error->what_without_backtrace();
  }
  return error.what();
}

}  // namespace

Fault ClassifyTorchErrorText(absl::string_view text) {
  Fault fault = Fault::kNone;
  Marker(text, &fault);
  return fault;
}

Fault ClassifyTorchError(const std::exception& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) return Fault::kOutOfMemory;
#if MODEL_SERVER_HAS_ACCELERATOR_ERROR
  if (const auto* accelerator = dynamic_cast<const c10::AcceleratorError*>(&error)) {
    const int32_t code = accelerator->get_error_code();
    if (code == kCudaErrorMemoryAllocation) return Fault::kOutOfMemory;
    const bool sticky = std::any_of(std::begin(kStickyErrors), std::end(kStickyErrors),
                                    [code](const StickyError& e) { return e.code == code; });
    if (sticky) return Fault::kDeviceLost;
  }
#endif
  return ClassifyTorchErrorText(MessageOf(error));
}

absl::Status TorchErrorStatus(const std::exception& error, absl::string_view context) {
  const std::string message = MessageOf(error);
  const Fault fault = ClassifyTorchError(error);
  Fault text_fault = Fault::kNone;
  const absl::string_view marker = Marker(message, &text_fault);
  const std::string line = marker.empty() ? Summary(message.c_str()) : LineWith(message, marker);
  const std::string text = absl::StrCat(context, ": ", line);
  switch (fault) {
    case Fault::kOutOfMemory:
      return OutOfMemoryError(text);
    case Fault::kDeviceLost:
      return DeviceLostError(text);
    case Fault::kNone:
      break;
  }
  return absl::InternalError(text);
}

}  // namespace model_server::handlers

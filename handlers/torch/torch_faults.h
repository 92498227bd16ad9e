#pragma once

// Which exceptions out of libtorch are faults the server acts on (handlers/fault.h), and the
// statuses they become. Torch-specific: only this folder includes it.

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "handlers/fault.h"

namespace model_server::handlers {

// The class of an exception a torch call threw:
//  - kOutOfMemory: c10::OutOfMemoryError (the CUDA caching allocator's), a c10::AcceleratorError
//    of cudaErrorMemoryAllocation, or such text ("CUDA out of memory", "CUDA error: out of
//    memory", cuBLAS/cuDNN ALLOC_FAILED, the CPU allocator's "can't allocate memory"): a smaller
//    batch may fit;
//  - kDeviceLost: a c10::AcceleratorError (libtorch >= 2.8) whose CUDA error code is one CUDA
//    documents as sticky (the process must be relaunched: an illegal address, a device-side
//    assert, a launch failure, ...), or a "CUDA error: <that error's text>" in the message of any
//    exception: TorchScript's interpreter rethrows what a forward threw as a plain
//    std::runtime_error with the original text, and libtorch < 2.8 has no accelerator class;
//  - kNone: anything else (the model's own error).
Fault ClassifyTorchError(const std::exception& error);

// The message's text classified as above (for exceptions of no known class).
Fault ClassifyTorchErrorText(absl::string_view text);

// The status for `error`, thrown by what `context` names ("model forward failed"): INTERNAL with
// the message's last line for kNone; OutOfMemoryError / DeviceLostError (handlers/fault.h) with
// the line that says so otherwise.
absl::Status TorchErrorStatus(const std::exception& error, absl::string_view context);

}  // namespace model_server::handlers

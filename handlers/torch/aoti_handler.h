#pragma once

// The AOTInductor handler: serves .pt2 packages (torch.export + aoti_compile_and_package) through
// libtorch's AOTIModelPackageLoader, in builds against libtorch >= 2.6. Free of torch includes,
// like torch_handler.h; a build without the loader compiles aoti_unavailable.cc instead, whose
// AotiUnavailable() says why.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "handlers/model_handler.h"

namespace model_server::handlers {

// A package loaded once for several instances (its code and weights in memory once), each
// instance running on one of its runners. Opaque; made by MakeSharedAotiPackage.
class SharedAotiPackage;

struct AotiHandlerOptions {
  // The .pt2 file.
  std::string package_path;
  // cpu, cuda, cuda:N, or auto (the device the package was compiled for; cuda:0 for CUDA).
  std::string device = "auto";
  // torch intra-op threads (process-wide); 0 leaves libtorch's default.
  int torch_threads = 1;
  // The largest batch the server builds (the configuration's max_batch_size or the server's
  // limit); the package's own maximum lowers it.
  int64_t max_batch_rows = 4096;
  // The model's inputs, outputs and batching as its configuration declares them; nullopt: the
  // package's metadata (scripts/export_model.py), else its compiled input checks and a probe run.
  std::optional<ModelSignature> signature;
  // Instances given the same object share one loader (one runner each, created with as many
  // runners as the object was made for); null: this instance loads the package alone.
  std::shared_ptr<SharedAotiPackage> shared;
};

// A handler that serves an AOTInductor package.
//
// Initialize unpacks the package into a directory of its own under $TMPDIR (/tmp when unset;
// model_server-pt2-XXXXXX, removed again by Cleanup, on a failed load, and at exit), loads it
// with torch::inductor::AOTIModelPackageLoader (constructions serialised process-wide: they race
// inside libtorch) and settles the signature: the declared one, else the package's model_server.*
// metadata (inputs, outputs, batch range, seed mapping), else its compiled input checks (inputs
// INPUT__<i>) and outputs OUTPUT__<i> as a probe run gives them. The batch range is the
// metadata's, else the checks': the signature's max_batch_size is the smaller of max_batch_rows
// and the package's maximum; a package that takes a static batch, or none of up to
// max_batch_rows rows, is refused; batches below the package's minimum run padded to it.
// Declared inputs that differ from the package's checks are refused, naming the input. Warm-up
// runs the batch sizes the server will build. Errors: a clear message naming the file (missing,
// not a .pt2 package, corrupt, compiled for another device, a directory under $TMPDIR that
// cannot be made).
std::unique_ptr<ModelHandler> MakeAotiHandler(const AotiHandlerOptions& options);

// A loader for `runners` instances to share (see AotiHandlerOptions::shared); null where the
// build has no AOTInductor support.
std::shared_ptr<SharedAotiPackage> MakeSharedAotiPackage(int runners);

// Empty where this build serves .pt2 packages; else why not and which build does, in one
// sentence.
std::string AotiUnavailable();

}  // namespace model_server::handlers

#pragma once

// Loads versions of PyTorch models for the ModelManager: a repository model's configuration
// (config.pbtxt) turned into the options of each of its handler instances, TorchScript
// (platform pytorch_libtorch) or AOTInductor (torch_aoti, .pt2). Free of torch headers (the
// handlers' headers are).

#include <vector>

#include "absl/status/statusor.h"
#include "handlers/torch/torch_handler.h"
#include "repository/model_repository.h"
#include "server/model_catalog.h"

namespace model_server::server {

struct TorchLoaderOptions {
  // What every instance gets unless the configuration says otherwise: the device (for
  // instance_group KIND_AUTO), precision, threads, the demo model's width, and the largest batch
  // of a model whose inputs are read from its file.
  handlers::TorchHandlerOptions handler;
  // Instances of a model whose configuration has no instance_group.
  int instances = 1;
  // The GPUs instances are spread over (devices 0..n-1); -1: those libtorch sees
  // (handlers::VisibleGpus).
  int visible_gpus = -1;
  // Instances of an AOTInductor package on one device share one loader (its code and weights
  // loaded once, one runner per instance); false: each instance loads the package itself.
  bool share_aoti_package = true;
};

// The options of each instance of `version` of `model`:
//  - the model file, or the demo model for an empty path;
//  - the configuration's inputs, outputs and max_batch_size as the declared signature when it
//    has any (without them, the handler reads them from the file, batching up to
//    max_batch_size, or the default when that is 0);
//  - the seed mapping from the configuration's parameters (seed_columns, seed_params,
//    seed_output: tensor names; input_var_order, output_var_order: comma-separated names;
//    default_params: comma-separated numbers, which make the params input optional), else the
//    mapping the signature allows by itself (handlers::DefaultSeedSignature);
//  - the PyTorch backend's parameters: DISABLE_OPTIMIZED_EXECUTION and INFERENCE_MODE set the
//    handler's optimized_execution and inference_mode; ENABLE_JIT_EXECUTOR,
//    ENABLE_JIT_PROFILING, ENABLE_TENSOR_FUSER (true) and ENABLE_NVFUSER, ENABLE_WEIGHT_SHARING,
//    ENABLE_CACHE_CLEANING (false) are accepted only at the value that changes nothing;
//  - placement, as Triton's instance_group says it: KIND_GPU puts `count` instances on each GPU
//    it lists (on each visible GPU when it lists none), KIND_CPU `count` on the CPU, KIND_AUTO
//    as KIND_GPU over every visible GPU when the default device is "auto" and there are GPUs,
//    else `count` on the default device; without instance_group, options.instances instances on
//    the default device, spread over the visible GPUs in turn (instance i on GPU i % n) when it
//    is "auto";
//  - each instance's stream key "<model>#<i>" (instance i keeps its CUDA stream across the
//    model's versions) and one TorchVersionShare for all of them (shared weights, one cache
//    release when the version retires).
// Errors: INVALID_ARGUMENT naming the model and the parameter, input or output that is wrong
// (an unknown parameter, a seed tensor that does not exist or has the wrong type or shape, an
// optional input without a default); FAILED_PRECONDITION for KIND_GPU without a GPU listed when
// none is visible, and for a .pt2 package where this build cannot load one (naming the build that
// can).
absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> InstanceOptions(
    const repository::RepositoryModel& model, const repository::VersionFile& version,
    const TorchLoaderOptions& options);

// Loads each instance that InstanceOptions describes and warms it up: a TorchScript handler, or
// for platform torch_aoti an AOTInductor handler (handlers/torch/aoti_handler.h) with the same
// file, device, threads, batch limit and declared signature.
VersionLoader MakeTorchLoader(TorchLoaderOptions options);

}  // namespace model_server::server

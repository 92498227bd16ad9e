#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// The signature of a model made for the seed protocol: inputs "x" FP32 [num_inputs] and, when it
// takes parameters, "params" FP32 [num_params] (optional, defaulting to default_params, when it
// has them), output "y" FP32 [num_outputs]; `seed` maps onto them.
ModelSignature SeedModelSignature(SeedSignature seed, int64_t max_batch_size);

// The seed mapping a signature allows by itself, for a model that batches: the columns come in
// an FP32 input of one fixed dimension [k] — the only input, or one of two whose other is named
// "params" and is FP32 [P] (the tunable parameters; optional with a default when the model has
// default parameters) — and go out in the first output that is FP32 of one fixed dimension [m].
// No default names. nullopt when the signature has no such shape.
std::optional<SeedSignature> DefaultSeedSignature(const ModelSignature& signature);

// The seed mapping a model's configuration declares: the names of the tensors that carry the
// columns, the parameters and the outputs, with the model's own variable names and default
// parameters.
struct SeedDeclaration {
  std::string columns;                    // input: FP32 [k]
  std::string params;                     // input: FP32 [P]; empty: none
  std::string output;                     // output: FP32 [m]
  std::vector<std::string> input_names;   // k names, or none
  std::vector<std::string> output_names;  // up to m names
  std::vector<float> default_params;      // P values, or none
};

// The keys that declare a seed mapping, as config.pbtxt parameters and as a .pt2 package's
// model_server.* metadata (scripts/export_model.py) give them: seed_columns, seed_params,
// seed_output (tensor names), input_var_order, output_var_order (comma-separated names),
// default_params (comma-separated numbers).
inline constexpr const char* kSeedParameterNames[] = {"seed_columns",     "seed_params",
                                                      "seed_output",      "input_var_order",
                                                      "output_var_order", "default_params"};

// The declaration that `parameters` give under the keys of kSeedParameterNames (other keys are
// not looked at); nullopt when none of them is there. Fields left out stay empty (the caller
// decides whether that is an error). INVALID_ARGUMENT for a default_params entry that is not a
// number.
absl::StatusOr<std::optional<SeedDeclaration>> ParseSeedParameters(
    const std::map<std::string, std::string>& parameters);

// Sets signature->seed as `declaration` says; default_params also make the params input
// optional with them as its default. The model must batch, the named tensors must exist and be
// FP32 of one fixed dimension, and every other input must be optional with a default.
// INVALID_ARGUMENT naming what does not fit.
absl::Status ApplySeedDeclaration(const SeedDeclaration& declaration, ModelSignature* signature);

// What differs between two signatures, in words ("input \"x\" FP32 [4] instead of FP32 [3],
// other output_var_order"); empty when nothing does.
std::string SignatureDifference(const ModelSignature& serving, const ModelSignature& next);

// Writes a made-up batch into `buffers` (one per input of `signature`, of `shapes`, as
// ModelHandler::PrepareBatch gives them): each input's default value repeated where it has one
// that tiles the input, zeros otherwise. For load-time checks and warm-ups.
void FillDefaultInputs(const ModelSignature& signature, const std::vector<Dims>& shapes,
                       const std::vector<char*>& buffers);

}  // namespace model_server::handlers

#pragma once

#include <optional>
#include <string>

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

// What differs between two signatures, in words ("input \"x\" FP32 [4] instead of FP32 [3],
// other output_var_order"); empty when nothing does.
std::string SignatureDifference(const ModelSignature& serving, const ModelSignature& next);

}  // namespace model_server::handlers

#pragma once

// What a TorchScript module says about its inputs and outputs, and how the tensors of a
// signature bind to its forward: the torch side of TorchHandler's signature (torch_handler.h
// states the conventions).

#include <torch/script.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// The torch type of `type`, and back (nullopt for a torch type without a wire type).
torch::ScalarType TorchType(DataType type);
std::optional<DataType> WireType(torch::ScalarType type);

// The line of a torch error message that says what went wrong.
std::string Summary(const char* message);

// The seed signature a module declares with its attributes (input_var_order, output_var_order,
// default_params, num_inputs, num_params): inputs x (and params), output y of unknown width
// (kAnySize, until a forward tells it); nullopt when it declares none of them. Errors name the
// attribute that is wrong.
absl::StatusOr<std::optional<ModelSignature>> SeedAttributeSignature(
    const torch::jit::Module& module, int64_t max_batch_size);

// Inputs read from forward: its tensor arguments, named as in forward, each typed and sized by
// the first layer it reaches (see torch_handler.h). Errors name the argument that cannot be read.
absl::StatusOr<std::vector<TensorSpec>> ReadInputs(const torch::jit::Module& module);

// For each input of `inputs`, the position of the forward argument it binds to (0 = the first
// after self): the argument of its name, else its "__<i>" index; where some input has neither,
// every input its place in `inputs` (Triton's third rule). Errors name the input or argument that
// does not bind.
absl::StatusOr<std::vector<size_t>> BindInputs(const torch::jit::Module& module,
                                               const std::vector<TensorSpec>& inputs);

// A forward's result as named tensors: a tensor is "OUTPUT__0"; a tuple or list gives
// OUTPUT__<i>; a dict its keys. Errors when it holds anything but tensors.
absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>> NamedOutputs(
    const c10::IValue& result);

// The tensors of `result` for `outputs`, in their order: a tensor for one output; a tuple or
// list by each output's "__<i>" index, else by position; a dict by name. Errors name the output
// that is missing.
absl::StatusOr<std::vector<torch::Tensor>> SelectOutputs(const c10::IValue& result,
                                                         const std::vector<TensorSpec>& outputs);

}  // namespace model_server::handlers

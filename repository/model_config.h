#pragma once

// Triton's model configuration (config.pbtxt, inference::ModelConfig from
// protos/model_config.proto) as this server reads it: parsing with line and column in every error,
// the checks that refuse what the server does not do (by field and model, never silently), and
// the conversion of a config's inputs and outputs to the tensor vocabulary of handlers/tensor.h.
// Pure functions: no files, no gRPC, no torch; callable from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "handlers/tensor.h"
#include "protos/model_config.pb.h"

namespace model_server::repository {

// Triton's names for the two kinds of PyTorch model and their default file names.
inline constexpr char kPlatformTorchScript[] = "pytorch_libtorch";  // model.pt
inline constexpr char kPlatformAoti[] = "torch_aoti";               // model.pt2
inline constexpr char kBackendPytorch[] = "pytorch";
inline constexpr char kTorchScriptFileName[] = "model.pt";
inline constexpr char kAotiFileName[] = "model.pt2";

// The longest max_queue_delay_microseconds accepted (one hour): longer delays would overflow a
// nanosecond clock's arithmetic and never make sense for a request with a deadline.
inline constexpr uint64_t kMaxQueueDelayMicroseconds = uint64_t{3600} * 1000 * 1000;
// The longest queue timeout accepted (default_timeout_microseconds; one day), for the same
// reason.
inline constexpr uint64_t kMaxQueueTimeoutMicroseconds = uint64_t{86400} * 1000 * 1000;
// The most dynamic_batching.priority_levels accepted: each level is a queue of its own and a
// metric series (batching::kMaxPriorityLevels).
inline constexpr uint64_t kMaxPriorityLevels = 64;
// The config `parameters` key that turns on the latency objective (beyond Triton): a p99 target
// in whole microseconds (1 to kMaxQueueDelayMicroseconds) that the batcher's delay and batch
// size then adapt to, in place of max_queue_delay_microseconds.
inline constexpr char kLatencyObjectiveParameter[] = "latency_objective_p99_microseconds";

// Parses `text` (protobuf text format of inference::ModelConfig). Errors are INVALID_ARGUMENT
// "<source_name>:<line>:<column>: <what>" (1-based; protobuf's parser places an error where it
// stopped, just after the offending name or value), e.g. an unknown field on line 7:
// `models/cnn/config.pbtxt:7:4: Message type "inference.ModelConfig" has no field named "foo".`
// Parsing checks only the syntax and the field names; ValidateModelConfig checks the meaning.
absl::StatusOr<inference::ModelConfig> ParseModelConfig(std::string_view text,
                                                        std::string_view source_name);

// OK when `name` may name a model: letters, digits, '_', '-' and '.', not starting with '.'
// (names become metric labels and folder names). Else INVALID_ARGUMENT saying which character.
absl::Status ValidateModelName(std::string_view name);

// Checks that the server can serve `config` as the model `model_name` (the name of its folder),
// first problem only, as INVALID_ARGUMENT `model "<model_name>": ...` naming the field:
//  - every field set that the server does not support, e.g. `config field sequence_batching is
//    not supported`;
//  - platform "pytorch_libtorch" or "torch_aoti", backend "pytorch" or empty (at least one set);
//  - `name`, when set, equal to model_name (Triton's rule);
//  - max_batch_size >= 0; inputs and outputs: a name (unique among inputs, among outputs), a
//    served data type, dims of rank >= 1 whose sizes are -1 (any) or > 0, a reshape of the same
//    element count; instance_group count >= 0 (0 means 1) and kind AUTO, GPU or CPU; the version
//    policy, dynamic_batching (its priority levels and queue policies included),
//    default_model_filename, parameters (kLatencyObjectiveParameter among them) and model_warmup
//    as repository/README.md describes.
// Inputs and outputs may be left out (the handler completes them from the model file).
absl::Status ValidateModelConfig(const inference::ModelConfig& config, std::string_view model_name);

// A config's inputs and outputs in the handlers' vocabulary.
struct ConfigSignature {
  std::vector<handlers::TensorSpec> inputs;   // in the config's order
  std::vector<handlers::TensorSpec> outputs;  // in the config's order
  // 0: the model takes no batch dimension (dims are whole shapes); > 0: every input and output
  // has a batch dimension first, not included in dims, of at most this size.
  int64_t max_batch_size = 0;
};

// The TensorSpecs of `config`'s inputs and outputs (reshaped set where the config has a reshape;
// optional from the input; no default_value: Triton's config has none). INVALID_ARGUMENT, as
// ValidateModelConfig words it, for an input or output it would refuse.
absl::StatusOr<ConfigSignature> SignatureFromConfig(const inference::ModelConfig& config);

// Writes `signature` into `config` as Triton would report it: replaces input, output and
// max_batch_size (for the config the server settled on after completing a model's inputs and
// outputs from its file). SignatureFromConfig gives `signature` back.
void WriteSignature(const ConfigSignature& signature, inference::ModelConfig* config);

// The data type a config's TYPE_* names; nullopt for TYPE_INVALID and the refused types
// (TYPE_UINT16, TYPE_UINT32, TYPE_UINT64, TYPE_STRING).
std::optional<handlers::DataType> FromConfigDataType(inference::DataType type);
inference::DataType ToConfigDataType(handlers::DataType type);

// The latency objective kLatencyObjectiveParameter sets, in microseconds; nullopt when the
// parameter is absent or not valid (ValidateModelConfig refuses that).
std::optional<uint64_t> LatencyObjectiveMicroseconds(const inference::ModelConfig& config);

// The file each version folder holds: default_model_filename when set, else model.pt2 for
// torch_aoti and model.pt for anything else.
std::string_view ModelFileName(const inference::ModelConfig& config);

}  // namespace model_server::repository

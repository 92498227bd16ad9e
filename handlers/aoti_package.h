#pragma once

// What an AOTInductor package (.pt2, torch.export + aoti_compile_and_package) says about the
// tensors it takes and the batch sizes it accepts, read without torch: from the metadata that
// scripts/export_model.py writes into it (model_server.* keys, returned by the loader's
// get_metadata()) and from the input checks AOTInductor compiles into its wrapper source. The
// AOTI handler (handlers/torch/aoti_handler.cc) builds its signature and batch plan from these.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_types.h"

namespace model_server::handlers {

// The metadata keys scripts/export_model.py writes (besides the seed's, kSeedParameterNames
// under the same prefix).
inline constexpr char kMetadataPrefix[] = "model_server.";
inline constexpr char kMetadataInputs[] = "model_server.inputs";
inline constexpr char kMetadataOutputs[] = "model_server.outputs";
inline constexpr char kMetadataMinBatch[] = "model_server.min_batch_size";
inline constexpr char kMetadataMaxBatch[] = "model_server.max_batch_size";

// One dimension of an input as the package's compiled checks state it: a size, or a range
// (max nullopt: no upper bound).
struct CheckedDim {
  int64_t min = 0;
  std::optional<int64_t> max;

  bool fixed() const { return max && *max == min; }
};

// One input as the package's compiled checks state it.
struct CheckedInput {
  // The element type; nullopt when the checks name none or one no protocol carries (then
  // `type_name` says which).
  std::optional<DataType> type;
  std::string type_name;  // AOTInductor's name ("float32"); empty when not stated
  // Every dimension up to the highest one checked.
  std::vector<CheckedDim> dims;
};

// The inputs, in order, as the checks that AOTInductor compiles into the package's wrapper
// source (<hash>.wrapper.cpp) state them: element type and, per dimension, its size or range
// (the checks it runs only with AOTI_RUNTIME_CHECK_INPUTS=1). Empty when the source holds no
// such checks. Their lower bounds can be stricter than the export asked for (2 where
// torch.export.Dim said 1: PyTorch specialises sizes 0 and 1; 16 for a small CNN whose Dim said
// 1), so the metadata's range comes first where a package has it.
std::vector<CheckedInput> ReadInputChecks(std::string_view wrapper_source);

// The model_server.* metadata of a package (all optional).
struct ServerMetadata {
  std::vector<TensorSpec> inputs;   // per row (no batch dimension); empty: not stated
  std::vector<TensorSpec> outputs;  // likewise
  std::optional<int64_t> min_batch_size;
  std::optional<int64_t> max_batch_size;
  // The seed's keys (kSeedParameterNames without the prefix) and their values.
  std::map<std::string, std::string> seed;
};

// Reads the model_server.* keys of `metadata` (other keys are not looked at). INVALID_ARGUMENT
// naming the key for a value that does not parse, an unknown model_server.* key, or a batch
// range that is empty or below 1.
absl::StatusOr<ServerMetadata> ReadServerMetadata(
    const std::map<std::string, std::string>& metadata);

// "x FP32 [3]; params FP32 [5]" (per-row shapes; -1 for a variable size) as specs, and back.
absl::StatusOr<std::vector<TensorSpec>> ParseSpecList(const std::string& text);
std::string SpecListText(const std::vector<TensorSpec>& specs);

// The batch sizes a package accepts.
struct BatchRange {
  int64_t min = 1;
  std::optional<int64_t> max;  // nullopt: no upper bound
  // Where the range comes from, for messages: "its metadata" or "its compiled input checks".
  std::string source;
};

// The range of the package's batch dimension: its metadata's where it states one (bounds it
// leaves out come from the checks), else what the checks say of dimension 0 of every input
// (the tightest of them). `checks_enforced` (AOTI_RUNTIME_CHECK_INPUTS set: the package then
// refuses whatever its checks do) narrows the metadata's range to the checks'. INVALID_ARGUMENT
// when the checks give an input no batch dimension or state no range at all and the metadata
// none either ("cannot tell").
absl::StatusOr<BatchRange> PackageBatchRange(const ServerMetadata& metadata,
                                             const std::vector<CheckedInput>& checks,
                                             bool checks_enforced = false);

// Whether the packages this process loads check their inputs at run time: the environment
// variable AOTI_RUNTIME_CHECK_INPUTS set to anything but empty or "0" (read once by each
// package, at its first run).
bool RuntimeInputChecksEnabled();

// How batches of up to `max_batch_size` rows (the configuration's or the server's limit) run on
// a package that accepts `range`.
struct BatchPlan {
  // The largest batch the server builds: the smaller of max_batch_size and range.max.
  int64_t max_batch_size = 0;
  // Rows a batch is padded to when it has fewer (copies of its first row, whose outputs are
  // dropped): range.min; 1 when the package takes any batch from 1 row.
  int64_t pad_to = 1;
};

// INVALID_ARGUMENT, naming the fix, for a static batch dimension (range.min == range.max: a
// package exported without torch.export.Dim) and for a range no batch of up to
// max_batch_size rows fits (range.min > max_batch_size).
absl::StatusOr<BatchPlan> PlanBatches(const BatchRange& range, int64_t max_batch_size);

// What differs between `inputs` (a signature's, per row when `batches`) and what the package's
// checks state, in words ("input \"x\": FP32 [n, 4] where the package takes [n, 3]"); empty
// when nothing does or there are no checks.
std::string CheckedDifference(const std::vector<TensorSpec>& inputs, bool batches,
                              const std::vector<CheckedInput>& checks);

// The element type of AOTInductor's dtype name ("float32", "int64", "bool", ...).
std::optional<DataType> AotiTypeFromName(std::string_view name);

}  // namespace model_server::handlers

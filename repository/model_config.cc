#include "repository/model_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace model_server::repository {
namespace {

using handlers::DataType;
using handlers::Dims;
using handlers::TensorSpec;
using inference::ModelConfig;

// Debian's Abseil has its own string_view (not std::string_view's alias).
absl::string_view View(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Keeps the parser's first error with its place; the parser stops there anyway.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  explicit FirstError(std::string_view source) : source_(source) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!error_.empty()) return;
    error_ = absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message);
  }

  const std::string& error() const { return error_; }

 private:
  std::string source_;
  std::string error_;
};

// `text` quoted for a message, non-printable bytes escaped (names come from files and requests).
std::string Quoted(std::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(View(text)), "\"");
}

// Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): protobuf's string
// fields must hold it for the config to go out in a ModelConfig response.
bool IsUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code;
    if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code = byte & 0x1F;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code = byte & 0x0F;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code = byte & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kSmallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

// The served types, for messages.
std::string ServedTypes() {
  std::vector<std::string> names;
  for (const DataType type : handlers::kAllDataTypes) {
    names.push_back(inference::DataType_Name(ToConfigDataType(type)));
  }
  return absl::StrJoin(names, ", ");
}

// Errors about one model: `model "<name>": <what>`.
class Refusal {
 public:
  explicit Refusal(std::string_view model) : model_(model) {}

  absl::Status operator()(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("model ", Quoted(model_), ": ", View(what)));
  }
  absl::Status Unsupported(std::string_view field) const {
    return (*this)(absl::StrCat("config field ", View(field), " is not supported"));
  }

 private:
  std::string model_;
};

// A plain file name inside a model's folder: no folder part, not "." or "..".
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

template <typename Repeated>
Dims ToDims(const Repeated& values) {
  return Dims(values.begin(), values.end());
}

// Checks one input's or output's dims and reshape; `what` is `input "x"` or `output "y"`.
absl::Status CheckShape(const Refusal& refuse, const std::string& what, const Dims& dims,
                        const inference::ModelTensorReshape* reshape) {
  if (dims.empty()) {
    return refuse(absl::StrCat(what,
                               ": dims is empty; a tensor has rank >= 1 (for a model that takes "
                               "a scalar, write dims: [ 1 ] and reshape: { shape: [ ] })"));
  }
  Dims fixed;  // the sizes that are not -1
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] != handlers::kAnySize && dims[i] <= 0) {
      return refuse(absl::StrCat(what, ": dims ", handlers::DimsText(dims), " has ", dims[i],
                                 " at position ", i,
                                 "; a dimension is -1 (any size) or greater than 0"));
    }
    if (dims[i] != handlers::kAnySize) fixed.push_back(dims[i]);
  }
  const std::optional<int64_t> count = handlers::ElementCount(fixed);
  if (!count) {
    return refuse(
        absl::StrCat(what, ": dims ", handlers::DimsText(dims), " hold too many elements"));
  }
  if (reshape == nullptr) return absl::OkStatus();
  const Dims shape = ToDims(reshape->shape());
  Dims reshape_fixed;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != handlers::kAnySize && shape[i] <= 0) {
      return refuse(absl::StrCat(what, ": reshape ", handlers::DimsText(shape), " has ", shape[i],
                                 " at position ", i,
                                 "; a dimension is -1 (any size) or greater than 0"));
    }
    if (shape[i] != handlers::kAnySize) reshape_fixed.push_back(shape[i]);
  }
  const size_t variable = dims.size() - fixed.size();
  const size_t reshape_variable = shape.size() - reshape_fixed.size();
  if (variable != reshape_variable || handlers::ElementCount(reshape_fixed) != count) {
    return refuse(absl::StrCat(
        what, ": reshape ", handlers::DimsText(shape), " does not hold the same elements as dims ",
        handlers::DimsText(dims), " (same product of the fixed sizes, same number of -1)"));
  }
  return absl::OkStatus();
}

absl::Status CheckDataType(const Refusal& refuse, const std::string& what,
                           inference::DataType type) {
  if (type == inference::TYPE_INVALID) return refuse(absl::StrCat(what, ": data_type is missing"));
  if (!FromConfigDataType(type)) {
    const std::string name = inference::DataType_IsValid(type) ? inference::DataType_Name(type)
                                                               : absl::StrCat(int{type});
    return refuse(absl::StrCat(what, ": data_type ", name,
                               " is not supported (served: ", ServedTypes(), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckTensorName(const Refusal& refuse, std::string_view kind, const std::string& name,
                             std::set<std::string>* seen) {
  if (name.empty()) return refuse(absl::StrCat("an ", View(kind), " has no name"));
  if (!IsUtf8(name))
    return refuse(absl::StrCat(View(kind), " ", Quoted(name), ": name is not UTF-8"));
  if (!seen->insert(name).second) {
    return refuse(absl::StrCat("two ", View(kind), "s are named ", Quoted(name)));
  }
  return absl::OkStatus();
}

absl::Status CheckInput(const Refusal& refuse, const inference::ModelInput& input,
                        std::set<std::string>* seen) {
  if (absl::Status status = CheckTensorName(refuse, "input", input.name(), seen); !status.ok()) {
    return status;
  }
  const std::string what = absl::StrCat("input ", Quoted(input.name()));
  if (input.is_shape_tensor()) {
    return refuse(absl::StrCat(what, ": field is_shape_tensor is not supported (TensorRT only)"));
  }
  if (input.allow_ragged_batch()) {
    return refuse(absl::StrCat(what, ": field allow_ragged_batch is not supported"));
  }
  if (input.is_non_linear_format_io()) {
    return refuse(
        absl::StrCat(what, ": field is_non_linear_format_io is not supported (TensorRT only)"));
  }
  if (absl::Status status = CheckDataType(refuse, what, input.data_type()); !status.ok()) {
    return status;
  }
  const Dims dims = ToDims(input.dims());
  if (absl::Status status =
          CheckShape(refuse, what, dims, input.has_reshape() ? &input.reshape() : nullptr);
      !status.ok()) {
    return status;
  }
  if (!inference::ModelInput::Format_IsValid(input.format())) {
    return refuse(absl::StrCat(what, ": format ", int{input.format()}, " is not a format"));
  }
  if (input.format() != inference::ModelInput::FORMAT_NONE && dims.size() != 3) {
    return refuse(absl::StrCat(
        what, ": format ", inference::ModelInput::Format_Name(input.format()),
        " needs three dims (without the batch dimension), not ", handlers::DimsText(dims)));
  }
  return absl::OkStatus();
}

absl::Status CheckOutput(const Refusal& refuse, const inference::ModelOutput& output,
                         std::set<std::string>* seen) {
  if (absl::Status status = CheckTensorName(refuse, "output", output.name(), seen); !status.ok()) {
    return status;
  }
  const std::string what = absl::StrCat("output ", Quoted(output.name()));
  if (!output.label_filename().empty()) {
    return refuse(
        absl::StrCat(what,
                     ": field label_filename is not supported (the classification extension is not "
                     "served)"));
  }
  if (output.is_shape_tensor()) {
    return refuse(absl::StrCat(what, ": field is_shape_tensor is not supported (TensorRT only)"));
  }
  if (output.is_non_linear_format_io()) {
    return refuse(
        absl::StrCat(what, ": field is_non_linear_format_io is not supported (TensorRT only)"));
  }
  if (absl::Status status = CheckDataType(refuse, what, output.data_type()); !status.ok()) {
    return status;
  }
  return CheckShape(refuse, what, ToDims(output.dims()),
                    output.has_reshape() ? &output.reshape() : nullptr);
}

absl::Status CheckPlatform(const Refusal& refuse, const ModelConfig& config) {
  const std::string& platform = config.platform();
  const std::string& backend = config.backend();
  if (!backend.empty() && backend != kBackendPytorch) {
    return refuse(absl::StrCat("backend ", Quoted(backend), " is not supported (served: \"",
                               kBackendPytorch, "\")"));
  }
  if (!platform.empty() && platform != kPlatformTorchScript && platform != kPlatformAoti) {
    return refuse(absl::StrCat("platform ", Quoted(platform), " is not supported (served: \"",
                               kPlatformTorchScript, "\" for TorchScript, \"", kPlatformAoti,
                               "\" for AOTInductor packages)"));
  }
  if (platform.empty() && backend.empty()) {
    return refuse(absl::StrCat("config sets neither platform nor backend (platform: \"",
                               kPlatformTorchScript, "\" or \"", kPlatformAoti, "\")"));
  }
  return absl::OkStatus();
}

// The fields of Triton's that the server does not do at all.
absl::Status CheckUnsupported(const Refusal& refuse, const ModelConfig& config) {
  if (config.has_sequence_batching()) return refuse.Unsupported("sequence_batching");
  if (config.has_ensemble_scheduling()) return refuse.Unsupported("ensemble_scheduling");
  if (config.has_optimization()) return refuse.Unsupported("optimization");
  if (config.batch_input_size() > 0) return refuse.Unsupported("batch_input");
  if (config.batch_output_size() > 0) return refuse.Unsupported("batch_output");
  if (config.model_transaction_policy().decoupled()) {
    return refuse.Unsupported("model_transaction_policy.decoupled");
  }
  if (config.has_model_operations()) return refuse.Unsupported("model_operations");
  if (config.has_model_repository_agents()) return refuse.Unsupported("model_repository_agents");
  if (!config.cc_model_filenames().empty()) return refuse.Unsupported("cc_model_filenames");
  if (!config.metric_tags().empty()) return refuse.Unsupported("metric_tags");
  if (!config.runtime().empty()) return refuse.Unsupported("runtime");
  if (config.has_model_metrics()) return refuse.Unsupported("model_metrics");
  return absl::OkStatus();
}

absl::Status CheckVersionPolicy(const Refusal& refuse, const ModelConfig& config) {
  const inference::ModelVersionPolicy& policy = config.version_policy();
  if (policy.has_latest() && policy.latest().num_versions() == 0) {
    return refuse("version_policy.latest.num_versions must be at least 1");
  }
  if (policy.has_specific()) {
    if (policy.specific().versions_size() == 0) {
      return refuse("version_policy.specific lists no versions");
    }
    std::set<int64_t> seen;
    for (const int64_t version : policy.specific().versions()) {
      if (version <= 0) {
        return refuse(absl::StrCat("version_policy.specific lists version ", version,
                                   "; versions are folder numbers >= 1"));
      }
      if (!seen.insert(version).second) {
        return refuse(absl::StrCat("version_policy.specific lists version ", version, " twice"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckInstanceGroups(const Refusal& refuse, const ModelConfig& config) {
  for (int i = 0; i < config.instance_group_size(); ++i) {
    const inference::ModelInstanceGroup& group = config.instance_group(i);
    const std::string what = absl::StrCat("instance_group[", i, "]");
    if (group.count() < 0) {
      return refuse(absl::StrCat(what, ".count is ", group.count(), "; it must be >= 1"));
    }
    if (group.kind() == inference::ModelInstanceGroup::KIND_MODEL) {
      return refuse(absl::StrCat(what,
                                 ".kind KIND_MODEL is not supported (KIND_AUTO, KIND_GPU "
                                 "or KIND_CPU)"));
    }
    if (!inference::ModelInstanceGroup::Kind_IsValid(group.kind())) {
      return refuse(absl::StrCat(what, ".kind ", int{group.kind()}, " is not a kind"));
    }
    if (group.kind() == inference::ModelInstanceGroup::KIND_CPU && group.gpus_size() > 0) {
      return refuse(absl::StrCat(what, " is KIND_CPU and lists gpus"));
    }
    for (const int32_t gpu : group.gpus()) {
      if (gpu < 0) return refuse(absl::StrCat(what, ".gpus lists ", gpu));
    }
    if (group.profile_size() > 0) return refuse.Unsupported(absl::StrCat(what, ".profile"));
    if (group.has_rate_limiter()) return refuse.Unsupported(absl::StrCat(what, ".rate_limiter"));
    if (group.passive()) return refuse.Unsupported(absl::StrCat(what, ".passive"));
    if (group.secondary_devices_size() > 0) {
      return refuse.Unsupported(absl::StrCat(what, ".secondary_devices"));
    }
    if (!group.host_policy().empty()) {
      return refuse.Unsupported(absl::StrCat(what, ".host_policy"));
    }
    if (!IsUtf8(group.name())) return refuse(absl::StrCat(what, ".name is not UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status CheckQueuePolicy(const Refusal& refuse, const std::string& what,
                              const inference::ModelQueuePolicy& policy) {
  if (!inference::ModelQueuePolicy::TimeoutAction_IsValid(policy.timeout_action())) {
    return refuse(absl::StrCat(what, ".timeout_action ", int{policy.timeout_action()},
                               " is not an action (REJECT or DELAY)"));
  }
  if (policy.default_timeout_microseconds() > kMaxQueueTimeoutMicroseconds) {
    return refuse(absl::StrCat(what, ".default_timeout_microseconds ",
                               policy.default_timeout_microseconds(), " is over ",
                               kMaxQueueTimeoutMicroseconds, " (one day)"));
  }
  return absl::OkStatus();
}

absl::Status CheckDynamicBatching(const Refusal& refuse, const ModelConfig& config) {
  if (!config.has_dynamic_batching()) return absl::OkStatus();
  const inference::ModelDynamicBatching& batching = config.dynamic_batching();
  for (const int32_t size : batching.preferred_batch_size()) {
    if (size < 1 || size > config.max_batch_size()) {
      return refuse(absl::StrCat("dynamic_batching.preferred_batch_size ", size,
                                 " is not between 1 and max_batch_size (", config.max_batch_size(),
                                 ")"));
    }
  }
  if (batching.max_queue_delay_microseconds() > kMaxQueueDelayMicroseconds) {
    return refuse(absl::StrCat("dynamic_batching.max_queue_delay_microseconds ",
                               batching.max_queue_delay_microseconds(), " is over ",
                               kMaxQueueDelayMicroseconds, " (one hour)"));
  }
  if (batching.preserve_ordering()) {
    return refuse.Unsupported("dynamic_batching.preserve_ordering");
  }
  const uint64_t levels = batching.priority_levels();
  if (levels > kMaxPriorityLevels) {
    return refuse(absl::StrCat("dynamic_batching.priority_levels ", levels, " is over ",
                               kMaxPriorityLevels,
                               " (each level is a queue of its own and a metric series)"));
  }
  const std::string range = absl::StrCat("the priority levels 1..", levels);
  const uint64_t default_level = batching.default_priority_level();
  if (levels == 0 && default_level != 0) {
    return refuse(absl::StrCat("dynamic_batching.default_priority_level ", default_level,
                               " needs dynamic_batching.priority_levels (there are none)"));
  }
  if (levels > 0 && (default_level < 1 || default_level > levels)) {
    return refuse(absl::StrCat("dynamic_batching.default_priority_level ", default_level,
                               " is outside ", range,
                               " (with priority_levels it must name one of them)"));
  }
  if (absl::Status status = CheckQueuePolicy(refuse, "dynamic_batching.default_queue_policy",
                                             batching.default_queue_policy());
      !status.ok()) {
    return status;
  }
  // In level order, so that the first problem reported does not depend on the map's order.
  const std::map<uint64_t, inference::ModelQueuePolicy> policies(
      batching.priority_queue_policy().begin(), batching.priority_queue_policy().end());
  for (const auto& [level, policy] : policies) {
    if (levels == 0) {
      return refuse(absl::StrCat("dynamic_batching.priority_queue_policy names priority level ",
                                 level, " but there are no dynamic_batching.priority_levels"));
    }
    if (level < 1 || level > levels) {
      return refuse(absl::StrCat("dynamic_batching.priority_queue_policy names priority level ",
                                 level, ", outside ", range));
    }
    if (absl::Status status = CheckQueuePolicy(
            refuse, absl::StrCat("dynamic_batching.priority_queue_policy[", level, "]"), policy);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckWarmup(const Refusal& refuse, const ModelConfig& config) {
  for (const inference::ModelWarmup& warmup : config.model_warmup()) {
    if (warmup.name().empty()) return refuse("a model_warmup sample has no name");
    if (!IsUtf8(warmup.name())) return refuse("a model_warmup sample's name is not UTF-8");
    const std::string what = absl::StrCat("model_warmup ", Quoted(warmup.name()));
    const uint32_t most = config.max_batch_size() > 0 ? config.max_batch_size() : 1;
    if (warmup.batch_size() < 1 || warmup.batch_size() > most) {
      return refuse(
          absl::StrCat(what, ": batch_size ", warmup.batch_size(), " is not between 1 and ", most));
    }
    for (const auto& [name, input] : warmup.inputs()) {
      const std::string input_what = absl::StrCat(what, ": input ", Quoted(name));
      if (absl::Status status = CheckDataType(refuse, input_what, input.data_type());
          !status.ok()) {
        return status;
      }
      const Dims dims = ToDims(input.dims());
      for (const int64_t size : dims) {
        if (size < 0) {
          return refuse(
              absl::StrCat(input_what, ": dims ", handlers::DimsText(dims), " must be sizes >= 0"));
        }
      }
      if (!handlers::ElementCount(dims, int64_t{1} << 32)) {
        return refuse(absl::StrCat(input_what, ": dims ", handlers::DimsText(dims),
                                   " hold too many elements"));
      }
      switch (input.input_data_type_case()) {
        case inference::ModelWarmup::Input::kZeroData:
        case inference::ModelWarmup::Input::kRandomData:
          break;
        case inference::ModelWarmup::Input::kInputDataFile:
          if (!IsPlainFileName(input.input_data_file())) {
            return refuse(absl::StrCat(input_what, ": input_data_file ",
                                       Quoted(input.input_data_file()),
                                       " is not a file name (the file lies in the model's "
                                       "warmup/ folder)"));
          }
          break;
        case inference::ModelWarmup::Input::INPUT_DATA_TYPE_NOT_SET:
          return refuse(absl::StrCat(input_what,
                                     ": sets none of zero_data, random_data and input_data_file"));
      }
      if (config.input_size() == 0) continue;  // inputs completed from the model later
      const inference::ModelInput* declared = nullptr;
      for (const inference::ModelInput& candidate : config.input()) {
        if (candidate.name() == name) declared = &candidate;
      }
      if (declared == nullptr) {
        return refuse(absl::StrCat(input_what, " is not an input of the model"));
      }
      if (declared->data_type() != input.data_type()) {
        return refuse(absl::StrCat(
            input_what, ": data_type ", inference::DataType_Name(input.data_type()),
            " differs from the input's ", inference::DataType_Name(declared->data_type())));
      }
      const Dims expected = ToDims(declared->dims());
      bool fits = expected.size() == dims.size();
      for (size_t i = 0; fits && i < dims.size(); ++i) {
        fits = expected[i] == handlers::kAnySize || expected[i] == dims[i];
      }
      if (!fits) {
        return refuse(absl::StrCat(input_what, ": dims ", handlers::DimsText(dims),
                                   " do not fit the input's dims ", handlers::DimsText(expected)));
      }
    }
    for (const inference::ModelInput& declared : config.input()) {
      if (!declared.optional() && warmup.inputs().count(declared.name()) == 0) {
        return refuse(absl::StrCat(what, ": gives no data for input ", Quoted(declared.name())));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckParameters(const Refusal& refuse, const ModelConfig& config) {
  for (const auto& [key, value] : config.parameters()) {
    if (key.empty()) return refuse("parameters has an empty key");
    if (!IsUtf8(key) || !IsUtf8(value.string_value())) {
      return refuse(absl::StrCat("parameters ", Quoted(key), " is not UTF-8"));
    }
  }
  const auto objective = config.parameters().find(kLatencyObjectiveParameter);
  if (objective == config.parameters().end()) return absl::OkStatus();
  if (!LatencyObjectiveMicroseconds(config)) {
    return refuse(absl::StrCat(
        "parameters ", kLatencyObjectiveParameter, " ", Quoted(objective->second.string_value()),
        " is not a whole number of microseconds from 1 to ", kMaxQueueDelayMicroseconds));
  }
  if (!config.has_dynamic_batching()) {
    return refuse(absl::StrCat("parameters ", kLatencyObjectiveParameter,
                               " needs dynamic_batching (the objective sets its delay and batch "
                               "size)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text, std::string_view source_name) {
  ModelConfig config;
  FirstError errors(source_name);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  // ParseFromString takes a ConstStringParam (a std::string in protobuf 3.21).
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(errors.error().empty()
                                          ? absl::StrCat(View(source_name), ": does not parse")
                                          : errors.error());
  }
  return config;
}

absl::Status ValidateModelName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("a model name is empty");
  if (name.front() == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("model name ", Quoted(name), " starts with '.'"));
  }
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!allowed) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model name ", Quoted(name), " has the character ", Quoted(std::string_view(&c, 1)),
          "; a model name is letters, digits, '_', '-' and '.' (it becomes a "
          "metric label)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelConfig(const ModelConfig& config, std::string_view model_name) {
  if (absl::Status status = ValidateModelName(model_name); !status.ok()) return status;
  const Refusal refuse(model_name);
  if (!config.name().empty() && config.name() != model_name) {
    return refuse(absl::StrCat("config names the model ", Quoted(config.name()),
                               "; the name must be the model's folder name (or left out)"));
  }
  if (absl::Status status = CheckPlatform(refuse, config); !status.ok()) return status;
  if (absl::Status status = CheckUnsupported(refuse, config); !status.ok()) return status;
  if (config.max_batch_size() < 0) {
    return refuse(absl::StrCat("max_batch_size is ", config.max_batch_size(),
                               "; it is 0 (no batching) or more"));
  }
  if (absl::Status status = CheckVersionPolicy(refuse, config); !status.ok()) return status;
  std::set<std::string> seen;
  for (const inference::ModelInput& input : config.input()) {
    if (absl::Status status = CheckInput(refuse, input, &seen); !status.ok()) return status;
  }
  seen.clear();
  for (const inference::ModelOutput& output : config.output()) {
    if (absl::Status status = CheckOutput(refuse, output, &seen); !status.ok()) return status;
  }
  if (absl::Status status = CheckInstanceGroups(refuse, config); !status.ok()) return status;
  if (absl::Status status = CheckDynamicBatching(refuse, config); !status.ok()) return status;
  if (!config.default_model_filename().empty() &&
      !IsPlainFileName(config.default_model_filename())) {
    return refuse(absl::StrCat("default_model_filename ", Quoted(config.default_model_filename()),
                               " is not a file name (it names a file in each version folder)"));
  }
  if (absl::Status status = CheckParameters(refuse, config); !status.ok()) return status;
  return CheckWarmup(refuse, config);
}

absl::StatusOr<ConfigSignature> SignatureFromConfig(const ModelConfig& config) {
  const Refusal refuse(config.name());
  if (config.max_batch_size() < 0) {
    return refuse(absl::StrCat("max_batch_size is ", config.max_batch_size(),
                               "; it is 0 (no batching) or more"));
  }
  ConfigSignature signature;
  signature.max_batch_size = config.max_batch_size();
  std::set<std::string> seen;
  for (const inference::ModelInput& input : config.input()) {
    if (absl::Status status = CheckInput(refuse, input, &seen); !status.ok()) return status;
    TensorSpec spec;
    spec.name = input.name();
    spec.type = *FromConfigDataType(input.data_type());
    spec.dims = ToDims(input.dims());
    spec.reshaped = input.has_reshape();
    if (spec.reshaped) spec.reshape = ToDims(input.reshape().shape());
    spec.optional = input.optional();
    signature.inputs.push_back(std::move(spec));
  }
  seen.clear();
  for (const inference::ModelOutput& output : config.output()) {
    if (absl::Status status = CheckOutput(refuse, output, &seen); !status.ok()) return status;
    TensorSpec spec;
    spec.name = output.name();
    spec.type = *FromConfigDataType(output.data_type());
    spec.dims = ToDims(output.dims());
    spec.reshaped = output.has_reshape();
    if (spec.reshaped) spec.reshape = ToDims(output.reshape().shape());
    signature.outputs.push_back(std::move(spec));
  }
  return signature;
}

void WriteSignature(const ConfigSignature& signature, ModelConfig* config) {
  config->clear_input();
  config->clear_output();
  config->set_max_batch_size(static_cast<int32_t>(signature.max_batch_size));
  for (const TensorSpec& spec : signature.inputs) {
    inference::ModelInput* input = config->add_input();
    input->set_name(spec.name);
    input->set_data_type(ToConfigDataType(spec.type));
    input->mutable_dims()->Add(spec.dims.begin(), spec.dims.end());
    if (spec.reshaped) {
      input->mutable_reshape()->mutable_shape()->Add(spec.reshape.begin(), spec.reshape.end());
    }
    input->set_optional(spec.optional);
  }
  for (const TensorSpec& spec : signature.outputs) {
    inference::ModelOutput* output = config->add_output();
    output->set_name(spec.name);
    output->set_data_type(ToConfigDataType(spec.type));
    output->mutable_dims()->Add(spec.dims.begin(), spec.dims.end());
    if (spec.reshaped) {
      output->mutable_reshape()->mutable_shape()->Add(spec.reshape.begin(), spec.reshape.end());
    }
  }
}

std::optional<DataType> FromConfigDataType(inference::DataType type) {
  switch (type) {
    case inference::TYPE_BOOL:
      return DataType::kBool;
    case inference::TYPE_UINT8:
      return DataType::kUint8;
    case inference::TYPE_INT8:
      return DataType::kInt8;
    case inference::TYPE_INT16:
      return DataType::kInt16;
    case inference::TYPE_INT32:
      return DataType::kInt32;
    case inference::TYPE_INT64:
      return DataType::kInt64;
    case inference::TYPE_FP16:
      return DataType::kFp16;
    case inference::TYPE_BF16:
      return DataType::kBf16;
    case inference::TYPE_FP32:
      return DataType::kFp32;
    case inference::TYPE_FP64:
      return DataType::kFp64;
    default:
      return std::nullopt;
  }
}

inference::DataType ToConfigDataType(DataType type) {
  switch (type) {
    case DataType::kBool:
      return inference::TYPE_BOOL;
    case DataType::kUint8:
      return inference::TYPE_UINT8;
    case DataType::kInt8:
      return inference::TYPE_INT8;
    case DataType::kInt16:
      return inference::TYPE_INT16;
    case DataType::kInt32:
      return inference::TYPE_INT32;
    case DataType::kInt64:
      return inference::TYPE_INT64;
    case DataType::kFp16:
      return inference::TYPE_FP16;
    case DataType::kBf16:
      return inference::TYPE_BF16;
    case DataType::kFp32:
      return inference::TYPE_FP32;
    case DataType::kFp64:
      return inference::TYPE_FP64;
  }
  return inference::TYPE_INVALID;
}

std::optional<uint64_t> LatencyObjectiveMicroseconds(const ModelConfig& config) {
  const auto found = config.parameters().find(kLatencyObjectiveParameter);
  if (found == config.parameters().end()) return std::nullopt;
  uint64_t microseconds = 0;
  if (!absl::SimpleAtoi(View(found->second.string_value()), &microseconds) || microseconds == 0 ||
      microseconds > kMaxQueueDelayMicroseconds) {
    return std::nullopt;
  }
  return microseconds;
}

std::string_view ModelFileName(const ModelConfig& config) {
  if (!config.default_model_filename().empty()) return config.default_model_filename();
  return config.platform() == kPlatformAoti ? kAotiFileName : kTorchScriptFileName;
}

}  // namespace model_server::repository

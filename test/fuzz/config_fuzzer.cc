// libFuzzer target: repository::ParseModelConfig on any text (config.pbtxt as a user or a broken
// copy may write it), then ValidateModelConfig and SignatureFromConfig on whatever parses.
//
// Checks, beyond "no crash, leak or UB":
//  - A parse error is INVALID_ARGUMENT starting "<source>:<line>:<column>: ".
//  - A config that parses prints (TextFormat) and parses back to the same message (NaN counted
//    equal to NaN: a float field may hold one).
//  - ValidateModelConfig, as the model "m" and as the model the config names, answers OK or
//    INVALID_ARGUMENT naming a model; it never crashes on any parsed message.
//  - A config that validates gives a signature: one TensorSpec per input and output, in order,
//    with the config's names; WriteSignature writes it back so that SignatureFromConfig gives the
//    same specs again.

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "repository/model_config.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace repository = model_server::repository;
using handlers_spec = model_server::handlers::TensorSpec;

constexpr char kSource[] = "fuzz/config.pbtxt";

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool SameSpec(const handlers_spec& a, const handlers_spec& b) {
  return a.name == b.name && a.type == b.type && a.dims == b.dims && a.reshaped == b.reshaped &&
         a.reshape == b.reshape && a.optional == b.optional && a.default_value == b.default_value;
}

void CheckValidation(const inference::ModelConfig& config, std::string_view model) {
  const absl::Status status = repository::ValidateModelConfig(config, model);
  if (status.ok()) return;
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  const std::string message(status.message());
  FUZZ_CHECK(StartsWith(message, "model ") || StartsWith(message, "a model"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<inference::ModelConfig> parsed = repository::ParseModelConfig(text, kSource);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(StartsWith(std::string(parsed.status().message()), std::string(kSource) + ":"));
    return 0;
  }
  const inference::ModelConfig& config = *parsed;

  // Printed and parsed back: the same message.
  std::string printed;
  FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(config, &printed));
  absl::StatusOr<inference::ModelConfig> reparsed = repository::ParseModelConfig(printed, kSource);
  FUZZ_CHECK(reparsed.ok());
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  FUZZ_CHECK(differencer.Compare(config, *reparsed));

  CheckValidation(config, "m");
  CheckValidation(config, config.name());

  const absl::Status valid = repository::ValidateModelConfig(config, "m");
  absl::StatusOr<repository::ConfigSignature> signature = repository::SignatureFromConfig(config);
  if (!valid.ok()) {
    if (!signature.ok())
      FUZZ_CHECK(signature.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(signature.ok());
  FUZZ_CHECK(signature->max_batch_size == config.max_batch_size());
  FUZZ_CHECK(signature->inputs.size() == static_cast<size_t>(config.input_size()));
  FUZZ_CHECK(signature->outputs.size() == static_cast<size_t>(config.output_size()));
  for (size_t i = 0; i < signature->inputs.size(); ++i) {
    FUZZ_CHECK(signature->inputs[i].name == config.input(static_cast<int>(i)).name());
  }
  for (size_t i = 0; i < signature->outputs.size(); ++i) {
    FUZZ_CHECK(signature->outputs[i].name == config.output(static_cast<int>(i)).name());
  }
  inference::ModelConfig written;
  repository::WriteSignature(*signature, &written);
  absl::StatusOr<repository::ConfigSignature> again = repository::SignatureFromConfig(written);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->max_batch_size == signature->max_batch_size);
  FUZZ_CHECK(again->inputs.size() == signature->inputs.size());
  FUZZ_CHECK(again->outputs.size() == signature->outputs.size());
  for (size_t i = 0; i < again->inputs.size(); ++i) {
    FUZZ_CHECK(SameSpec(again->inputs[i], signature->inputs[i]));
  }
  for (size_t i = 0; i < again->outputs.size(); ++i) {
    FUZZ_CHECK(SameSpec(again->outputs[i], signature->outputs[i]));
  }
  return 0;
}

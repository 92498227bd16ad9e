// Today's request decoder before the server-cost work (issue 11): simdjson's DOM, strict JSON.
// Kept as the oracle of the differential fuzzer (decode_fuzzer): protocol::DecodeRequest must
// accept what this accepts, with the same floats, and refuse what this refuses with the same
// error class — NaN and Infinity aside, which only the new decoder accepts.

#include "test/fuzz/dom_decoder.h"

#include <simdjson.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "protocol/seed_json.h"

namespace model_server::fuzz {
namespace {

using handlers::SeedSignature;
using protocol::kMaxJsonDepth;

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    // Sets the depth bound; capacity grows on demand and keeps this depth. A failed allocation
    // here is retried by the first parse.
    const simdjson::error_code allocated = p.allocate(64 * 1024, kMaxJsonDepth);
    static_cast<void>(allocated);
    return p;
  }();
  return parser;
}

absl::Status ParseError(simdjson::error_code error) {
  switch (error) {
    case simdjson::UTF8_ERROR:
      return absl::InvalidArgumentError("request is not valid UTF-8");
    case simdjson::DEPTH_ERROR:
      return absl::InvalidArgumentError(
          absl::StrCat("request JSON is nested deeper than ", kMaxJsonDepth, " levels"));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("request is not valid JSON: ", simdjson::error_message(error)));
  }
}

// The optional object at `key`; an absent key gives an empty optional, a non-object an error.
absl::StatusOr<std::optional<object>> OptionalObject(object parent, const char* key,
                                                     const char* path) {
  element value;
  if (parent.at_key(key).get(value) != simdjson::SUCCESS) return std::optional<object>();
  object result;
  if (value.get(result) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(path, " must be a JSON object"));
  }
  return std::optional<object>(result);
}

// Names from the request's `key` in modelParams if present, else the model's own.
absl::StatusOr<std::vector<std::string>> VarOrder(const std::optional<object>& model_params,
                                                  const char* key,
                                                  const std::vector<std::string>& model_default) {
  element value;
  if (!model_params || model_params->at_key(key).get(value) != simdjson::SUCCESS) {
    if (model_default.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request has no analyticSettings.modelParams.",
                                                     key, " and the model declares none"));
    }
    return model_default;
  }
  array names;
  if (value.get(names) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(key, " must be an array of strings"));
  }
  std::vector<std::string> result;
  for (element name : names) {
    std::string_view text;
    if (name.get(text) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(absl::StrCat(key, " must be an array of strings"));
    }
    result.emplace_back(text);
  }
  return result;
}

// Reads a numeric array into dst[0], dst[stride], ...; `what` names it in errors.
absl::Status ReadNumbers(array values, const std::string& what, float* dst, size_t stride) {
  size_t index = 0;
  for (element value : values) {
    double number;
    if (value.get_double().get(number) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(absl::StrCat(what, "[", index, "] is not a number"));
    }
    dst[index * stride] = static_cast<float>(number);
    ++index;
  }
  return absl::OkStatus();
}

absl::Status DecodeInputs(object inputs, const std::vector<std::string>& names, int64_t max_rows,
                          DomRequest& request) {
  const size_t columns = names.size();
  for (size_t column = 0; column < columns; ++column) {
    const std::string& name = names[column];
    element value;
    if (inputs.at_key(name).get(value) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input variable \"", name, "\" from input_var_order is missing from inputs"));
    }
    array values;
    if (value.get(values) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs.", name, " must be an array of numbers"));
    }
    const size_t rows = values.size();
    if (column == 0) {
      if (rows == 0) return absl::InvalidArgumentError("inputs have zero rows");
      if (rows > static_cast<uint64_t>(max_rows)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request has ", rows, " rows; this server takes at most ", max_rows, " per request"));
      }
      request.rows = static_cast<int64_t>(rows);
      request.inputs.resize(rows * columns);
    } else if (rows != static_cast<size_t>(request.rows)) {
      return absl::InvalidArgumentError(absl::StrCat("inputs.", name, " has ", rows,
                                                     " values but inputs.", names[0], " has ",
                                                     request.rows, "; columns must be equal"));
    }
    if (absl::Status read = ReadNumbers(values, absl::StrCat("inputs.", name),
                                        request.inputs.data() + column, columns);
        !read.ok()) {
      return read;
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeParams(const std::optional<object>& settings, const SeedSignature& signature,
                          DomRequest& request) {
  constexpr char kPath[] = "analyticSettings.tunableParams.bias_weight_array";
  std::optional<object> tunable;
  if (settings) {
    absl::StatusOr<std::optional<object>> found =
        OptionalObject(*settings, "tunableParams", "analyticSettings.tunableParams");
    if (!found.ok()) return found.status();
    tunable = *found;
  }
  element value;
  if (!tunable || tunable->at_key("bias_weight_array").get(value) != simdjson::SUCCESS) {
    if (signature.num_params > 0 && signature.default_params.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("request has no ", kPath, " and the model has no default parameters"));
    }
    request.params = signature.default_params;
    return absl::OkStatus();
  }
  array values;
  if (value.get(values) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(kPath, " must be an array of numbers"));
  }
  if (signature.num_params == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes no tunable parameters but the request gives ", kPath));
  }
  if (values.size() != static_cast<size_t>(signature.num_params)) {
    return absl::InvalidArgumentError(absl::StrCat(
        kPath, " has ", values.size(), " values but the model takes ", signature.num_params));
  }
  request.params.resize(values.size());
  return ReadNumbers(values, kPath, request.params.data(), 1);
}

}  // namespace

absl::StatusOr<DomRequest> DomDecodeRequest(std::string_view payload,
                                            const SeedSignature& signature, int64_t max_rows) {
  element root;
  if (simdjson::error_code error = ThreadParser().parse(payload.data(), payload.size()).get(root);
      error != simdjson::SUCCESS) {
    return ParseError(error);
  }
  object document;
  if (root.get(document) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request JSON must be an object");
  }

  absl::StatusOr<std::optional<object>> settings =
      OptionalObject(document, "analyticSettings", "analyticSettings");
  if (!settings.ok()) return settings.status();
  std::optional<object> model_params;
  if (*settings) {
    absl::StatusOr<std::optional<object>> found =
        OptionalObject(**settings, "modelParams", "analyticSettings.modelParams");
    if (!found.ok()) return found.status();
    model_params = *found;
  }

  absl::StatusOr<std::vector<std::string>> input_names =
      VarOrder(model_params, "input_var_order", signature.input_names);
  if (!input_names.ok()) return input_names.status();
  if (static_cast<int64_t>(input_names->size()) != signature.num_inputs) {
    return absl::InvalidArgumentError(absl::StrCat("input_var_order names ", input_names->size(),
                                                   " variables but the model takes ",
                                                   signature.num_inputs, " input columns"));
  }
  DomRequest request;
  absl::StatusOr<std::vector<std::string>> output_names =
      VarOrder(model_params, "output_var_order", signature.output_names);
  if (!output_names.ok()) return output_names.status();
  if (output_names->empty() || static_cast<int64_t>(output_names->size()) > signature.num_outputs) {
    return absl::InvalidArgumentError(absl::StrCat("output_var_order names ", output_names->size(),
                                                   " outputs but the model produces ",
                                                   signature.num_outputs));
  }
  request.output_names = *std::move(output_names);

  element inputs_value;
  object inputs;
  if (document.at_key("inputs").get(inputs_value) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request has no \"inputs\" object");
  }
  if (inputs_value.get(inputs) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("\"inputs\" must be a JSON object of columns");
  }
  if (absl::Status decoded = DecodeInputs(inputs, *input_names, max_rows, request); !decoded.ok()) {
    return decoded;
  }
  if (absl::Status decoded = DecodeParams(*settings, signature, request); !decoded.ok()) {
    return decoded;
  }
  return request;
}

}  // namespace model_server::fuzz

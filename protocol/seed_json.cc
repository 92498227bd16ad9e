#include "protocol/seed_json.h"

#include <simdjson.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "protocol/float_text.h"

namespace model_server::protocol {
namespace {

using handlers::InferenceRequest;
using handlers::ModelSignature;

// Shortest text that reads back as the same double; NaN and infinities as Python's json writes
// them, so the seed's clients read them back.
void AppendNumber(double value, std::string* out) {
  if (std::isnan(value)) {
    out->append("NaN");
  } else if (std::isinf(value)) {
    out->append(value > 0 ? "Infinity" : "-Infinity");
  } else {
    char text[32];
    const std::to_chars_result written = std::to_chars(text, text + sizeof(text), value);
    out->append(text, written.ptr);
  }
}

void AppendNumbers(const std::vector<double>& values, std::string* out) {
  out->push_back('[');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->append(", ");
    AppendNumber(values[i], out);
  }
  out->push_back(']');
}

// NaN, Infinity or -Infinity (as Python's json writes them) from a raw JSON token.
std::optional<double> NonFinite(std::string_view token) {
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\n' ||
                            token.back() == '\r')) {
    token.remove_suffix(1);
  }
  if (token == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (token == "Infinity") return std::numeric_limits<double>::infinity();
  if (token == "-Infinity") return -std::numeric_limits<double>::infinity();
  return std::nullopt;
}

absl::Status Malformed(std::string_view why) {
  return absl::InvalidArgumentError("malformed response: " + std::string(why));
}

}  // namespace

void EncodeResponse(const std::vector<std::string>& output_names, const float* outputs,
                    int64_t rows, int64_t stride, std::string* out) {
  out->clear();
  out->append("{\"prediction\": {");
  for (size_t column = 0; column < output_names.size(); ++column) {
    if (column > 0) out->append(", ");
    AppendJsonString(output_names[column], out);
    out->append(": [");
    // The numbers go straight into the string, sized once for the longest text of each.
    const size_t start = out->size();
    out->resize(start + rows * (kMaxFloatText + 2) + kFloatWriteRoom);
    char* const first = out->data() + start;
    char* end = first;
    for (int64_t row = 0; row < rows; ++row) {
      if (row > 0) {
        end[0] = ',';
        end[1] = ' ';
        end += 2;
      }
      end = WriteFloat(outputs[row * stride + column], end);
    }
    out->resize(start + (end - first));
    out->push_back(']');
  }
  out->append("}}");
}

std::string EncodeRequest(const Columns& inputs, const std::vector<double>& params,
                          const std::vector<std::string>& output_names) {
  std::string json = "{\"analyticSettings\": {\"modelParams\": {\"input_var_order\": [";
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) json.append(", ");
    AppendJsonString(inputs[i].first, &json);
  }
  json.push_back(']');
  if (!output_names.empty()) {
    json.append(", \"output_var_order\": [");
    for (size_t i = 0; i < output_names.size(); ++i) {
      if (i > 0) json.append(", ");
      AppendJsonString(output_names[i], &json);
    }
    json.push_back(']');
  }
  json.push_back('}');
  if (!params.empty()) {
    json.append(", \"tunableParams\": {\"bias_weight_array\": ");
    AppendNumbers(params, &json);
    json.push_back('}');
  }
  json.append("}, \"inputs\": {");
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) json.append(", ");
    AppendJsonString(inputs[i].first, &json);
    json.append(": ");
    AppendNumbers(inputs[i].second, &json);
  }
  json.append("}}");
  return json;
}

absl::StatusOr<Columns> DecodeResponse(std::string_view bytes) {
  // On-Demand, not the DOM: NaN and Infinity are not JSON, and only On-Demand lets a value that
  // is not a number be read as raw text.
  namespace od = simdjson::ondemand;
  const simdjson::padded_string padded(bytes);
  od::parser parser;
  od::document document;
  od::object prediction;
  if (parser.iterate(padded).get(document) != simdjson::SUCCESS ||
      document["prediction"].get_object().get(prediction) != simdjson::SUCCESS) {
    return Malformed("no \"prediction\" object");
  }
  Columns columns;
  for (auto field : prediction) {
    std::string_view key;
    od::array values;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) return Malformed("not JSON");
    if (field.value().get_array().get(values) != simdjson::SUCCESS) {
      return Malformed("prediction." + std::string(key) + " is not an array");
    }
    std::vector<double> numbers;
    for (auto value : values) {
      double number;
      if (value.get_double().get(number) != simdjson::SUCCESS) {
        std::string_view raw;
        std::optional<double> non_finite;
        if (value.raw_json_token().get(raw) == simdjson::SUCCESS) non_finite = NonFinite(raw);
        if (!non_finite) return Malformed("prediction." + std::string(key) + " holds a non-number");
        number = *non_finite;
      }
      numbers.push_back(number);
    }
    if (!columns.empty() && numbers.size() != columns.front().second.size()) {
      return Malformed("prediction columns differ in length");
    }
    columns.emplace_back(std::string(key), std::move(numbers));
  }
  return columns;
}

absl::StatusOr<size_t> RequestRows(std::string_view request_json) {
  simdjson::dom::parser parser;
  simdjson::dom::object inputs;
  if (parser.parse(request_json.data(), request_json.size())["inputs"].get(inputs) !=
      simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request has no \"inputs\" object");
  }
  for (const auto field : inputs) {
    simdjson::dom::array values;
    if (field.value.get(values) != simdjson::SUCCESS) break;
    return values.size();
  }
  return absl::InvalidArgumentError("request's first input is not an array");
}

void AppendJsonString(std::string_view text, std::string* out) {
  out->push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned char>(c));
          out->append(escaped);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void AppendJsonNumber(double value, std::string* out) { AppendNumber(value, out); }
void AppendJsonNumber(float value, std::string* out) {
  char text[kFloatWriteRoom];
  out->append(text, WriteFloat(value, text));
}

}  // namespace model_server::protocol

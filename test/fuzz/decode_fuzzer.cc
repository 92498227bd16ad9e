// libFuzzer target: protocol::DecodeRequest on arbitrary bytes, against three model signatures
// that take the decoder down its different paths (the README's demo model; a model with no
// default names and no parameters; a model with parameters but no defaults).
//
// Checks, beyond "no crash, leak or UB":
//  - Differential: the decoder agrees with the one it replaced (fuzz::DomDecodeRequest, simdjson
//    DOM, kept as the oracle): both accept or both refuse (INVALID_ARGUMENT), and an accepted
//    request has the same rows, the same floats bit for bit, the same parameters and names. The
//    oracle is strict JSON, so it is given the payload with every NaN, Infinity and -Infinity
//    token outside strings replaced by 0; where it read 0 for such a token, the decoder must
//    have read that non-finite value.
//  - The contract the batch thread relies on without checking: rows >= 1, inputs.size() == rows
//    * num_inputs, params of num_params values, 1..num_outputs output names.
//  - The encoder against an independent oracle: EncodeResponse's text for the decoded values is
//    byte for byte what std::to_chars writes (plus Python's NaN/Infinity spellings).
//  - A round trip: the request rebuilt from EncodeResponse's text decodes to the same rows,
//    values, parameters and names.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "handlers/model_types.h"
#include "protocol/seed_json.h"
#include "test/fuzz/dom_decoder.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace handlers = model_server::handlers;
namespace protocol = model_server::protocol;
using handlers::InferenceRequest;
using handlers::ModelSignature;

std::vector<ModelSignature> Signatures() {
  ModelSignature demo;  // the README's demo model
  demo.input_names = {"x_1", "x_2", "x_3"};
  demo.output_names = {"y_1"};
  demo.num_inputs = 3;
  demo.num_outputs = 1;
  demo.num_params = 5;
  demo.default_params = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};

  ModelSignature bare;  // names must come from the request; forward(x) only
  bare.num_inputs = 2;
  bare.num_outputs = 3;

  ModelSignature no_defaults;  // tunableParams required
  no_defaults.input_names = {"x_1", "x_2", "x_3"};
  no_defaults.output_names = {"y_1", "y_2"};
  no_defaults.num_inputs = 3;
  no_defaults.num_outputs = 2;
  no_defaults.num_params = 2;
  return {demo, bare, no_defaults};
}

// The payload for the strict oracle: each token outside strings that is exactly NaN, Infinity
// or -Infinity becomes 0. A token is a run of the characters numbers and literals are made of.
std::string StrictPayload(std::string_view payload, bool* replaced) {
  auto in_token = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '+' || c == '-' || c == '.';
  };
  std::string strict;
  *replaced = false;
  size_t i = 0;
  while (i < payload.size()) {
    const char c = payload[i];
    if (c == '"') {  // a string, copied as is up to its closing quote
      size_t end = i + 1;
      while (end < payload.size() && payload[end] != '"') end += payload[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, payload.size());
      strict.append(payload.substr(i, end - i));
      i = end;
    } else if (in_token(c)) {
      size_t end = i;
      while (end < payload.size() && in_token(payload[end])) ++end;
      const std::string_view token = payload.substr(i, end - i);
      if (token == "NaN" || token == "Infinity" || token == "-Infinity") {
        strict.push_back('0');
        *replaced = true;
      } else {
        strict.append(token);
      }
      i = end;
    } else {
      strict.push_back(c);
      ++i;
    }
  }
  return strict;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// Equal bit for bit, or the oracle read 0 where the decoder read a NaN/Infinity token.
void CheckSameFloats(const std::vector<float>& decoded, const std::vector<float>& oracle) {
  FUZZ_CHECK(decoded.size() == oracle.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    FUZZ_CHECK(SameBits(decoded[i], oracle[i]) || (!std::isfinite(decoded[i]) && oracle[i] == 0));
  }
}

void CheckAgainstOracle(std::string_view payload, const ModelSignature& signature,
                        const absl::StatusOr<InferenceRequest>& decoded) {
  bool replaced = false;
  const std::string strict = StrictPayload(payload, &replaced);
  const absl::StatusOr<InferenceRequest> oracle =
      model_server::fuzz::DomDecodeRequest(strict, signature);
  if (decoded.ok() != oracle.ok()) {
    std::fprintf(stderr, "decoder %s, oracle %s\n", decoded.status().ToString().c_str(),
                 oracle.status().ToString().c_str());
  }
  FUZZ_CHECK(decoded.ok() == oracle.ok());
  if (!decoded.ok()) {
    FUZZ_CHECK(decoded.status().code() == oracle.status().code());
    return;
  }
  FUZZ_CHECK(decoded->rows == oracle->rows);
  FUZZ_CHECK(decoded->output_names == oracle->output_names);
  CheckSameFloats(decoded->inputs, oracle->inputs);
  CheckSameFloats(decoded->params, oracle->params);
}

void CheckInvariants(const InferenceRequest& request, const ModelSignature& signature) {
  FUZZ_CHECK(request.rows >= 1);
  FUZZ_CHECK(request.inputs.size() == static_cast<size_t>(request.rows * signature.num_inputs));
  FUZZ_CHECK(request.params.size() == static_cast<size_t>(signature.num_params));
  FUZZ_CHECK(!request.output_names.empty());
  FUZZ_CHECK(request.output_names.size() <= static_cast<size_t>(signature.num_outputs));
}

// The encoder's independent oracle: std::to_chars, with Python's spellings of non-finite values.
std::string OracleNumbers(const std::vector<float>& values) {
  std::string text;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text.append(", ");
    const float value = values[i];
    if (std::isnan(value)) {
      text.append("NaN");
    } else if (std::isinf(value)) {
      text.append(value > 0 ? "Infinity" : "-Infinity");
    } else {
      char buffer[32];
      text.append(buffer, std::to_chars(buffer, buffer + sizeof(buffer), value).ptr);
    }
  }
  return text;
}

void CheckEncoder(const std::vector<float>& values) {
  std::string encoded;
  protocol::EncodeResponse({"y"}, values.data(), static_cast<int64_t>(values.size()), 1, &encoded);
  FUZZ_CHECK(encoded == "{\"prediction\": {\"y\": [" + OracleNumbers(values) + "]}}");
}

void AppendNames(const std::vector<std::string>& names, std::string* out) {
  out->push_back('[');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->append(", ");
    protocol::AppendJsonString(names[i], out);
  }
  out->push_back(']');
}

// The "{...}" after `{"prediction": ` in EncodeResponse's text.
std::string EncodedColumns(const std::vector<std::string>& names, const float* values, int64_t rows,
                           int64_t stride) {
  std::string encoded;
  protocol::EncodeResponse(names, values, rows, stride, &encoded);
  const std::string_view prefix = "{\"prediction\": ";
  FUZZ_CHECK(encoded.compare(0, prefix.size(), prefix) == 0);
  FUZZ_CHECK(encoded.back() == '}');
  return encoded.substr(prefix.size(), encoded.size() - prefix.size() - 1);
}

// Rebuilds the request from the encoder's text and checks it decodes to the same request. The
// input columns get names made from the (fuzzed) output names, so the encoder's escaping of
// arbitrary UTF-8 keys is checked against the decoder too.
void CheckRoundTrip(const InferenceRequest& request, const ModelSignature& signature) {
  std::vector<std::string> input_names;
  for (int64_t column = 0; column < signature.num_inputs; ++column) {
    input_names.push_back(request.output_names[column % request.output_names.size()] + "#" +
                          std::to_string(column));
  }
  std::string rebuilt = "{\"analyticSettings\": {\"modelParams\": {\"input_var_order\": ";
  AppendNames(input_names, &rebuilt);
  rebuilt.append(", \"output_var_order\": ");
  AppendNames(request.output_names, &rebuilt);
  rebuilt.append("}");
  if (signature.num_params > 0) {
    const std::string params =
        EncodedColumns({"bias_weight_array"}, request.params.data(), signature.num_params, 1);
    rebuilt.append(", \"tunableParams\": ").append(params);
  }
  rebuilt.append("}, \"inputs\": ");
  rebuilt.append(
      EncodedColumns(input_names, request.inputs.data(), request.rows, signature.num_inputs));
  rebuilt.append("}");

  absl::StatusOr<InferenceRequest> again = protocol::DecodeRequest(rebuilt, signature);
  if (!again.ok()) {
    std::fprintf(stderr, "round trip refused: %s\n%s\n", again.status().ToString().c_str(),
                 rebuilt.c_str());
  }
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->rows == request.rows);
  FUZZ_CHECK(again->params.size() == request.params.size());
  FUZZ_CHECK(again->output_names == request.output_names);
  // Equal values (NaN to NaN); "-0" reads back as 0, so not bit for bit.
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
    }
    return a.size() == b.size();
  };
  FUZZ_CHECK(same(again->inputs, request.inputs));
  FUZZ_CHECK(same(again->params, request.params));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ModelSignature> signatures = Signatures();
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  for (const ModelSignature& signature : signatures) {
    absl::StatusOr<InferenceRequest> request = protocol::DecodeRequest(payload, signature);
    CheckAgainstOracle(payload, signature, request);
    if (!request.ok()) {
      FUZZ_CHECK(request.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(!request.status().message().empty());
      continue;
    }
    CheckInvariants(*request, signature);
    CheckEncoder(request->inputs);
    CheckRoundTrip(*request, signature);
  }
  return 0;
}

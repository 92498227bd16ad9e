// libFuzzer target: protocol::DecodeRequest on arbitrary bytes, against four model signatures
// that take the decoder down its different paths (the README's demo model; a model with no
// default names and no parameters; a model with parameters but no defaults; a general model the
// seed mapping reaches through other input and output indices, with an extra optional INT64
// input and at most 5 rows a request).
//
// Checks, beyond "no crash, leak or UB":
//  - Differential: the decoder agrees with the one it replaced (fuzz::DomDecodeRequest, simdjson
//    DOM, kept as the oracle): both accept or both refuse (INVALID_ARGUMENT), and an accepted
//    request has the same rows, the same floats bit for bit, the same parameters and names. The
//    oracle is strict JSON, so it is given the payload with every NaN, Infinity and -Infinity
//    token outside strings replaced by 0; where it read 0 for such a token, the decoder must
//    have read that non-finite value.
//  - The contract the batch thread relies on without checking: 1 <= rows <= max_rows; one
//    InputTensor per input of the signature: the columns [rows, num_inputs] with rows *
//    num_inputs floats, the parameters one row [1, num_params] for every row, any other input
//    its default as one row for every row; 1..num_outputs output names.
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
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "handlers/model_types.h"
#include "handlers/signature.h"
#include "protocol/seed_json.h"
#include "test/fuzz/dom_decoder.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace handlers = model_server::handlers;
namespace protocol = model_server::protocol;
using handlers::DataType;
using handlers::Dims;
using handlers::InferenceRequest;
using handlers::InputTensor;
using handlers::ModelSignature;
using handlers::SeedSignature;
using protocol::SeedRequest;

// A model for the seed protocol and the most rows a request to it may have.
struct Model {
  ModelSignature signature;
  int64_t max_rows = std::numeric_limits<int64_t>::max();
};

std::vector<Model> Models() {
  SeedSignature demo;  // the README's demo model
  demo.input_names = {"x_1", "x_2", "x_3"};
  demo.output_names = {"y_1"};
  demo.num_inputs = 3;
  demo.num_outputs = 1;
  demo.num_params = 5;
  demo.default_params = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};

  SeedSignature bare;  // names must come from the request; forward(x) only
  bare.num_inputs = 2;
  bare.num_outputs = 3;

  SeedSignature no_defaults;  // tunableParams required
  no_defaults.input_names = {"x_1", "x_2", "x_3"};
  no_defaults.output_names = {"y_1", "y_2"};
  no_defaults.num_inputs = 3;
  no_defaults.num_outputs = 2;
  no_defaults.num_params = 2;

  // A general model the seed mapping reaches through other indices: an optional INT64 input
  // first (its default fills every row), the parameters before the columns, and the columns'
  // output second. At most 5 rows a request.
  ModelSignature general;
  general.max_batch_size = 8;
  handlers::TensorSpec flags = handlers::MakeSpec("flags", DataType::kInt64, {2});
  flags.optional = true;
  const int64_t flag_values[2] = {int64_t{1} << 40, -1};
  flags.default_value =
      std::string(reinterpret_cast<const char*>(flag_values), sizeof(flag_values));
  handlers::TensorSpec params = handlers::MakeSpec("params", DataType::kFp32, {2});
  params.optional = true;
  const float param_values[2] = {-0.0f, 3.5f};
  params.default_value =
      std::string(reinterpret_cast<const char*>(param_values), sizeof(param_values));
  general.inputs = {flags, params, handlers::MakeSpec("x", DataType::kFp32, {4})};
  general.outputs = {handlers::MakeSpec("ids", DataType::kInt64, {-1}),
                     handlers::MakeSpec("y", DataType::kFp32, {2})};
  SeedSignature seed;
  seed.columns_input = 2;
  seed.params_input = 1;
  seed.output = 1;
  seed.input_names = {"a", "b", "c", "d"};
  seed.num_inputs = 4;
  seed.num_outputs = 2;
  seed.num_params = 2;
  seed.default_params = {param_values[0], param_values[1]};
  general.seed = seed;

  return {{handlers::SeedModelSignature(demo, 4096)},
          {handlers::SeedModelSignature(bare, 4096)},
          {handlers::SeedModelSignature(no_defaults, 64)},
          {general, 5}};
}

// The payload for the strict oracle: each token outside strings that is exactly NaN, Infinity
// or -Infinity becomes 0. A token is a run of the characters numbers and literals are made of.
std::string StrictPayload(std::string_view payload, bool* replaced) {
  auto in_token = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
           c == '-' || c == '.';
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

// The floats of an FP32 tensor.
std::vector<float> Floats(const InputTensor& tensor) {
  FUZZ_CHECK(tensor.data.size() % sizeof(float) == 0);
  std::vector<float> values(tensor.data.size() / sizeof(float));
  if (!values.empty()) std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

// The request's columns and parameters as floats, in the oracle's terms.
struct Values {
  std::vector<float> inputs;
  std::vector<float> params;
};

Values ValuesOf(const SeedRequest& decoded, const SeedSignature& seed) {
  Values values;
  values.inputs = Floats(decoded.request.inputs[seed.columns_input]);
  if (seed.params_input) values.params = Floats(decoded.request.inputs[*seed.params_input]);
  return values;
}

// Equal bit for bit, or the oracle read 0 where the decoder read a NaN/Infinity token.
void CheckSameFloats(const std::vector<float>& decoded, const std::vector<float>& oracle) {
  FUZZ_CHECK(decoded.size() == oracle.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    FUZZ_CHECK(SameBits(decoded[i], oracle[i]) || (!std::isfinite(decoded[i]) && oracle[i] == 0));
  }
}

void CheckAgainstOracle(std::string_view payload, const Model& model,
                        const absl::StatusOr<SeedRequest>& decoded) {
  const SeedSignature& seed = *model.signature.seed;
  bool replaced = false;
  const std::string strict = StrictPayload(payload, &replaced);
  const absl::StatusOr<model_server::fuzz::DomRequest> oracle =
      model_server::fuzz::DomDecodeRequest(strict, seed, model.max_rows);
  if (decoded.ok() != oracle.ok()) {
    std::fprintf(stderr, "decoder %s, oracle %s\n", decoded.status().ToString().c_str(),
                 oracle.status().ToString().c_str());
  }
  FUZZ_CHECK(decoded.ok() == oracle.ok());
  if (!decoded.ok()) {
    FUZZ_CHECK(decoded.status().code() == oracle.status().code());
    return;
  }
  FUZZ_CHECK(decoded->request.rows == oracle->rows);
  FUZZ_CHECK(decoded->output_names == oracle->output_names);
  const Values values = ValuesOf(*decoded, seed);
  CheckSameFloats(values.inputs, oracle->inputs);
  CheckSameFloats(values.params, oracle->params);
}

// The contract the batch thread relies on without checking: one tensor per input of the
// signature; the columns [rows, num_inputs] of the request's own; the parameters one row
// [1, num_params] for all rows; every other input its default, one row for all rows; 1..
// num_outputs output names.
void CheckInvariants(const SeedRequest& decoded, const Model& model) {
  const ModelSignature& signature = model.signature;
  const SeedSignature& seed = *signature.seed;
  const InferenceRequest& request = decoded.request;
  FUZZ_CHECK(request.rows >= 1 && request.rows <= model.max_rows);
  FUZZ_CHECK(request.inputs.size() == signature.inputs.size());
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const InputTensor& input = request.inputs[i];
    if (i == seed.columns_input) {
      FUZZ_CHECK((input.shape == Dims{request.rows, seed.num_inputs}));
      FUZZ_CHECK(!input.broadcast);
      FUZZ_CHECK(input.data.size() == request.rows * seed.num_inputs * sizeof(float));
    } else if (seed.params_input == i) {
      FUZZ_CHECK((input.shape == Dims{1, seed.num_params}));
      FUZZ_CHECK(input.broadcast);
      FUZZ_CHECK(input.data.size() == seed.num_params * sizeof(float));
    } else {
      const handlers::TensorSpec& spec = signature.inputs[i];
      Dims shape = {1};
      shape.insert(shape.end(), spec.dims.begin(), spec.dims.end());
      FUZZ_CHECK(input.shape == shape);
      FUZZ_CHECK(input.broadcast);
      FUZZ_CHECK(spec.default_value && input.data == *spec.default_value);
    }
  }
  FUZZ_CHECK(!decoded.output_names.empty());
  FUZZ_CHECK(decoded.output_names.size() <= static_cast<size_t>(seed.num_outputs));
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
void CheckRoundTrip(const SeedRequest& decoded, const Model& model) {
  const SeedSignature& seed = *model.signature.seed;
  const Values values = ValuesOf(decoded, seed);
  const std::vector<std::string>& output_names = decoded.output_names;
  std::vector<std::string> input_names;
  for (int64_t column = 0; column < seed.num_inputs; ++column) {
    input_names.push_back(output_names[column % output_names.size()] + "#" +
                          std::to_string(column));
  }
  std::string rebuilt = "{\"analyticSettings\": {\"modelParams\": {\"input_var_order\": ";
  AppendNames(input_names, &rebuilt);
  rebuilt.append(", \"output_var_order\": ");
  AppendNames(output_names, &rebuilt);
  rebuilt.append("}");
  if (seed.num_params > 0) {
    const std::string params =
        EncodedColumns({"bias_weight_array"}, values.params.data(), seed.num_params, 1);
    rebuilt.append(", \"tunableParams\": ").append(params);
  }
  rebuilt.append("}, \"inputs\": ");
  rebuilt.append(
      EncodedColumns(input_names, values.inputs.data(), decoded.request.rows, seed.num_inputs));
  rebuilt.append("}");

  absl::StatusOr<SeedRequest> again =
      protocol::DecodeRequest(rebuilt, model.signature, model.max_rows);
  if (!again.ok()) {
    std::fprintf(stderr, "round trip refused: %s\n%s\n", again.status().ToString().c_str(),
                 rebuilt.c_str());
  }
  FUZZ_CHECK(again.ok());
  CheckInvariants(*again, model);
  FUZZ_CHECK(again->request.rows == decoded.request.rows);
  FUZZ_CHECK(again->output_names == output_names);
  const Values again_values = ValuesOf(*again, seed);
  // Equal values (NaN to NaN); "-0" reads back as 0, so not bit for bit.
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
    }
    return a.size() == b.size();
  };
  FUZZ_CHECK(same(again_values.inputs, values.inputs));
  FUZZ_CHECK(same(again_values.params, values.params));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Model> models = Models();
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  for (const Model& model : models) {
    absl::StatusOr<SeedRequest> decoded =
        protocol::DecodeRequest(payload, model.signature, model.max_rows);
    CheckAgainstOracle(payload, model, decoded);
    if (!decoded.ok()) {
      FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(!decoded.status().message().empty());
      continue;
    }
    CheckInvariants(*decoded, model);
    CheckEncoder(ValuesOf(*decoded, *model.signature.seed).inputs);
    CheckRoundTrip(*decoded, model);
  }
  return 0;
}

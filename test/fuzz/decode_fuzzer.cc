// libFuzzer target: protocol::DecodeRequest on arbitrary bytes, against three model signatures
// that take the decoder down its different paths (the README's demo model; a model with no
// default names and no parameters; a model with parameters but no defaults).
//
// Beyond "no crash, leak or UB", every accepted request must satisfy the contract the batch
// thread relies on without checking (rows >= 1, inputs.size() == rows * num_inputs, params of
// num_params values, 1..num_outputs output names), and must survive a round trip: the request
// rebuilt from EncodeResponse's text (the encoder the server answers with) decodes to the same
// rows, values, parameters and names.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "handlers/model_types.h"
#include "protocol/seed_json.h"
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

bool AllFinite(const std::vector<float>& values) {
  for (float value : values) {
    if (!std::isfinite(value)) return false;
  }
  return true;
}

void CheckInvariants(const InferenceRequest& request, const ModelSignature& signature) {
  FUZZ_CHECK(request.rows >= 1);
  FUZZ_CHECK(request.inputs.size() == static_cast<size_t>(request.rows * signature.num_inputs));
  FUZZ_CHECK(request.params.size() == static_cast<size_t>(signature.num_params));
  FUZZ_CHECK(!request.output_names.empty());
  FUZZ_CHECK(request.output_names.size() <= static_cast<size_t>(signature.num_outputs));
}

// Rebuilds the request from the encoder's text and checks it decodes to the same request. The
// input columns get names made from the (fuzzed) output names, so the encoder's escaping of
// arbitrary UTF-8 keys is checked against the decoder too. Only for finite values: the encoder
// writes NaN/Infinity as Python does, which strict JSON (and so the decoder) refuses by design.
void CheckRoundTrip(const InferenceRequest& request, const ModelSignature& signature) {
  if (!AllFinite(request.inputs) || !AllFinite(request.params)) return;
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
  FUZZ_CHECK(again->inputs == request.inputs);  // ==, not bytes: "-0" reads back as 0
  FUZZ_CHECK(again->params == request.params);
  FUZZ_CHECK(again->output_names == request.output_names);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ModelSignature> signatures = Signatures();
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  for (const ModelSignature& signature : signatures) {
    absl::StatusOr<InferenceRequest> request = protocol::DecodeRequest(payload, signature);
    if (!request.ok()) {
      FUZZ_CHECK(request.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(!request.status().message().empty());
      continue;
    }
    CheckInvariants(*request, signature);
    CheckRoundTrip(*request, signature);
  }
  return 0;
}

#include "model_client.h"

#include <charconv>
#include <thread>

#include "health.grpc.pb.h"
#include "simdjson.h"

namespace model_client {
namespace {

void AppendString(std::string_view text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out->append(escaped);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

// Shortest text that reads back as the same double.
void AppendNumber(double value, std::string* out) {
  char text[32];
  const std::to_chars_result written = std::to_chars(text, text + sizeof(text), value);
  out->append(text, written.ptr);
}

void AppendNumbers(const std::vector<double>& values, std::string* out) {
  out->push_back('[');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->append(", ");
    AppendNumber(values[i], out);
  }
  out->push_back(']');
}

void AppendStrings(const std::vector<std::string>& values, std::string* out) {
  out->push_back('[');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->append(", ");
    AppendString(values[i], out);
  }
  out->push_back(']');
}

absl::Status Malformed(std::string_view why) {
  return absl::InvalidArgumentError(std::string("malformed response: ") + std::string(why));
}

}  // namespace

const char kSeedServiceConfig[] = R"({
  "methodConfig": [{
    "name": [{"service": "ModelService"}, {"service": "grpc.health.v1.Health"}],
    "waitForReady": true,
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "1s",
      "maxBackoff": "30s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // Channels with different arguments never share a subchannel, hence a connection.
  args.SetInt("model_client.connection_index", options.connection_index);
  if (options.seed_retry_policy) {
    args.SetServiceConfigJSON(kSeedServiceConfig);
  } else {
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  }
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

std::string BuildRequestJson(const Columns& inputs, const std::vector<double>& params,
                             const std::vector<std::string>& output_names) {
  std::vector<std::string> input_names;
  for (const auto& column : inputs) input_names.push_back(column.first);
  std::string json = "{\"analyticSettings\": {\"modelParams\": {\"input_var_order\": ";
  AppendStrings(input_names, &json);
  if (!output_names.empty()) {
    json.append(", \"output_var_order\": ");
    AppendStrings(output_names, &json);
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
    AppendString(inputs[i].first, &json);
    json.append(": ");
    AppendNumbers(inputs[i].second, &json);
  }
  json.append("}}");
  return json;
}

absl::StatusOr<Columns> ParseResponseJson(std::string_view bytes) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(bytes.data(), bytes.size()).get(root) != simdjson::SUCCESS) {
    return Malformed("not JSON");
  }
  simdjson::dom::object prediction;
  if (root["prediction"].get(prediction) != simdjson::SUCCESS) {
    return Malformed("no \"prediction\" object");
  }
  Columns columns;
  for (const auto field : prediction) {
    simdjson::dom::array values;
    if (field.value.get(values) != simdjson::SUCCESS) {
      return Malformed("prediction." + std::string(field.key) + " is not an array");
    }
    std::vector<double> numbers;
    numbers.reserve(values.size());
    for (const simdjson::dom::element value : values) {
      double number;
      if (value.get(number) != simdjson::SUCCESS) {
        return Malformed("prediction." + std::string(field.key) + " holds a non-number");
      }
      numbers.push_back(number);
    }
    if (!columns.empty() && numbers.size() != columns.front().second.size()) {
      return Malformed("prediction columns differ in length");
    }
    columns.emplace_back(std::string(field.key), std::move(numbers));
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

absl::Status ToAbslStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds attempt_timeout) {
  constexpr int kAttempts = 5;
  auto stub = grpc::health::v1::Health::NewStub(channel);
  std::chrono::seconds backoff(1);
  absl::Status last;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + attempt_timeout);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = stub->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last = status.ok() ? absl::FailedPreconditionError("server health is not SERVING")
                       : ToAbslStatus(status);
    if (attempt < kAttempts) {
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::seconds(30));
    }
  }
  return last;
}

ModelClient::ModelClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(ModelService::NewStub(std::move(channel))) {}

absl::StatusOr<Columns> ModelClient::Evaluate(const Columns& inputs,
                                              const std::vector<double>& params,
                                              const std::vector<std::string>& output_names,
                                              std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  inRequest request;
  request.set_inp_dict_bytes(BuildRequestJson(inputs, params, output_names));
  outCalc reply;
  const grpc::Status status = stub_->EvaluateModel(&context, request, &reply);
  if (!status.ok()) return ToAbslStatus(status);
  return ParseResponseJson(reply.response_bytes());
}

}  // namespace model_client

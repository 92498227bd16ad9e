// model_bench: a load generator for the seed's ModelService and the Open Inference Protocol's
// ModelInfer (closed or open loop, sweeps, latency percentiles, JSON/CSV/HTML reports). Run with
// --help for the flags.

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <cxxopts.hpp>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/model_bench/built_in_payload.h"
#include "bench/model_bench/load_generator.h"
#include "bench/model_bench/report.h"
#include "clients/cpp/model_client.h"
#include "platform/cpus.h"
#include "protocol/oip.h"
#include "protocol/seed_json.h"
#include "protos/grpc_predict_v2.pb.h"
#include "protos/model_interface.pb.h"

namespace model_server::bench {
namespace {

struct Config {
  std::vector<std::string> targets;
  bool oip = false;        // --protocol oip: ModelInfer instead of EvaluateModel
  std::string model_name;  // OIP: the model_name of every request
  uint64_t priority = 0;   // OIP: the "priority" parameter of every request; 0: none
  // OIP: the request's tensors (--input), random data of these names, types and shapes; empty:
  // the built-in x and params.
  std::vector<protocol::oip::Tensor> inputs;
  int connections = 1;
  int threads = 1;
  std::vector<int> concurrencies;  // closed-loop steps
  std::vector<double> rates;       // open-loop steps
  LoadOptions load;
  int rows = 50;
  int vars = 3;
  bool distinct_params = false;
  std::string payload_file;
  std::string grpc_body_path;
  bool check = false;
  bool wait_for_health = true;
  std::string json_path, csv_path, report_path;
  std::vector<std::string> metrics_addresses;  // servers' GET /metrics endpoints
  Settings settings;
};

template <typename T>
std::vector<T> ParseList(const std::string& text) {
  std::vector<T> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (item.empty()) continue;
    std::istringstream parse(item);
    T value;
    if (!(parse >> value) || value <= 0) {
      throw cxxopts::exceptions::exception("bad list item '" + item + "' in " + text);
    }
    values.push_back(value);
  }
  return values;
}

// "NAME:DATATYPE:AxBxC" as a tensor of that shape, its data not yet filled.
absl::StatusOr<protocol::oip::Tensor> ParseInput(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input ", text, ": ", why, " (NAME:DATATYPE:SHAPE, e.g. x:FP32:64x3)"));
  };
  if (parts.size() != 3 || parts[0].empty()) return bad("not three parts");
  protocol::oip::Tensor tensor;
  tensor.name = parts[0];
  const std::optional<handlers::DataType> type = handlers::FromWireName(parts[1]);
  if (!type) return bad(absl::StrCat("unknown datatype ", parts[1]));
  tensor.type = *type;
  for (const absl::string_view size : absl::StrSplit(parts[2], 'x')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(size, &value) || value < 1) return bad("sizes must be positive");
    tensor.shape.push_back(value);
  }
  return tensor;
}

// `tensor` filled with random data of its type (variant `seed`).
protocol::oip::Tensor RandomTensor(protocol::oip::Tensor tensor, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<double> real(-1.0, 1.0);
  std::uniform_int_distribution<int> small(0, 7);
  int64_t count = 1;
  for (const int64_t size : tensor.shape) count *= size;
  const size_t width = handlers::ElementSize(tensor.type);
  tensor.data.assign(static_cast<size_t>(count) * width, '\0');
  char* out = tensor.data.data();
  for (int64_t i = 0; i < count; ++i, out += width) {
    switch (tensor.type) {
      case handlers::DataType::kFp32: {
        const float value = static_cast<float>(real(random));
        std::memcpy(out, &value, width);
        break;
      }
      case handlers::DataType::kFp64: {
        const double value = real(random);
        std::memcpy(out, &value, width);
        break;
      }
      case handlers::DataType::kFp16:  // 1.0, 1.5, ... as half: sign 0, exponent 15
      case handlers::DataType::kBf16: {
        const uint16_t bits = tensor.type == handlers::DataType::kFp16
                                  ? static_cast<uint16_t>(0x3C00 | (small(random) << 7))
                                  : static_cast<uint16_t>(0x3F80 | (small(random) << 4));
        std::memcpy(out, &bits, width);
        break;
      }
      case handlers::DataType::kBool:
        *out = static_cast<char>(small(random) & 1);
        break;
      default: {  // integers: little-endian [0, 8)
        const int64_t value = small(random);
        std::memcpy(out, &value, width);
        break;
      }
    }
  }
  return tensor;
}

std::chrono::milliseconds Seconds(double seconds) {
  return std::chrono::milliseconds(std::llround(seconds * 1000));
}

Config ParseFlags(int argc, char** argv) {
  cxxopts::Options options("model_bench",
                           "Load generator for the seed's gRPC ModelService and the Open Inference "
                           "Protocol's ModelInfer");
  // clang-format off
  options.add_options()
    ("target", "host:port of the server; several, comma-separated, share the load round-robin",
     cxxopts::value<std::string>()->default_value("127.0.0.1:13000"))
    ("protocol", "seed (ModelService.EvaluateModel, JSON) or oip (GRPCInferenceService."
     "ModelInfer, raw FP32 tensors)", cxxopts::value<std::string>()->default_value("seed"))
    ("model", "oip: the model_name of the requests",
     cxxopts::value<std::string>()->default_value("default"))
    ("connections", "HTTP/2 connections per target", cxxopts::value<int>()->default_value("1"))
    ("threads", "client threads (completion queues); 0 = CPUs this process may use",
     cxxopts::value<int>()->default_value("0"))
    ("concurrency", "closed loop: calls in flight", cxxopts::value<int>()->default_value("16"))
    ("rate", "open loop: requests/s (overrides --concurrency)",
     cxxopts::value<double>()->default_value("0"))
    ("arrivals", "open-loop arrivals: poisson or constant",
     cxxopts::value<std::string>()->default_value("poisson"))
    ("burst", "open loop in bursts ON_S,OFF_S: ON_S seconds at --rate, then OFF_S seconds at "
     "--burst-off-rate, again and again; latency is also reported by phase (in a burst, within "
     "a second after one, later)", cxxopts::value<std::string>()->default_value(""))
    ("burst-off-rate", "open loop with --burst: requests/s between bursts",
     cxxopts::value<double>()->default_value("0"))
    ("priority", "oip: the priority parameter of every request (1 is served first; 0: none)",
     cxxopts::value<uint64_t>()->default_value("0"))
    ("max-in-flight", "open loop: calls in flight at most",
     cxxopts::value<int>()->default_value("20000"))
    ("duration", "seconds measured per step", cxxopts::value<double>()->default_value("10"))
    ("warmup", "seconds of load per step before measuring",
     cxxopts::value<double>()->default_value("1"))
    ("requests", "stop each step after this many measured requests (instead of --duration)",
     cxxopts::value<int64_t>()->default_value("0"))
    ("timeout-ms", "per-call deadline", cxxopts::value<int>()->default_value("10000"))
    ("rows", "rows per request of the built-in payload", cxxopts::value<int>()->default_value("50"))
    ("vars", "inputs x_1..x_N of the built-in payload", cxxopts::value<int>()->default_value("3"))
    ("distinct-params", "give every request its own bias_weight_array")
    ("input", "oip: send this tensor instead of the built-in x and params, NAME:DATATYPE:SHAPE "
     "with the shape's sizes joined by x (INPUT__0:FP32:4x3x32x32; the first size is the "
     "request's rows); repeat for each input. Random data: floats in [-1, 1), integers in "
     "[0, 8), booleans", cxxopts::value<std::vector<std::string>>())
    ("payload", "instead of the built-in payload, seed: this file's bytes as inp_dict_bytes; "
     "oip: this file's serialized ModelInferRequest (any model's tensors; --model is ignored)",
     cxxopts::value<std::string>()->default_value(""))
    ("sweep-concurrency", "closed-loop steps, e.g. 1,4,16,64,256",
     cxxopts::value<std::string>()->default_value(""))
    ("sweep-rate", "open-loop steps in requests/s, e.g. 500,1000,2000",
     cxxopts::value<std::string>()->default_value(""))
    ("check", "verify every response decodes and has the expected shape")
    ("grpc-body", "write the first request as a length-prefixed gRPC message to FILE (a body "
     "for HTTP/2 tools such as h2load) and exit", cxxopts::value<std::string>()->default_value(""))
    ("metrics", "host:port of the servers' metrics endpoints (comma-separated): print each "
     "step's server-side queue and compute time", cxxopts::value<std::string>()->default_value(""))
    ("no-wait", "do not wait for the server's health to be SERVING first")
    ("json", "write the results as JSON to FILE", cxxopts::value<std::string>()->default_value(""))
    ("csv", "write the results as CSV to FILE", cxxopts::value<std::string>()->default_value(""))
    ("report", "write a self-contained HTML report to FILE",
     cxxopts::value<std::string>()->default_value(""))
    ("h,help", "show this help");
  // clang-format on
  try {
    const cxxopts::ParseResult flags = options.parse(argc, argv);
    if (flags.count("help") > 0) {
      std::cout << options.help() << std::endl;
      std::exit(0);
    }
    if (!flags.unmatched().empty()) {
      throw cxxopts::exceptions::exception("unexpected argument " + flags.unmatched().front());
    }
    Config config;
    std::stringstream targets(flags["target"].as<std::string>());
    for (std::string target; std::getline(targets, target, ',');) {
      if (!target.empty()) config.targets.push_back(target);
    }
    const std::string protocol = flags["protocol"].as<std::string>();
    if (protocol != "seed" && protocol != "oip") {
      throw cxxopts::exceptions::exception("--protocol must be seed or oip");
    }
    config.oip = protocol == "oip";
    config.model_name = flags["model"].as<std::string>();
    config.priority = flags["priority"].as<uint64_t>();
    if (config.priority > 0 && !config.oip) {
      throw cxxopts::exceptions::exception("--priority is for --protocol oip");
    }
    if (const std::string burst = flags["burst"].as<std::string>(); !burst.empty()) {
      const std::vector<double> phases = ParseList<double>(burst);
      if (phases.size() != 2) {
        throw cxxopts::exceptions::exception("--burst takes ON_S,OFF_S (two positive numbers)");
      }
      config.load.burst_on = Seconds(phases[0]);
      config.load.burst_off = Seconds(phases[1]);
    }
    config.load.burst_off_rate = flags["burst-off-rate"].as<double>();
    if (config.load.burst_off_rate < 0) {
      throw cxxopts::exceptions::exception("--burst-off-rate must not be negative");
    }
    config.connections = flags["connections"].as<int>();
    config.threads =
        flags["threads"].as<int>() > 0 ? flags["threads"].as<int>() : platform::UsableCpus();
    const std::string arrivals = flags["arrivals"].as<std::string>();
    if (arrivals != "poisson" && arrivals != "constant") {
      throw cxxopts::exceptions::exception("--arrivals must be poisson or constant");
    }
    config.load.poisson = arrivals == "poisson";
    config.load.max_in_flight = flags["max-in-flight"].as<int>();
    config.load.duration = Seconds(flags["duration"].as<double>());
    config.load.warmup = Seconds(flags["warmup"].as<double>());
    config.load.max_requests = flags["requests"].as<int64_t>();
    config.load.timeout = std::chrono::milliseconds(flags["timeout-ms"].as<int>());
    config.rows = flags["rows"].as<int>();
    config.vars = flags["vars"].as<int>();
    config.distinct_params = flags.count("distinct-params") > 0;
    if (flags.count("input") > 0) {
      if (!config.oip) throw cxxopts::exceptions::exception("--input is for --protocol oip");
      for (const std::string& text : flags["input"].as<std::vector<std::string>>()) {
        absl::StatusOr<protocol::oip::Tensor> tensor = ParseInput(text);
        if (!tensor.ok())
          throw cxxopts::exceptions::exception(std::string(tensor.status().message()));
        config.inputs.push_back(*std::move(tensor));
      }
      const int64_t rows = config.inputs.front().shape.front();
      for (const protocol::oip::Tensor& input : config.inputs) {
        if (input.shape.front() != rows) {
          throw cxxopts::exceptions::exception(
              "every --input needs the same first size (the request's rows)");
        }
      }
      config.rows = static_cast<int>(rows);
    }
    config.payload_file = flags["payload"].as<std::string>();
    if (!config.inputs.empty() && !config.payload_file.empty()) {
      throw cxxopts::exceptions::exception("--input or --payload, not both");
    }
    config.grpc_body_path = flags["grpc-body"].as<std::string>();
    config.concurrencies = ParseList<int>(flags["sweep-concurrency"].as<std::string>());
    config.rates = ParseList<double>(flags["sweep-rate"].as<std::string>());
    if (config.concurrencies.empty() && config.rates.empty()) {
      if (flags["rate"].as<double>() > 0) {
        config.rates.push_back(flags["rate"].as<double>());
      } else {
        config.concurrencies.push_back(flags["concurrency"].as<int>());
      }
    }
    config.check = flags.count("check") > 0;
    config.wait_for_health = flags.count("no-wait") == 0;
    config.json_path = flags["json"].as<std::string>();
    std::stringstream metrics(flags["metrics"].as<std::string>());
    for (std::string address; std::getline(metrics, address, ',');) {
      if (!address.empty()) config.metrics_addresses.push_back(address);
    }
    config.csv_path = flags["csv"].as<std::string>();
    config.report_path = flags["report"].as<std::string>();
    if (config.targets.empty() || config.connections < 1 || config.rows < 1 || config.vars < 1 ||
        config.load.max_in_flight < 1 || config.concurrencies.size() + config.rates.size() == 0) {
      throw cxxopts::exceptions::exception(
          "--target, --connections, --rows, --vars and --max-in-flight need positive values");
    }
    for (const auto& option : flags.arguments()) {
      config.settings.emplace_back(option.key(), option.value());
    }
    return config;
  } catch (const cxxopts::exceptions::exception& error) {
    std::cerr << "model_bench: " << error.what() << "\n\n" << options.help() << std::endl;
    std::exit(2);
  }
}

// The built-in payloads: x_1..x_vars columns of `rows` values and a 5-value bias_weight_array,
// varied per payload when every request gets its own parameters. Over OIP the same numbers, as
// x [rows, vars] and params [1, 5] in raw_input_contents.
std::vector<std::string> BuiltInPayloads(const Config& config) {
  std::vector<std::string> payloads;
  if (!config.inputs.empty()) {  // --input: 16 variants of random data
    for (uint32_t variant = 0; variant < 16; ++variant) {
      std::vector<protocol::oip::Tensor> tensors;
      for (size_t i = 0; i < config.inputs.size(); ++i) {
        tensors.push_back(RandomTensor(config.inputs[i], variant * 1000 + i));
      }
      inference::ModelInferRequest request =
          protocol::oip::EncodeInferRequest(config.model_name, tensors, /*raw=*/true);
      if (config.priority > 0) {
        (*request.mutable_parameters())["priority"].set_uint64_param(config.priority);
      }
      payloads.push_back(request.SerializeAsString());
    }
    return payloads;
  }
  const int count = config.distinct_params ? 257 : 1;
  for (int p = 0; p < count; ++p) {
    const BuiltInNumbers numbers =
        BuiltInRequest(config.rows, config.vars, p, config.distinct_params);
    const std::vector<double>& params = numbers.params;
    if (config.oip) {
      std::vector<float> x(static_cast<size_t>(config.rows) * config.vars);  // row-major
      for (int v = 0; v < config.vars; ++v) {
        for (int r = 0; r < config.rows; ++r) {
          x[static_cast<size_t>(r) * config.vars + v] =
              static_cast<float>(numbers.inputs[v].second[r]);
        }
      }
      const std::vector<float> params_fp32(params.begin(), params.end());
      inference::ModelInferRequest request = protocol::oip::EncodeInferRequest(
          config.model_name,
          {{protocol::oip::kInput, {config.rows, config.vars}, std::move(x)},
           {protocol::oip::kParams, {1, 5}, params_fp32}},
          /*raw=*/true);
      if (config.priority > 0) {
        (*request.mutable_parameters())["priority"].set_uint64_param(config.priority);
      }
      payloads.push_back(request.SerializeAsString());
      continue;
    }
    inRequest request;
    request.set_inp_dict_bytes(protocol::EncodeRequest(numbers.inputs, params, {"y_1"}));
    payloads.push_back(request.SerializeAsString());
  }
  return payloads;
}

// Built-in payloads must come back as y_1 (over OIP: y [rows, 1]) with one finite number per
// row; a --payload file's responses only need to decode.
std::function<absl::Status(const std::string&)> ResponseCheck(const Config& config) {
  const size_t rows = config.payload_file.empty() ? config.rows : 0;
  if (config.oip && !config.inputs.empty()) {
    // --input: every output decodes (its data matches its shape), has the request's rows and
    // finite floating-point values.
    return [rows](const std::string& message) -> absl::Status {
      inference::ModelInferResponse response;
      if (!response.ParseFromString(message)) {
        return absl::InvalidArgumentError("not a ModelInferResponse");
      }
      if (response.outputs_size() == 0) return absl::InvalidArgumentError("no outputs");
      for (const auto& output : response.outputs()) {
        absl::StatusOr<protocol::oip::Tensor> tensor =
            protocol::oip::DecodeTensor(response, output.name());
        if (!tensor.ok()) return tensor.status();
        if (tensor->shape.empty() || tensor->shape.front() != static_cast<int64_t>(rows)) {
          return absl::InvalidArgumentError(
              absl::StrCat("output ", output.name(), " does not have the request's rows"));
        }
        if (tensor->type == handlers::DataType::kFp32) {
          for (size_t at = 0; at + sizeof(float) <= tensor->data.size(); at += sizeof(float)) {
            float value;
            std::memcpy(&value, tensor->data.data() + at, sizeof(value));
            if (!std::isfinite(value)) return absl::InvalidArgumentError("non-finite output");
          }
        }
      }
      return absl::OkStatus();
    };
  }
  if (config.oip) {
    return [rows](const std::string& message) -> absl::Status {
      inference::ModelInferResponse response;
      if (!response.ParseFromString(message)) {
        return absl::InvalidArgumentError("not a ModelInferResponse");
      }
      if (rows == 0) return absl::OkStatus();  // a --payload file's: any outputs
      absl::StatusOr<protocol::oip::Fp32Tensor> y = protocol::oip::DecodeOutput(response);
      if (!y.ok()) return y.status();
      if (y->shape != std::vector<int64_t>{static_cast<int64_t>(rows), 1}) {
        return absl::InvalidArgumentError("expected y of shape [rows, 1]");
      }
      for (const float value : y->values) {
        if (!std::isfinite(value)) return absl::InvalidArgumentError("non-finite prediction");
      }
      return absl::OkStatus();
    };
  }
  return [rows](const std::string& message) -> absl::Status {
    outCalc reply;
    if (!reply.ParseFromString(message)) return absl::InvalidArgumentError("not an outCalc");
    absl::StatusOr<protocol::Columns> columns = protocol::DecodeResponse(reply.response_bytes());
    if (!columns.ok()) return columns.status();
    if (rows == 0) return absl::OkStatus();
    if (columns->size() != 1 || columns->front().first != "y_1" ||
        columns->front().second.size() != rows) {
      return absl::InvalidArgumentError("expected y_1 with one value per row");
    }
    for (const double value : columns->front().second) {
      if (!std::isfinite(value)) return absl::InvalidArgumentError("non-finite prediction");
    }
    return absl::OkStatus();
  };
}

// A progress bar on a terminal; a plain line every 5 s otherwise.
ProgressCallback Progress(const std::string& label) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  struct State {
    std::chrono::steady_clock::time_point last_time = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_print = last_time;
    int64_t last_completed = 0;
    double rate = 0;
  };
  auto state = std::make_shared<State>();
  return [tty, label, state](double fraction, int64_t completed) {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - state->last_time).count();
    state->rate = (completed - state->last_completed) / seconds;
    state->last_time = now;
    state->last_completed = completed;
    if (tty) {
      const int filled = static_cast<int>(fraction * 30);
      std::fprintf(stderr, "\r%-10s [%s%s] %3.0f%% %10.0f req/s", label.c_str(),
                   std::string(filled, '#').c_str(), std::string(30 - filled, '.').c_str(),
                   fraction * 100, state->rate);
      if (fraction >= 1.0) std::fprintf(stderr, "\n");
    } else if (now - state->last_print >= std::chrono::seconds(5)) {
      state->last_print = now;
      std::fprintf(stderr, "%s: %.0f%% done, %.0f req/s\n", label.c_str(), fraction * 100,
                   state->rate);
    }
  };
}

int Main(int argc, char** argv) {
  Config config = ParseFlags(argc, argv);
  int64_t rows_per_request = config.rows;
  if (config.payload_file.empty()) {
    config.load.payloads = BuiltInPayloads(config);
  } else {
    std::ifstream file(config.payload_file, std::ios::binary);
    std::stringstream bytes;
    bytes << file.rdbuf();
    if (!file) {
      std::cerr << "model_bench: cannot read " << config.payload_file << std::endl;
      return 2;
    }
    if (config.oip) {
      inference::ModelInferRequest request;
      if (!request.ParseFromString(bytes.str()) || request.inputs_size() == 0 ||
          request.inputs(0).shape_size() == 0) {
        std::cerr << "model_bench: " << config.payload_file
                  << " is not a serialized ModelInferRequest with inputs" << std::endl;
        return 2;
      }
      config.load.payloads.push_back(bytes.str());
      rows_per_request = request.inputs(0).shape(0);
    } else {
      inRequest request;
      request.set_inp_dict_bytes(bytes.str());
      config.load.payloads.push_back(request.SerializeAsString());
      rows_per_request = protocol::RequestRows(bytes.str()).value_or(0);
    }
  }
  if (config.oip) config.load.method = kModelInferMethod;
  if (config.check) config.load.check = ResponseCheck(config);
  config.load.threads = config.threads;
  if (!config.grpc_body_path.empty()) {
    // gRPC's message framing: no compression, then the message's length, big-endian.
    const std::string& message = config.load.payloads.front();
    const uint32_t length = static_cast<uint32_t>(message.size());
    const char prefix[5] = {0, static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                            static_cast<char>(length >> 8), static_cast<char>(length)};
    std::ofstream body(config.grpc_body_path, std::ios::binary);
    body.write(prefix, sizeof(prefix)).write(message.data(), message.size());
    if (!body) {
      std::cerr << "model_bench: cannot write " << config.grpc_body_path << std::endl;
      return 2;
    }
    return 0;
  }

  for (const std::string& target : config.targets) {
    for (int i = 0; i < config.connections; ++i) {
      client::ChannelOptions channel_options;
      channel_options.seed_retry_policy = false;  // count failures instead of retrying them
      channel_options.connection_index = i;
      config.load.channels.push_back(client::MakeChannel(target, channel_options));
    }
    if (config.wait_for_health) {
      const absl::Status serving = client::WaitForServing(client::MakeChannel(target));
      if (!serving.ok()) {
        std::cerr << "model_bench: " << target << " is not serving: " << serving << std::endl;
        return 1;
      }
    }
  }

  std::vector<Step> steps;
  for (const int concurrency : config.concurrencies) {
    steps.emplace_back().concurrency = concurrency;
  }
  for (const double rate : config.rates) steps.emplace_back().rate = rate;
  for (Step& step : steps) {
    LoadOptions load = config.load;
    load.concurrency = step.concurrency;
    load.rate = step.rate;
    step.rows_per_request = rows_per_request;
    const auto scrape = [&config]() -> std::optional<ServerCounters> {
      if (config.metrics_addresses.empty()) return std::nullopt;
      absl::StatusOr<ServerCounters> counters = ScrapeServers(config.metrics_addresses);
      if (!counters.ok()) {
        std::cerr << "model_bench: " << counters.status().message() << std::endl;
        return std::nullopt;
      }
      return *counters;
    };
    const std::optional<ServerCounters> before = scrape();
    step.result = RunLoad(load, Progress(step.Label()));
    const std::optional<ServerCounters> after = scrape();
    if (before && after) step.server = Between(*before, *after);
  }
  PrintTable(steps, std::cout);
  if (config.load.burst_on.count() > 0) PrintPhases(steps, std::cout);

  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  config.settings.emplace_back("date", date);
  config.settings.emplace_back("client threads", std::to_string(config.threads));
  config.settings.emplace_back("rows per request", std::to_string(rows_per_request));
  int exit_code = 0;
  const auto write = [&exit_code](const absl::Status& written) {
    if (written.ok()) return;
    std::cerr << "model_bench: " << written.message() << std::endl;
    exit_code = 1;
  };
  if (!config.json_path.empty()) write(WriteJson(config.settings, steps, config.json_path));
  if (!config.csv_path.empty()) write(WriteCsv(steps, config.csv_path));
  if (!config.report_path.empty()) write(WriteHtml(config.settings, steps, config.report_path));
  return exit_code;
}

}  // namespace
}  // namespace model_server::bench

int main(int argc, char** argv) { return model_server::bench::Main(argc, argv); }

// model_server: serves TorchScript models over the seed's gRPC ModelService and the Open
// Inference Protocol with dynamic micro-batching. See README.md for flags and payloads.

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <cxxopts.hpp>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "handlers/torch/torch_handler.h"
#include "platform/cpus.h"
#include "platform/limits.h"
#include "platform/memory.h"
#include "server/model_server.h"

namespace model_server {
namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// The seed's PROCESSOR=cpu|gpu, as a --device value.
std::string DefaultDevice() {
  const std::string processor = EnvOr("PROCESSOR", "");
  if (processor == "gpu") return "cuda";
  if (processor == "cpu") return "cpu";
  return "auto";
}

// One --model: NAME=PATH, or PATH (named "default"); an empty path is the built-in demo model.
struct ModelFlag {
  std::string name = server::kDefaultModelName;
  std::string path;
};

// "NAME=PATH" when the text before the first '=' is a model name (letters, digits, '_', '-',
// '.'), else a path. Write ./a=b.pt for a file named "a=b.pt" in the working directory.
ModelFlag ParseModelFlag(const std::string& value) {
  const size_t equals = value.find('=');
  if (equals != std::string::npos && equals > 0) {
    const std::string name = value.substr(0, equals);
    const bool is_name = std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
    if (is_name) return {name, value.substr(equals + 1)};
  }
  return {server::kDefaultModelName, value};
}
std::string Ms(std::chrono::milliseconds duration) { return std::to_string(duration.count()); }

// The exit code after a failed self-check: new connections were no longer accepted, so the
// orchestrator should restart the server (docs/SECURITY.md).
constexpr int kExitUnreachable = 3;

// What the self-check's failure writes into the signal pipe (no signal is numbered 0).
constexpr char kSelfCheckFailed = 0;

struct Config {
  server::ServerOptions server;
  platform::MemoryTrimOptions memory_trim;
  handlers::TorchHandlerOptions handler;
  std::vector<ModelFlag> models;
  int instances = 1;
  std::string export_demo_model;
  std::string log_level;
};

// Parses the command line; exits on --help or a usage error.
Config ParseFlags(int argc, char** argv) {
  cxxopts::Options options(
      "model_server", "Serves a TorchScript model over gRPC ModelService with dynamic batching");
  const Config defaults;
  // clang-format off
  options.add_options()
    ("model", "a TorchScript model to serve, NAME=PATH or PATH (named \"default\"); repeat for "
     "several models (the first answers ModelService); none: $MODEL_LOC, else the built-in "
     "demo model", cxxopts::value<std::string>())
    ("address", "host:port to listen on (env PORT_INTERNAL sets the port)",
     cxxopts::value<std::string>()->default_value("0.0.0.0:" + EnvOr("PORT_INTERNAL", "13000")))
    ("device", "cpu, cuda, cuda:N or auto (env PROCESSOR=cpu|gpu)",
     cxxopts::value<std::string>()->default_value(DefaultDevice()))
    ("max-batch-rows", "rows at which a batch closes",
     cxxopts::value<size_t>()->default_value(std::to_string(defaults.server.batching.max_batch_rows)))
    ("max-queue-delay-us", "longest a request waits for more rows to batch with; 0 = never wait",
     cxxopts::value<int64_t>()->default_value("0"))
    ("max-queue-rows", "rows queued at most; beyond it requests get RESOURCE_EXHAUSTED",
     cxxopts::value<size_t>()->default_value(std::to_string(defaults.server.batching.max_queue_rows)))
    ("cq-threads", "completion-queue threads; 0 = CPUs this process may use",
     cxxopts::value<int>()->default_value("0"))
    ("codec-threads", "threads that decode requests and encode replies; 0 = CPUs this process "
     "may use (where that is one: one thread for the replies, decode on the completion-queue "
     "thread); -1 = none (decode on completion-queue threads, encode on batch threads)",
     cxxopts::value<int>()->default_value(std::to_string(defaults.server.codec_threads)))
    ("instances", "model instances, each with its own batch thread (and CUDA stream)",
     cxxopts::value<int>()->default_value("1"))
    ("precision", "fp32, fp16 or bf16: what the model computes in (the wire stays float32)",
     cxxopts::value<std::string>()->default_value(defaults.handler.precision))
    ("torch-threads", "torch intra-op threads; 0 = libtorch's default",
     cxxopts::value<int>()->default_value(std::to_string(defaults.handler.torch_threads)))
    ("max-rows-per-request", "rows one request may carry",
     cxxopts::value<int64_t>()->default_value(std::to_string(defaults.server.max_rows_per_request)))
    ("max-concurrent-streams", "concurrent calls per client connection",
     cxxopts::value<int>()->default_value(std::to_string(defaults.server.max_concurrent_streams)))
    ("grpc-memory-bytes", "memory gRPC may use for buffers and calls (resource quota)",
     cxxopts::value<size_t>()->default_value(std::to_string(defaults.server.grpc_memory_bytes)))
    ("tls-cert", "PEM certificate chain: serve TLS", cxxopts::value<std::string>()->default_value(""))
    ("tls-key", "PEM private key of --tls-cert", cxxopts::value<std::string>()->default_value(""))
    ("tls-client-ca", "PEM CA bundle: require client certificates signed by it (mTLS)",
     cxxopts::value<std::string>()->default_value(""))
    ("metrics-address", "host:port of the Prometheus endpoint GET /metrics; empty: none",
     cxxopts::value<std::string>()->default_value("0.0.0.0:8002"))
    ("max-message-bytes", "largest request or response message",
     cxxopts::value<int>()->default_value(std::to_string(defaults.server.max_message_bytes)))
    ("model-poll-seconds", "check the models' files this often and swap in a new version when "
     "one changes; 0: never (SIGHUP still reloads them)",
     cxxopts::value<double>()->default_value("0"))
    ("drain-grace", "seconds to keep serving after SIGTERM/SIGINT with health NOT_SERVING, "
     "before refusing calls (env DRAIN_GRACE_S)",
     cxxopts::value<int>()->default_value(EnvOr("DRAIN_GRACE_S", "0")))
    ("drain-timeout", "seconds accepted calls may take to finish after the grace period",
     cxxopts::value<int>()->default_value("30"))
    ("max-connection-idle-ms", "close connections without a call for this long; 0 = never",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.max_idle)))
    ("max-connection-age-ms", "send connections this old a GOAWAY (clients reconnect); 0 = never",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.max_age)))
    ("max-connection-age-grace-ms", "then give their calls this long before closing; 0 = forever",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.max_age_grace)))
    ("handshake-timeout-ms", "a new connection's TCP/TLS/HTTP/2 handshake deadline; 0 = gRPC's 120 s",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.handshake_timeout)))
    ("keepalive-time-ms", "ping connections quiet this long; 0 = gRPC's 2 h",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.keepalive_time)))
    ("keepalive-timeout-ms", "close a connection whose ping is not answered within this; 0 = gRPC's 20 s",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.keepalive_timeout)))
    ("min-ping-interval-ms", "client pings closer together are strikes; 0 = gRPC's 5 min",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.connections.min_ping_interval)))
    ("max-ping-strikes", "strikes after which a connection gets GOAWAY; 0 = unlimited",
     cxxopts::value<int>()->default_value(std::to_string(defaults.server.connections.max_ping_strikes)))
    ("self-check-interval-ms", "open a new connection to the serving port this often and call health; 0 = off",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.server.self_check.interval)))
    ("self-check-failures", "failed self-checks in a row after which the server drains and exits 3",
     cxxopts::value<int>()->default_value(std::to_string(defaults.server.self_check.max_failures)))
    ("memory-trim-interval-ms", "return freed heap memory to the kernel after bursts, looking this often; 0 = never",
     cxxopts::value<int64_t>()->default_value(Ms(defaults.memory_trim.interval)))
    ("demo-hidden", "hidden layer width of the built-in demo model",
     cxxopts::value<int64_t>()->default_value(std::to_string(defaults.handler.demo_hidden)))
    ("log-level", "trace, debug, info, warn, error or off",
     cxxopts::value<std::string>()->default_value("info"))
    ("export-demo-model", "write the demo model as a TorchScript file to PATH and exit",
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
    config.server.address = flags["address"].as<std::string>();
    config.server.cq_threads = flags["cq-threads"].as<int>();
    config.server.codec_threads = flags["codec-threads"].as<int>();
    config.server.max_message_bytes = flags["max-message-bytes"].as<int>();
    config.server.metrics_address = flags["metrics-address"].as<std::string>();
    config.server.max_rows_per_request = flags["max-rows-per-request"].as<int64_t>();
    config.server.max_concurrent_streams = flags["max-concurrent-streams"].as<int>();
    config.server.grpc_memory_bytes = flags["grpc-memory-bytes"].as<size_t>();
    config.server.tls.cert_file = flags["tls-cert"].as<std::string>();
    config.server.tls.key_file = flags["tls-key"].as<std::string>();
    config.server.tls.client_ca_file = flags["tls-client-ca"].as<std::string>();
    const int drain_grace = flags["drain-grace"].as<int>();
    if (drain_grace < 0) throw cxxopts::exceptions::exception("--drain-grace must be >= 0");
    config.server.drain_grace = std::chrono::seconds(drain_grace);
    config.server.drain_timeout = std::chrono::seconds(flags["drain-timeout"].as<int>());
    const double poll_seconds = flags["model-poll-seconds"].as<double>();
    if (!(poll_seconds >= 0))
      throw cxxopts::exceptions::exception("--model-poll-seconds must be >= 0");
    config.server.model_poll_interval =
        std::chrono::milliseconds(std::llround(poll_seconds * 1000));
    server::ConnectionOptions& connections = config.server.connections;
    const auto ms = [&flags](const char* name) {
      return std::chrono::milliseconds(flags[name].as<int64_t>());
    };
    connections.max_idle = ms("max-connection-idle-ms");
    connections.max_age = ms("max-connection-age-ms");
    connections.max_age_grace = ms("max-connection-age-grace-ms");
    connections.handshake_timeout = ms("handshake-timeout-ms");
    connections.keepalive_time = ms("keepalive-time-ms");
    connections.keepalive_timeout = ms("keepalive-timeout-ms");
    connections.min_ping_interval = ms("min-ping-interval-ms");
    connections.max_ping_strikes = flags["max-ping-strikes"].as<int>();
    config.server.self_check.interval = ms("self-check-interval-ms");
    config.server.self_check.max_failures = flags["self-check-failures"].as<int>();
    config.memory_trim.interval = ms("memory-trim-interval-ms");
    config.server.batching.max_batch_rows = flags["max-batch-rows"].as<size_t>();
    config.server.batching.max_queue_delay =
        std::chrono::microseconds(flags["max-queue-delay-us"].as<int64_t>());
    config.server.batching.max_queue_rows = flags["max-queue-rows"].as<size_t>();
    for (const cxxopts::KeyValue& argument : flags.arguments()) {
      if (argument.key() == "model") config.models.push_back(ParseModelFlag(argument.value()));
    }
    if (config.models.empty())
      config.models.push_back({server::kDefaultModelName, EnvOr("MODEL_LOC", "")});
    for (size_t i = 0; i < config.models.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (config.models[i].name == config.models[j].name) {
          throw cxxopts::exceptions::exception("model name \"" + config.models[i].name +
                                               "\" is given twice");
        }
      }
    }
    config.handler.device = flags["device"].as<std::string>();
    config.handler.torch_threads = flags["torch-threads"].as<int>();
    config.handler.precision = flags["precision"].as<std::string>();
    config.instances = flags["instances"].as<int>();
    if (config.instances < 1) throw cxxopts::exceptions::exception("--instances must be >= 1");
    config.handler.demo_hidden = flags["demo-hidden"].as<int64_t>();
    config.handler.max_batch_rows = static_cast<int64_t>(config.server.batching.max_batch_rows);
    config.export_demo_model = flags["export-demo-model"].as<std::string>();
    config.log_level = flags["log-level"].as<std::string>();
    return config;
  } catch (const cxxopts::exceptions::exception& error) {
    std::cerr << "model_server: " << error.what() << "\n\n" << options.help() << std::endl;
    std::exit(2);
  }
}

// `count` instances of the model `handler` describes, each loaded and warmed up.
absl::StatusOr<std::vector<std::unique_ptr<handlers::LoadedModel>>> LoadInstances(
    const handlers::TorchHandlerOptions& handler, int count) {
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> loaded =
        handlers::LoadedModel::Load(handlers::MakeTorchHandler(handler));
    if (!loaded.ok()) return loaded.status();
    instances.push_back(*std::move(loaded));
  }
  return instances;
}

// A log-friendly list of the models: "a=/models/a.pt,b=demo".
std::string ModelList(const std::vector<ModelFlag>& models) {
  std::string list;
  for (const ModelFlag& model : models) {
    if (!list.empty()) list += ',';
    list += model.name + "=" + (model.path.empty() ? "demo" : model.path);
  }
  return list;
}

// The write end of a pipe the signal handler writes each SIGINT/SIGTERM/SIGHUP to. A handler
// (rather than a blocked mask and sigwait) works whichever thread the kernel picks, including
// threads that libraries such as OpenBLAS start before main.
int signal_pipe_write = -1;

void OnShutdownSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] const ssize_t written = write(signal_pipe_write, &byte, 1);
}

// Returns the read end of the pipe that receives SIGINT, SIGTERM and SIGHUP.
int InstallShutdownSignals() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    spdlog::error("cannot create the signal pipe: {}", strerror(errno));
    std::exit(1);
  }
  signal_pipe_write = fds[1];
  struct sigaction action = {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);
  return fds[0];
}

int NextSignal(int signal_pipe) {
  char byte = 0;
  while (read(signal_pipe, &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

// The next SIGINT or SIGTERM; each SIGHUP before it asks `running` (when given) to swap in new
// versions of its models' files.
int NextShutdownSignal(int signal_pipe, server::ModelServer* running) {
  int signal_number;
  while ((signal_number = NextSignal(signal_pipe)) == SIGHUP) {
    if (running == nullptr) continue;
    spdlog::info("received SIGHUP: reloading the models' files");
    running->ReloadModels();
  }
  return signal_number;
}

// Serves until SIGINT/SIGTERM or a failed self-check, then drains; a second signal exits at
// once. SIGHUP reloads models. Returns the exit code: 0 after a signal, kExitUnreachable after a
// failed self-check.
int ServeUntilSignalled(server::ModelServer& running, int signal_pipe) {
  const int signal_number = NextShutdownSignal(signal_pipe, &running);
  if (signal_number == kSelfCheckFailed) {
    spdlog::error(
        "draining, then exiting with code {} so that the orchestrator restarts the server",
        kExitUnreachable);
  } else {
    spdlog::info("received {}: draining (health NOT_SERVING)", strsignal(signal_number));
  }
  std::thread([signal_pipe] {
    const int second = NextShutdownSignal(signal_pipe, nullptr);  // no swap while draining
    spdlog::warn("received {} again: exiting without draining", strsignal(second));
    std::_Exit(1);
  }).detach();
  running.Shutdown();
  return signal_number == kSelfCheckFailed ? kExitUnreachable : 0;
}

int Main(int argc, char** argv) {
  const Config config = ParseFlags(argc, argv);
  const std::optional<spdlog::level::level_enum> level = [&]() {
    const spdlog::level::level_enum parsed = spdlog::level::from_str(config.log_level);
    const bool valid = parsed != spdlog::level::off || config.log_level == "off";
    return valid ? std::optional(parsed) : std::nullopt;
  }();
  if (!level) {
    std::cerr << "model_server: unknown --log-level " << config.log_level << std::endl;
    return 2;
  }
  spdlog::set_level(*level);

  if (!config.export_demo_model.empty()) {
    const absl::Status exported =
        handlers::ExportDemoModel(config.export_demo_model, config.handler.demo_hidden);
    if (!exported.ok()) {
      spdlog::error("{}", std::string(exported.message()));
      return 1;
    }
    spdlog::info("wrote the demo model to {}", config.export_demo_model);
    return 0;
  }

  if (absl::StatusOr<platform::OpenFileLimit> files = platform::RaiseOpenFileLimit(); !files.ok()) {
    spdlog::warn("cannot raise the open files limit: {}", std::string(files.status().message()));
  } else if (files->soft_after != files->soft_before) {
    spdlog::info("open files limit raised from {} to {} (the hard limit)", files->soft_before,
                 files->soft_after);
  } else {
    spdlog::info("open files limit {} (hard limit {})", files->soft_after, files->hard);
  }

  const int signal_pipe = InstallShutdownSignals();

  server::ServerOptions options = config.server;
  options.self_check.on_failure = [] {
    [[maybe_unused]] const ssize_t written = write(signal_pipe_write, &kSelfCheckFailed, 1);
  };
  const server::CodecPlan codec = server::PlanCodec(options);
  spdlog::info(
      "config: models={} device={} precision={} instances={} max_batch_rows={} "
      "max_queue_delay_us={} max_queue_rows={} max_rows_per_request={} cq_threads={} "
      "codec_threads={}{} "
      "torch_threads={} max_message_bytes={} max_concurrent_streams={} grpc_memory_bytes={} "
      "tls={} metrics_address={} drain_grace_s={} drain_timeout_s={} model_poll_s={}",
      ModelList(config.models), config.handler.device, config.handler.precision, config.instances,
      options.batching.max_batch_rows, options.batching.max_queue_delay.count(),
      options.batching.max_queue_rows, options.max_rows_per_request,
      options.cq_threads > 0 ? options.cq_threads : platform::UsableCpus(), codec.threads,
      codec.threads > 0 && !codec.decode_there ? " (replies only)" : "",
      config.handler.torch_threads, options.max_message_bytes, options.max_concurrent_streams,
      options.grpc_memory_bytes,
      options.tls.cert_file.empty()        ? "off"
      : options.tls.client_ca_file.empty() ? "on"
                                           : "mutual",
      options.metrics_address.empty() ? "none" : options.metrics_address,
      std::chrono::duration_cast<std::chrono::seconds>(options.drain_grace).count(),
      std::chrono::duration_cast<std::chrono::seconds>(options.drain_timeout).count(),
      options.model_poll_interval.count() / 1000.0);
  const server::ConnectionOptions& connections = options.connections;
  spdlog::info(
      "connections: max_idle_ms={} max_age_ms={} max_age_grace_ms={} handshake_timeout_ms={} "
      "keepalive_time_ms={} keepalive_timeout_ms={} min_ping_interval_ms={} max_ping_strikes={} "
      "self_check_interval_ms={} self_check_failures={} memory_trim_interval_ms={}",
      connections.max_idle.count(), connections.max_age.count(), connections.max_age_grace.count(),
      connections.handshake_timeout.count(), connections.keepalive_time.count(),
      connections.keepalive_timeout.count(), connections.min_ping_interval.count(),
      connections.max_ping_strikes, options.self_check.interval.count(),
      options.self_check.max_failures, config.memory_trim.interval.count());

  std::vector<server::ModelSpec> models;
  for (const ModelFlag& flag : config.models) {
    handlers::TorchHandlerOptions handler = config.handler;
    handler.model_path = flag.path;
    absl::StatusOr<std::vector<std::unique_ptr<handlers::LoadedModel>>> instances =
        LoadInstances(handler, config.instances);
    if (!instances.ok()) {
      spdlog::error("cannot start: model \"{}\" ({}): {}", flag.name,
                    flag.path.empty() ? "demo" : flag.path,
                    std::string(instances.status().message()));
      return 1;
    }
    server::ModelSource source;
    if (!flag.path.empty()) {  // the demo model has no file to reload
      source.path = flag.path;
      source.load = [handler, count = config.instances] { return LoadInstances(handler, count); };
    }
    models.push_back({flag.name, *std::move(instances), std::move(source), std::nullopt});
  }
  absl::StatusOr<std::unique_ptr<server::ModelServer>> started =
      server::ModelServer::Start(options, std::move(models));
  if (!started.ok()) {
    spdlog::error("cannot start: {}", std::string(started.status().message()));
    return 1;
  }
  spdlog::info("listening on port {} ({}); health SERVING", (*started)->port(), options.address);
  const platform::MemoryTrimmer trimmer(config.memory_trim);

  const int exit_code = ServeUntilSignalled(**started, signal_pipe);
  const server::metrics::ServerMetrics& metrics = (*started)->metrics();
  spdlog::info("stopped: {} requests in {} batches, {} forward passes", metrics.batched_requests(),
               metrics.batches(), metrics.forward_passes());
  return exit_code;
}

}  // namespace
}  // namespace model_server

int main(int argc, char** argv) { return model_server::Main(argc, argv); }

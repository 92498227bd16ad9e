#include "server/flags.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cxxopts.hpp>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model_names.h"

namespace model_server::server {
namespace {

// One flag: its name (without "--"), its help, the environment variable it falls back to (if
// any), and how it moves between its text and a Config.
struct Flag {
  std::string name;
  std::string help;
  // Read when the flag is not on the command line and the variable is set and not empty.
  std::string env;
  // The flag's value in a config: the default in --help, the value in the `config:` log line.
  std::function<std::string(const Config&)> show;
  // Sets the flag's value from its text, once per occurrence on the command line; an error's
  // message says what is wrong with the text (the caller names the flag).
  std::function<absl::Status(const std::string& text, Config&)> set;
  // Sets it from the environment variable's value; empty: as `set` does.
  std::function<absl::Status(const std::string& value, Config&)> set_from_env;
};

absl::Status Invalid(const std::string& why) { return absl::InvalidArgumentError(why); }

const char* ControlModeName(ControlMode mode) {
  switch (mode) {
    case ControlMode::kNone:
      return "none";
    case ControlMode::kPoll:
      return "poll";
    case ControlMode::kExplicit:
      return "explicit";
  }
  return "";
}

Flag Named(std::string name, std::string help, std::string env = "") {
  Flag flag;
  flag.name = std::move(name);
  flag.help = std::move(help);
  flag.env = std::move(env);
  return flag;
}

// A flag whose value is an integer in [min, max] (and in the field's type's range). `get` is a
// generic lambda returning a reference to the field, for a Config and a const Config alike.
template <typename Get>
Flag IntegerFlag(std::string name, std::string help, Get get, int64_t min,
                 int64_t max = std::numeric_limits<int64_t>::max()) {
  using T = std::decay_t<decltype(get(std::declval<Config&>()))>;
  static_assert(std::is_integral_v<T>);
  max = std::min<int64_t>(
      max, static_cast<int64_t>(std::min<uint64_t>(std::numeric_limits<T>::max(),
                                                   std::numeric_limits<int64_t>::max())));
  Flag flag = Named(std::move(name), std::move(help));
  flag.show = [get](const Config& config) { return std::to_string(get(config)); };
  flag.set = [get, min, max](const std::string& text, Config& config) -> absl::Status {
    int64_t value = 0;
    if (!absl::SimpleAtoi(text, &value)) return Invalid("not an integer");
    if (value < min) return Invalid(absl::StrCat("must be at least ", min));
    if (value > max) return Invalid(absl::StrCat("must be at most ", max));
    get(config) = static_cast<T>(value);
    return absl::OkStatus();
  };
  return flag;
}

// A flag whose value is a whole number (>= 0) of `Unit`s, for a std::chrono::duration field.
template <typename Unit, typename Get>
Flag DurationFlag(std::string name, std::string help, Get get) {
  using Field = std::decay_t<decltype(get(std::declval<Config&>()))>;
  const int64_t max = std::chrono::duration_cast<Unit>(Field::max()).count();
  Flag flag = Named(std::move(name), std::move(help));
  flag.show = [get](const Config& config) {
    return std::to_string(std::chrono::duration_cast<Unit>(get(config)).count());
  };
  flag.set = [get, max](const std::string& text, Config& config) -> absl::Status {
    int64_t value = 0;
    if (!absl::SimpleAtoi(text, &value)) return Invalid("not an integer");
    if (value < 0) return Invalid("must not be negative");
    if (value > max) return Invalid(absl::StrCat("must be at most ", max));
    get(config) = std::chrono::duration_cast<Field>(Unit(value));
    return absl::OkStatus();
  };
  return flag;
}

// A flag whose value is a number of seconds (>= 0, fractions allowed), for a milliseconds field.
template <typename Get>
Flag SecondsFlag(std::string name, std::string help, Get get) {
  Flag flag = Named(std::move(name), std::move(help));
  flag.show = [get](const Config& config) { return absl::StrCat(get(config).count() / 1000.0); };
  flag.set = [get](const std::string& text, Config& config) -> absl::Status {
    double seconds = 0;
    if (!absl::SimpleAtod(text, &seconds) || !std::isfinite(seconds)) {
      return Invalid("not a number of seconds");
    }
    if (seconds < 0) return Invalid("must not be negative");
    if (seconds > 1e9) return Invalid("must be at most 1e9");
    get(config) = std::chrono::milliseconds(std::llround(seconds * 1000));
    return absl::OkStatus();
  };
  return flag;
}

// A flag whose value is true or false, for a bool field.
template <typename Get>
Flag BoolFlag(std::string name, std::string help, Get get) {
  Flag flag = Named(std::move(name), std::move(help));
  flag.show = [get](const Config& config) { return get(config) ? "true" : "false"; };
  flag.set = [get](const std::string& text, Config& config) -> absl::Status {
    if (text != "true" && text != "false") return Invalid("must be true or false");
    get(config) = text == "true";
    return absl::OkStatus();
  };
  return flag;
}

// A flag whose value is text; `check` (when given) says what is wrong with it.
template <typename Get>
Flag StringFlag(std::string name, std::string help, Get get,
                std::function<absl::Status(const std::string&)> check = nullptr) {
  Flag flag = Named(std::move(name), std::move(help));
  flag.show = [get](const Config& config) { return get(config); };
  flag.set = [get, check](const std::string& text, Config& config) -> absl::Status {
    if (check) {
      if (absl::Status valid = check(text); !valid.ok()) return valid;
    }
    get(config) = text;
    return absl::OkStatus();
  };
  return flag;
}

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
  return {kDefaultModelName, value};
}

// Triton's --cache-config for the local cache: "local,size=BYTES", BYTES > 0; empty: no cache
// (0).
absl::StatusOr<size_t> ParseCacheConfig(const std::string& text) {
  if (text.empty()) return size_t{0};
  constexpr char kLocal[] = "local,";
  if (text.rfind(kLocal, 0) != 0) {
    return Invalid("must be local,size=BYTES (the local cache is the only one served)");
  }
  const std::string setting = text.substr(sizeof(kLocal) - 1);
  constexpr char kSize[] = "size=";
  if (setting.rfind(kSize, 0) != 0) {
    return Invalid(absl::StrCat("the local cache takes size=BYTES, not \"", setting, "\""));
  }
  const std::string number = setting.substr(sizeof(kSize) - 1);
  uint64_t bytes = 0;
  if (!absl::SimpleAtoi(number, &bytes) || bytes == 0 ||
      bytes > std::numeric_limits<size_t>::max()) {
    return Invalid(absl::StrCat("size \"", number, "\" is not a number of bytes above 0"));
  }
  return static_cast<size_t>(bytes);
}

// The flag table: --help lists the flags in this order.
const std::vector<Flag>& Flags() {
  static const std::vector<Flag>* const flags = [] {
    auto* table = new std::vector<Flag>;
    const auto add = [table](Flag flag) { table->push_back(std::move(flag)); };

    Flag model =
        Named("model",
              "a TorchScript model to serve, NAME=PATH or PATH (named \"default\"); repeat for "
              "several models (the first answers ModelService); none: the built-in demo model",
              "MODEL_LOC");
    model.show = [](const Config& config) {
      std::vector<std::string> models;
      for (const ModelFlag& flag : config.models) {
        models.push_back(flag.name + "=" + (flag.path.empty() ? "demo" : flag.path));
      }
      return absl::StrJoin(models, ",");
    };
    model.set = [](const std::string& text, Config& config) {
      config.models.push_back(ParseModelFlag(text));
      return absl::OkStatus();
    };
    model.set_from_env = [](const std::string& path, Config& config) {
      config.models.push_back({kDefaultModelName, path});  // a path, never NAME=PATH
      return absl::OkStatus();
    };
    add(std::move(model));

    add(StringFlag(
        "model-repository",
        "a Triton model repository (DIR/<model>/config.pbtxt, DIR/<model>/<version>/model.pt): "
        "serve its models instead of --model",
        [](auto& config) -> auto& { return config.model_repository; }));
    Flag mode = Named("model-control-mode",
                      "none: load every model at startup; poll: and follow the repository's "
                      "changes (--repository-poll-secs); explicit: load those --load-model names, "
                      "then as RepositoryModelLoad/Unload ask");
    mode.show = [](const Config& config) { return ControlModeName(config.server.models.mode); };
    mode.set = [](const std::string& text, Config& config) -> absl::Status {
      for (const ControlMode each :
           {ControlMode::kNone, ControlMode::kPoll, ControlMode::kExplicit}) {
        if (text == ControlModeName(each)) {
          config.server.models.mode = each;
          return absl::OkStatus();
        }
      }
      return Invalid("must be none, poll or explicit");
    };
    add(std::move(mode));
    Flag load_model = Named("load-model",
                            "explicit mode: a model to load at startup; repeat for several; * "
                            "loads every model");
    load_model.show = [](const Config& config) {
      return absl::StrJoin(config.server.models.startup_models, ",");
    };
    load_model.set = [](const std::string& text, Config& config) -> absl::Status {
      if (text.empty()) return Invalid("must name a model");
      config.server.models.startup_models.push_back(text);
      return absl::OkStatus();
    };
    add(std::move(load_model));
    add(SecondsFlag(
        "repository-poll-secs", "poll mode: look for changed models this often",
        [](auto& config) -> auto& { return config.server.models.poll_interval; }));
    Flag exit_on_error = Named("exit-on-error",
                               "true: a model that fails to load at startup stops the server; "
                               "false: it is left unavailable, its reason in RepositoryIndex");
    exit_on_error.show = [](const Config& config) {
      return config.server.models.exit_on_error ? std::string("true") : std::string("false");
    };
    exit_on_error.set = [](const std::string& text, Config& config) -> absl::Status {
      if (text != "true" && text != "false") return Invalid("must be true or false");
      config.server.models.exit_on_error = text == "true";
      return absl::OkStatus();
    };
    add(std::move(exit_on_error));
    add(StringFlag(
        "seed-model",
        "the model ModelService.EvaluateModel computes with; empty: the first --model, or the "
        "repository's model \"default\", else its first by name",
        [](auto& config) -> auto& { return config.server.seed_model; }));

    Flag address = StringFlag(
        "address", "host:port to listen on (the variable sets the port)",
        [](auto& config) -> auto& { return config.server.address; },
        [](const std::string& text) {
          return text.empty() ? Invalid("must not be empty") : absl::OkStatus();
        });
    address.env = "PORT_INTERNAL";
    address.set_from_env = [](const std::string& port, Config& config) -> absl::Status {
      int number = 0;
      if (!absl::SimpleAtoi(port, &number) || number < 0 || number > 65535) {
        return Invalid("not a port number (0 to 65535)");
      }
      const std::string& host_and_port = config.server.address;
      config.server.address = host_and_port.substr(0, host_and_port.rfind(':')) + ":" + port;
      return absl::OkStatus();
    };
    add(std::move(address));

    Flag device = StringFlag(
        "device", "cpu, cuda, cuda:N or auto (the variable: cpu or gpu)",
        [](auto& config) -> auto& { return config.handler.device; });
    device.env = "PROCESSOR";  // the seed's
    device.set_from_env = [](const std::string& processor, Config& config) -> absl::Status {
      if (processor == "cpu") {
        config.handler.device = "cpu";
      } else if (processor == "gpu") {
        config.handler.device = "cuda";
      } else {
        return Invalid("must be cpu or gpu");
      }
      return absl::OkStatus();
    };
    add(std::move(device));

    add(IntegerFlag(
        "max-batch-rows", "rows at which a batch closes",
        [](auto& config) -> auto& { return config.server.batching.max_batch_rows; }, 1));
    add(DurationFlag<std::chrono::microseconds>(
        "max-queue-delay-us", "longest a request waits for more rows to batch with; 0 = never wait",
        [](auto& config) -> auto& { return config.server.batching.max_queue_delay; }));
    add(DurationFlag<std::chrono::microseconds>(
        "idle-max-forward-us",
        "a call that arrives while the server is idle runs to completion on the thread that "
        "received it (no hand-off) when its model's forward pass is expected to take at most this "
        "long; 0 = never, every call is batched",
        [](auto& config) -> auto& { return config.server.max_idle_forward; }));
    add(IntegerFlag(
        "max-queue-rows", "rows queued at most; beyond it requests get RESOURCE_EXHAUSTED",
        [](auto& config) -> auto& { return config.server.batching.max_queue_rows; }, 1));
    Flag cache_config =
        Named("cache-config",
              "local,size=BYTES: a response cache of at most BYTES (Triton's form) for the "
              "models whose config sets response_cache { enable: true }; empty: none");
    cache_config.show = [](const Config& config) {
      const size_t bytes = config.server.response_cache_bytes;
      return bytes == 0 ? std::string() : absl::StrCat("local,size=", bytes);
    };
    cache_config.set = [](const std::string& text, Config& config) -> absl::Status {
      absl::StatusOr<size_t> bytes = ParseCacheConfig(text);
      if (!bytes.ok()) return bytes.status();
      config.server.response_cache_bytes = *bytes;
      return absl::OkStatus();
    };
    add(std::move(cache_config));
    add(IntegerFlag(
        "cq-threads", "completion-queue threads; 0 = CPUs this process may use",
        [](auto& config) -> auto& { return config.server.cq_threads; }, 0));
    add(IntegerFlag(
        "codec-threads",
        "threads that decode requests and encode replies; 0 = CPUs this process may use (where "
        "that is one: one thread for the replies, decode on the completion-queue thread); -1 = "
        "none (decode on completion-queue threads, encode on batch threads)",
        [](auto& config) -> auto& { return config.server.codec_threads; }, -1));
    add(IntegerFlag(
        "instances", "model instances, each with its own batch thread (and CUDA stream)",
        [](auto& config) -> auto& { return config.instances; }, 1));
    add(StringFlag(
        "precision",
        "fp32, tf32, fp16 or bf16: what the model computes in (the wire stays float32); tf32 "
        "lets a GPU's float32 matmuls and convolutions use TF32 tensor cores, process-wide",
        [](auto& config) -> auto& { return config.handler.precision; },
        [](const std::string& text) {
          return text == "fp32" || text == "tf32" || text == "fp16" || text == "bf16"
                     ? absl::OkStatus()
                     : Invalid("must be fp32, tf32, fp16 or bf16");
        }));
    add(BoolFlag(
        "cuda-graphs",
        "true: on a GPU, capture a CUDA graph per batch size bucket (powers of two up to "
        "--max-batch-rows) after warm-up and replay it, padding batches to their bucket",
        [](auto& config) -> auto& { return config.handler.cuda_graphs; }));
    add(IntegerFlag(
        "torch-threads", "torch intra-op threads; 0 = libtorch's default",
        [](auto& config) -> auto& { return config.handler.torch_threads; }, 0));
    add(IntegerFlag(
        "max-rows-per-request", "rows one request may carry",
        [](auto& config) -> auto& { return config.server.max_rows_per_request; }, 1));
    add(IntegerFlag(
        "max-concurrent-streams", "concurrent calls per client connection",
        [](auto& config) -> auto& { return config.server.max_concurrent_streams; }, 1));
    add(IntegerFlag(
        "grpc-memory-bytes", "memory gRPC may use for buffers and calls (resource quota)",
        [](auto& config) -> auto& { return config.server.grpc_memory_bytes; }, 1));
    add(StringFlag(
        "tls-cert", "PEM certificate chain: serve TLS",
        [](auto& config) -> auto& { return config.server.tls.cert_file; }));
    add(StringFlag(
        "tls-key", "PEM private key of --tls-cert",
        [](auto& config) -> auto& { return config.server.tls.key_file; }));
    add(StringFlag(
        "tls-client-ca", "PEM CA bundle: require client certificates signed by it (mTLS)",
        [](auto& config) -> auto& { return config.server.tls.client_ca_file; }));
    add(StringFlag(
        "metrics-address", "host:port of the Prometheus endpoint GET /metrics; empty: none",
        [](auto& config) -> auto& { return config.server.metrics_address; }));
    add(IntegerFlag(
        "max-message-bytes", "largest request or response message",
        [](auto& config) -> auto& { return config.server.max_message_bytes; }, 1));
    // The flag of the server before model repositories: poll mode at this interval.
    Flag model_poll = Named("model-poll-seconds",
                            "check the models' files this often and swap in a new version when "
                            "one changes (--model-control-mode poll); 0: never (SIGHUP still "
                            "reloads them)");
    model_poll.show = [](const Config& config) {
      const ManagerOptions& models = config.server.models;
      return models.mode == ControlMode::kPoll ? absl::StrCat(models.poll_interval.count() / 1000.0)
                                               : std::string("0");
    };
    model_poll.set = [](const std::string& text, Config& config) -> absl::Status {
      double seconds = 0;
      if (!absl::SimpleAtod(text, &seconds) || !std::isfinite(seconds)) {
        return Invalid("not a number of seconds");
      }
      if (seconds < 0) return Invalid("must not be negative");
      if (seconds > 1e9) return Invalid("must be at most 1e9");
      if (seconds > 0) {
        // Poll mode, unless a mode was asked for (--model-control-mode before this flag).
        if (config.server.models.mode == ControlMode::kNone) {
          config.server.models.mode = ControlMode::kPoll;
        }
        config.server.models.poll_interval =
            std::chrono::milliseconds(std::llround(seconds * 1000));
      }
      return absl::OkStatus();
    };
    add(std::move(model_poll));
    Flag drain_grace = DurationFlag<std::chrono::seconds>(
        "drain-grace",
        "seconds to keep serving after SIGTERM/SIGINT with health NOT_SERVING, before refusing "
        "calls",
        [](auto& config) -> auto& { return config.server.drain_grace; });
    drain_grace.env = "DRAIN_GRACE_S";
    add(std::move(drain_grace));
    add(DurationFlag<std::chrono::seconds>(
        "drain-timeout", "seconds accepted calls may take to finish after the grace period",
        [](auto& config) -> auto& { return config.server.drain_timeout; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "max-connection-idle-ms", "close connections without a call for this long; 0 = never",
        [](auto& config) -> auto& { return config.server.connections.max_idle; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "max-connection-age-ms",
        "send connections this old a GOAWAY (clients reconnect); 0 = never",
        [](auto& config) -> auto& { return config.server.connections.max_age; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "max-connection-age-grace-ms",
        "then give their calls this long before closing; 0 = forever",
        [](auto& config) -> auto& { return config.server.connections.max_age_grace; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "handshake-timeout-ms",
        "a new connection's TCP/TLS/HTTP/2 handshake deadline; 0 = gRPC's 120 s",
        [](auto& config) -> auto& { return config.server.connections.handshake_timeout; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "keepalive-time-ms", "ping connections quiet this long; 0 = gRPC's 2 h",
        [](auto& config) -> auto& { return config.server.connections.keepalive_time; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "keepalive-timeout-ms",
        "close a connection whose ping is not answered within this; 0 = gRPC's 20 s",
        [](auto& config) -> auto& { return config.server.connections.keepalive_timeout; }));
    add(DurationFlag<std::chrono::milliseconds>(
        "min-ping-interval-ms", "client pings closer together are strikes; 0 = gRPC's 5 min",
        [](auto& config) -> auto& { return config.server.connections.min_ping_interval; }));
    add(IntegerFlag(
        "max-ping-strikes", "strikes after which a connection gets GOAWAY; 0 = unlimited",
        [](auto& config) -> auto& { return config.server.connections.max_ping_strikes; }, 0));
    add(DurationFlag<std::chrono::milliseconds>(
        "self-check-interval-ms",
        "open a new connection to the serving port this often and call health; 0 = off",
        [](auto& config) -> auto& { return config.server.self_check.interval; }));
    add(IntegerFlag(
        "self-check-failures",
        "failed self-checks in a row after which the server drains and exits 3",
        [](auto& config) -> auto& { return config.server.self_check.max_failures; }, 1));
    add(DurationFlag<std::chrono::milliseconds>(
        "memory-trim-interval-ms",
        "return freed heap memory to the kernel after bursts, looking this often; 0 = never",
        [](auto& config) -> auto& { return config.memory_trim.interval; }));
    add(IntegerFlag(
        "demo-hidden", "hidden layer width of the built-in demo model",
        [](auto& config) -> auto& { return config.handler.demo_hidden; }, 1));
    add(StringFlag(
        "log-level", "trace, debug, info, warn, error or off",
        [](auto& config) -> auto& { return config.log_level; },
        [](const std::string& text) {
          const bool off = spdlog::level::from_str(text) == spdlog::level::off;
          return off && text != "off" ? Invalid("not a log level") : absl::OkStatus();
        }));
    add(StringFlag(
        "export-demo-model", "write the demo model as a TorchScript file to PATH and exit",
        [](auto& config) -> auto& { return config.export_demo_model; }));
    return table;
  }();
  return *flags;
}

// cxxopts tokenises the command line and formats --help; each flag's value stays text, which
// the table parses (so that every error names its flag).
cxxopts::Options MakeOptions() {
  cxxopts::Options options(
      "model_server",
      "Serves PyTorch models over the seed's gRPC ModelService and the Open Inference "
      "Protocol with dynamic batching");
  const Config defaults;
  cxxopts::OptionAdder adder = options.add_options();
  for (const Flag& flag : Flags()) {
    std::string help = flag.help;
    if (!flag.env.empty()) absl::StrAppend(&help, " (env ", flag.env, ")");
    auto value = cxxopts::value<std::string>();
    if (const std::string shown = flag.show(defaults); !shown.empty()) {
      value->default_value(shown);
    }
    adder(flag.name, help, value);
  }
  adder("h,help", "show this help");
  return options;
}

}  // namespace

std::optional<std::string> ProcessEnvironment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

absl::StatusOr<ParsedFlags> ParseFlags(int argc, const char* const* argv, const Environment& env) {
  cxxopts::Options options = MakeOptions();
  ParsedFlags parsed;
  try {
    const cxxopts::ParseResult result = options.parse(argc, argv);
    if (result.count("help") > 0) {
      parsed.help = true;
      return parsed;
    }
    if (!result.unmatched().empty()) {
      return Invalid("unexpected argument \"" + result.unmatched().front() + "\"");
    }
    Config& config = parsed.config;
    for (const Flag& flag : Flags()) {
      if (flag.env.empty() || result.count(flag.name) > 0) continue;
      const std::optional<std::string> value = env(flag.env);
      if (!value || value->empty()) continue;
      const auto& set = flag.set_from_env ? flag.set_from_env : flag.set;
      if (absl::Status set_status = set(*value, config); !set_status.ok()) {
        return Invalid(absl::StrCat(flag.env, "=", *value, " (for --", flag.name,
                                    "): ", set_status.message()));
      }
    }
    for (const cxxopts::KeyValue& argument : result.arguments()) {
      const auto flag = std::find_if(Flags().begin(), Flags().end(),
                                     [&](const Flag& f) { return f.name == argument.key(); });
      if (flag == Flags().end()) continue;  // --help
      if (absl::Status set = flag->set(argument.value(), config); !set.ok()) {
        return Invalid(absl::StrCat("--", flag->name, "=", argument.value(), ": ", set.message()));
      }
    }
    if (!config.model_repository.empty()) {
      if (result.count("model") > 0) {
        return Invalid(
            "--model and --model-repository cannot be combined: put the model into "
            "the repository (DIR/<name>/1/model.pt)");
      }
      config.models.clear();  // MODEL_LOC, the default for --model, gives way to the repository
    } else if (config.models.empty()) {
      config.models.push_back({});  // the demo model
    }
    if (!config.server.models.startup_models.empty() &&
        config.server.models.mode != ControlMode::kExplicit) {
      return Invalid("--load-model needs --model-control-mode explicit");
    }

    std::vector<std::string> names;
    for (const ModelFlag& model : config.models) names.push_back(model.name);
    if (absl::Status distinct = CheckDistinctModelNames(names); !distinct.ok()) {
      return Invalid(absl::StrCat("--model: ", distinct.message()));
    }
    // Warm-up runs batch sizes up to the batcher's largest.
    config.handler.max_batch_rows = static_cast<int64_t>(config.server.batching.max_batch_rows);
    return parsed;
  } catch (const cxxopts::exceptions::exception& error) {
    return Invalid(error.what());
  }
}

std::string FlagsHelp() { return MakeOptions().help(); }

std::string DescribeConfig(const Config& config) {
  std::vector<std::string> pairs;
  for (const Flag& flag : Flags()) pairs.push_back(flag.name + "=" + flag.show(config));
  return absl::StrJoin(pairs, " ");
}

}  // namespace model_server::server
